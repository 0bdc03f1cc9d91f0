#!/usr/bin/python
"""cri_validate's smoke pods, one per runtime handler, in one module call."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.criops_cri import Crictl, StepFailed, handler_configs, last_line, remove_pod, run

DOCUMENTATION = r"""
module: criops_smoke_pods
short_description: A smoke pod per runtime handler, proven and removed, in one call
description:
  - First each handler's own checks (O(handler_checks)), then the image is pulled once;
    then per handler, side by side, a pod with one web-server container is run through
    it, asked for C(/) over the pod network, its log read, and the pod removed whatever
    happened (the container before its pod, as a kubelet does).
  - >-
    A failure names its step and handler, with the command's last line, such as
    C(Run the pod sandbox (crun): ...); the first failed handler in O(handlers) order
    fails the call. Scratch files live in a temporary directory removed at the end.
options:
  crictl:
    description: crictl of the endpoint's CRI API.
    type: str
    required: true
  endpoint:
    description: The CRI endpoint the pods run on, unix:///path.
    type: str
    required: true
  v1alpha2:
    description: The endpoint speaks CRI v1alpha2 (crictl v1.13, whose rmp has no --force).
    type: bool
    default: false
  handlers:
    description: Runtime handlers; an empty string is the runtime's default handler.
    type: list
    elements: str
    required: true
  handler_checks:
    description: Per handler, argv lists that must succeed before its pod.
    type: dict
    default: {}
  image:
    description: Image of the web-server container.
    type: str
    required: true
  port:
    description: Port it serves HTTP on.
    type: int
    default: 80
  expected_body:
    description: Text the HTTP answer must contain.
    type: str
    required: true
  expected_log:
    description: Text the container log must contain after the request.
    type: str
    required: true
  http_tries:
    description: How many times to ask for C(/), a second apart, before giving up.
    type: int
    default: 11
"""

RETURN = r"""
smoke:
  description: >-
    Per handler that passed, in O(handlers) order, what smoke.json records: handler ("default"
    for the default handler), image, podIP, httpStatus, httpBody, log.
  type: list
  elements: dict
  returned: always
