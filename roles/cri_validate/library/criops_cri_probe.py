#!/usr/bin/python
"""Ask a CRI endpoint what it is and whether it is ready, in one module call: it only reads."""

from __future__ import annotations

import json
import os
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.criops_cri import Crictl, handler_configs, last_line, run

DOCUMENTATION = r"""
module: criops_cri_probe
short_description: The CRI probe of cri_validate (crictl version and info) in one call
description:
  - >-
    Runs C(crictl version) and C(crictl info) against O(endpoint) and returns what
    C(probe.json) records. An endpoint that does not answer the API asked for is a result
    (O(probe.reachable), O(probe.error)), not a failure: the caller writes the report first.
  - With O(containerd_config), also finds the binary C(containerd.service) runs and
    returns C(<binary> --config <containerd_config> config dump), the node's config as
    containerd merges it, for cri_validate's throwaway containerd.
options:
  crictl:
    description: crictl of the endpoint's CRI API (name on PATH or path).
    type: str
    required: true
  endpoint:
    description: The CRI endpoint, unix:///path.
    type: str
    required: true
  cri_api:
    description: The CRI API asked for; an error naming C(runtime.<cri_api>.) means the endpoint speaks another.
    type: str
    choices: [v1, v1alpha2]
    default: v1
  containerd_config:
    description: Optional. The node's containerd config to dump; unset, nothing about containerd is read.
    type: path
"""

RETURN = r"""
probe:
  description: >-
    reachable, criV1, runtime (name, version, criApiVersion); then conditions (type to
    bool) and handlers (containerd's runtime handlers) when it answered, error when not.
  type: dict
  returned: always
runtimes:
  description: containerd's runtime handler configs from C(crictl info) (empty for other runtimes).
  type: dict
  returned: always
containerd:
  description: With O(containerd_config) on a containerd endpoint, binary and config_dump, or error.
  type: dict
  returned: when asked
"""

_VERSION_FIELDS = {"name": "RuntimeName", "version": "RuntimeVersion", "criApiVersion": "RuntimeApiVersion"}


def parse_version(text):
    """crictl version's `Key:  value` lines as the runtime record."""
    found = {}
    for key, field in _VERSION_FIELDS.items():
        match = re.search(field + r":\s*(\S+)", text)
        found[key] = match.group(1) if match else ""
    return found


def probe_record(cri_api, version, info):
    """probe.json of an endpoint that answered `crictl version` (text) and `info` (decoded JSON)."""
    conditions = {c.get("type"): bool(c.get("status")) for c in (info.get("status") or {}).get("conditions") or []}
    runtimes = handler_configs(info)
    record = {
        "reachable": True,
        "criV1": cri_api == "v1",
        "runtime": parse_version(version),
        "conditions": conditions,
        "handlers": list(runtimes),
    }
    return record, runtimes


def unanswered_record(cri_api, stderr):
    """probe.json of an endpoint whose `crictl version` failed."""
    error = (stderr or "").strip()
    return {
        "reachable": f"unknown service runtime.{cri_api}." in error,
        "criV1": False,
        "runtime": {},
        "error": error,
    }


def containerd_dump(module, config):
    """The binary containerd.service runs (not whichever is first on PATH) and its merged config."""
    rc, out, err = run(module, ["systemctl", "show", "--property", "MainPID", "--value", "containerd.service"])
    pid = out.strip()
    if rc != 0 or pid in ("", "0"):
        return {"error": f"containerd.service runs no process ({last_line(err, out) or 'MainPID ' + (pid or 'empty')})"}
    try:
        binary = os.readlink(f"/proc/{pid}/exe")
    except OSError as error:
        return {"error": f"cannot read the binary of containerd.service (pid {pid}): {error.strerror}"}
    rc, out, err = run(module, [binary, "--config", config, "config", "dump"])
    if rc != 0:
        return {"error": f"{binary} config dump: {last_line(err, out) or f'exited {rc}'}"}
    return {"binary": binary, "config_dump": out}


def main():
    module = AnsibleModule(
        argument_spec={
            "crictl": {"type": "str", "required": True},
            "endpoint": {"type": "str", "required": True},
            "cri_api": {"type": "str", "choices": ["v1", "v1alpha2"], "default": "v1"},
            "containerd_config": {"type": "path"},
        },
        supports_check_mode=True,
    )
    params = module.params
    crictl = Crictl(module, params["crictl"], params["endpoint"])
    rc, version, err = crictl.run("version")
    if rc != 0:
        module.exit_json(changed=False, probe=unanswered_record(params["cri_api"], err), runtimes={})
    rc, out, err = crictl.run("info", "--output", "json")
    if rc != 0:
        module.fail_json(msg=f"{params['endpoint']} answered its version but not its status: {last_line(err, out)}")
    try:
        info = json.loads(out)
    except ValueError:
        module.fail_json(msg=f"{params['endpoint']} reported a status that is not JSON: {out[:200]}")
    record, runtimes = probe_record(params["cri_api"], version, info)
    result = {"changed": False, "probe": record, "runtimes": runtimes}
    if params["containerd_config"] and record["runtime"]["name"] == "containerd":
        result["containerd"] = containerd_dump(module, params["containerd_config"])
    module.exit_json(**result)


if __name__ == "__main__":
    main()