"""


def label(handler):
    return handler or "default"


def cgroup_parent(runtimes, handler):
    """Pods under the systemd cgroup driver need a slice as parent, as kubelet gives them."""
    options = (runtimes.get(handler or "runc") or {}).get("options") or {}
    return "criops-smoke.slice" if options.get("SystemdCgroup") else ""


def pod_configs(handler, scratch, image, parent):
    """The pod sandbox and container configs crictl runp/create read."""
    name = f"criops-smoke-{label(handler)}"
    pod = {
        "metadata": {"name": name, "namespace": "criops-system", "uid": f"{name}-{int(time.time())}", "attempt": 1},
        "log_directory": f"{scratch}/logs",
        "linux": {"cgroup_parent": parent},
    }
    container = {"metadata": {"name": "web"}, "image": {"image": image}, "log_path": "web.log", "linux": {}}
    return pod, container


def ask(url, tries, timeout=5):
    """(status, body) of the first answer, asking once a second; the last error when none came."""
    error = "no answer"
    for attempt in range(tries):
        if attempt:
            time.sleep(1)
        try:
            with urllib.request.urlopen(url, timeout=timeout) as answer:
                return answer.status, answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as refused:
            error = f"HTTP {refused.code}"
        except (OSError, ValueError) as failed:
            error = str(getattr(failed, "reason", failed))
    raise StepFailed(f"no answer from {url} after {tries} tries: {error}")


def handler_checks(module, handler, checks):
    for argv in checks:
        step = f"Run the handler's own checks ({label(handler)})"
        if not argv:
            continue
        if not shutil.which(argv[0]):
            raise StepFailed(f"{step}: {argv[0]}: not installed")
        rc, out, err = run(module, argv)
        if rc != 0:
            raise StepFailed(f"{step}: {last_line(err, out) or f'{argv[0]} exited {rc}'}")


def smoke_pod(crictl, params, handler, runtimes, scratch):
    """One handler's pod: run, ask, read, check; removed whatever happened."""
    tag = label(handler)
    workdir = os.path.join(scratch, tag)
    os.makedirs(f"{workdir}/logs", mode=0o755)
    pod, container = pod_configs(handler, workdir, params["image"], cgroup_parent(runtimes, handler))
    for name, config in (("pod", pod), ("container", container)):
        with open(f"{workdir}/{name}.json", "w") as handle:
            json.dump(config, handle)
    pod_id = container_id = ""
    try:
        pod_id = crictl.must(
            f"Run the pod sandbox ({tag})", "runp", *(["--runtime", handler] if handler else []), f"{workdir}/pod.json"
        )
        container_id = crictl.must(
            f"Create the web container ({tag})", "create", pod_id, f"{workdir}/container.json", f"{workdir}/pod.json"
        )
        crictl.must(f"Start the web container ({tag})", "start", container_id)
        inspected = json.loads(
            crictl.must(f"Find the pod's IP address ({tag})", "inspectp", "--output", "json", pod_id)
        )
        ip = ((inspected.get("status") or {}).get("network") or {}).get("ip") or ""
        if not ip:
            raise StepFailed(f"Find the pod's IP address ({tag}): the pod has none")
        status, body = ask(f"http://{ip}:{params['port']}/", params["http_tries"])
        rc, out, err = crictl.run("logs", container_id)
        if rc != 0:
            raise StepFailed(f"Read the container log ({tag}): {last_line(err, out)}")
        # As smoke.json always had it: each stream without its final newline.
        log = out.rstrip("\r\n") + err.rstrip("\r\n")
        if params["expected_body"] not in body or params["expected_log"] not in log:
            raise StepFailed(
                f"Smoke pod through handler '{tag}': expected '{params['expected_body']}' in the HTTP answer"
                f" (got '{body.strip()}') and '{params['expected_log']}' in the log (got '{log}')."
            )
        return {
            "handler": tag,
            "image": params["image"],
            "podIP": ip,
            "httpStatus": status,
            "httpBody": body,
            "log": log,
        }
    finally:
        if pod_id:
            remove_pod(crictl, pod_id, params["v1alpha2"])


def smoke(module, params):
    crictl = Crictl(module, params["crictl"], params["endpoint"])
    handlers = params["handlers"]
    for handler in handlers:
        handler_checks(module, handler, params["handler_checks"].get(handler) or [])
    runtimes = {}
    rc, out, _ = crictl.run("info", "--output", "json")
    if rc == 0:
        runtimes = handler_configs(json.loads(out))
    crictl.must("Pull the smoke image", "pull", params["image"])
    scratch = tempfile.mkdtemp(prefix="criops-smoke.")
    try:
        with ThreadPoolExecutor(max_workers=len(handlers)) as pool:
            futures = [pool.submit(smoke_pod, crictl, params, h, runtimes, scratch) for h in handlers]
            results = []
            for future in futures:
                try:
                    results.append(future.result())
                except StepFailed as failed:
                    results.append(failed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    failed = next((r for r in results if isinstance(r, StepFailed)), None)
    passed = [r for r in results if not isinstance(r, StepFailed)]
    return passed, failed


def main():
    module = AnsibleModule(
        argument_spec={
            "crictl": {"type": "str", "required": True},
            "endpoint": {"type": "str", "required": True},
            "v1alpha2": {"type": "bool", "default": False},
            "handlers": {"type": "list", "elements": "str", "required": True},
            "handler_checks": {"type": "dict", "default": {}},
            "image": {"type": "str", "required": True},
            "port": {"type": "int", "default": 80},
            "expected_body": {"type": "str", "required": True},
            "expected_log": {"type": "str", "required": True},
            "http_tries": {"type": "int", "default": 11},
        },
        supports_check_mode=False,
    )
    try:
        passed, failed = smoke(module, module.params)
    except StepFailed as failed_early:
        module.fail_json(msg=str(failed_early), smoke=[])
    if failed:
        module.fail_json(msg=str(failed), smoke=passed)
    module.exit_json(changed=False, smoke=passed)


if __name__ == "__main__":
    main()
