#!/usr/bin/python
"""cri_validate's throwaway containerd: started, or removed with every trace, in one module call."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.criops_cri import Crictl, handler_configs, last_line, run

DOCUMENTATION = r"""
module: criops_throwaway_containerd
short_description: Start or remove the throwaway containerd of cri_validate
description:
  - >-
    C(absent) removes every trace of the instance, and is safe when nothing of it exists:
    the unit (its C(ExecStop) removes its pods through CRI, which releases their IP
    addresses through CNI; then containerd and its shims stop), the mounts below its root
    and state (deepest first), host-local IPAM allocations of sandboxes it still knew (a
    dead instance could not release them), and its directories.
  - >-
    C(started) first waits for the critest lock (a run whose controller went away may have
    left critest running on the instance), removes what such a run left, then starts
    O(binary) with O(config) as the transient unit O(unit) (C(Type=notify): systemd waits
    for containerd's ready notification) and waits until its CRI runtime and network are
    ready and it has every handler of O(handlers).
options:
  state:
    description: C(started) or C(absent).
    type: str
    choices: [started, absent]
    required: true
  unit:
    description: Name of the transient systemd unit.
    type: str
    required: true
  root:
    description: The instance's root directory.
    type: path
    required: true
  state_dir:
    description: The instance's state directory; its socket is C(containerd.sock) in it.
    type: path
    required: true
  ipam_dir:
    description: host-local IPAM's directory of allocations (one file per address, naming the sandbox).
    type: path
    default: /var/lib/cni/networks
  binary:
    description: The containerd binary to run (C(started)).
    type: path
  config:
    description: The instance's config.toml content (C(started)).
    type: str
  root_tmpfs_size:
    description: Optional. Mount a tmpfs of this size at the root first (C(started)); unset, none.
    type: str
  config_source:
    description: Where O(config) was derived from, for messages.
    type: str
    default: the node's config
  crictl:
    description: crictl, for readiness and for the unit's C(ExecStop).
    type: str
    default: crictl
  handlers:
    description: Handlers the instance must have (C(started)); an empty string is the default one.
    type: list
    elements: str
    default: []
  lock:
    description: The critest lock to wait for (C(started)).
    type: path
  lock_timeout:
    description: Seconds to wait for it.
    type: int
    default: 1800
  max_seconds:
    description: systemd stops the instance after this many seconds whatever happens.
    type: int
    default: 2700
  ready_timeout:
    description: Seconds to wait for its CRI runtime and network to be ready.
    type: float
    default: 15
"""

RETURN = r"""
removed:
  description: What C(absent) found and removed (unit, mounts, ipam, paths).
  type: dict
  returned: always
"""


def mounts_below(mountinfo, prefixes):
    """Mount points at or below any of `prefixes`, deepest first (mountinfo's fifth field, octal escapes)."""
    found = []
    for line in mountinfo.splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        target = fields[4].encode().decode("unicode_escape")
        if any(target == p or target.startswith(p.rstrip("/") + "/") for p in prefixes):
            found.append(target)
    return sorted(set(found), reverse=True)


def ipam_allocations(ipam_dir, sandboxes):
    """host-local IPAM files whose lines name one of `sandboxes`."""
    wanted = set(sandboxes)
    found = []
    if not wanted or not os.path.isdir(ipam_dir):
        return found
    for directory, _, files in os.walk(ipam_dir):
        for name in files:
            path = os.path.join(directory, name)
            try:
                with open(path, errors="replace") as handle:
                    if wanted & {line.strip() for line in handle}:
                        found.append(path)
            except OSError:
                continue
    return sorted(found)


def absent(module, params):
    root, state = params["root"], params["state_dir"]
    sandboxes_dir = os.path.join(root, "io.containerd.grpc.v1.cri", "sandboxes")
    sandboxes = os.listdir(sandboxes_dir) if os.path.isdir(sandboxes_dir) else []
    removed = {"unit": False, "mounts": [], "ipam": [], "paths": []}
    rc, out, err = run(module, ["systemctl", "stop", f"{params['unit']}.service"])
    if rc != 0 and "not loaded" not in err:
        module.fail_json(msg=f"Stop the throwaway containerd, its pods first: {last_line(err, out)}")
    removed["unit"] = rc == 0
    with open("/proc/self/mountinfo") as handle:
        targets = mounts_below(handle.read(), [root, state])
    for target in targets:
        rc, out, err = run(module, ["umount", "--lazy", target])
        if rc != 0:
            module.fail_json(msg=f"Unmount {target}: {last_line(err, out)}")
        removed["mounts"].append(target)
    for path in ipam_allocations(params["ipam_dir"], sandboxes):
        os.unlink(path)
        removed["ipam"].append(path)
    for path in (root, state):
        if os.path.lexists(path):
            shutil.rmtree(path)
            removed["paths"].append(path)
    return removed


def wait_for_lock(path, timeout):
    """Like flock --timeout: the lock a critest run holds, taken and let go at once."""
    deadline = time.monotonic() + timeout
    with open(path, "a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(handle, fcntl.LOCK_UN)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.5)


def not_ready(info):
    """The conditions of `crictl info` that are not true."""
    return [c.get("type") for c in (info.get("status") or {}).get("conditions") or [] if not c.get("status")]


def cri_load_error(module, unit):
    """containerd's own words on why its CRI plugin did not load, from this start's journal."""
    rc, invocation, _ = run(module, ["systemctl", "show", "--property=InvocationID", "--value", f"{unit}.service"])
    if rc != 0 or not invocation.strip():
        return ""
    rc, out, _ = run(
        module, ["journalctl", f"_SYSTEMD_INVOCATION_ID={invocation.strip()}", "--output=cat", "--no-pager"]
    )
    return cri_plugin_error(out) if rc == 0 else ""


def cri_plugin_error(log):
    """The error of containerd's last `failed to load plugin io.containerd.grpc.v1.cri` line, or "",
    with what to do where containerd's words alone do not say it."""
    lines = [line for line in log.splitlines() if "failed to load plugin io.containerd.grpc.v1.cri" in line]
    if not lines:
        return ""
    found = re.search(r'error="((?:[^"\\]|\\.)*)"', lines[-1])
    error = found.group(1).replace('\\"', '"') if found else lines[-1].strip()
    if "fsnotify watcher: too many open files" in error:
        # The CRI plugin watches the CNI config directory with inotify. Instances are
        # counted per user across the node (128 by default): every systemd, containerd
        # and kubelet of root takes some, and a second containerd may find none left.
        error += (
            "; the node's inotify instances for root are used up (fs.inotify.max_user_instances):"
            " raise it (kind's known issues suggest 512)"
        )
    return error


def started(module, params):
    for needed in ("binary", "config", "lock"):
        if not params[needed]:
            module.fail_json(msg=f"state started needs {needed}")
    if not wait_for_lock(params["lock"], params["lock_timeout"]):
        held = f"{params['lock']} held longer than {params['lock_timeout']} s"
        module.fail_json(msg=f"Wait for a critest an interrupted run left behind: {held}")
    absent(module, params)
    root, state = params["root"], params["state_dir"]
    for path in (root, state):
        os.makedirs(path, mode=0o711, exist_ok=True)
        os.chmod(path, 0o711)
    if params["root_tmpfs_size"]:
        # Like the node's /var/lib/containerd where /var/lib is overlay: overlayfs cannot stack on overlay.
        size = params["root_tmpfs_size"]
        rc, out, err = run(module, ["mount", "-t", "tmpfs", "-o", f"mode=0711,size={size}", "tmpfs", root])
        if rc != 0:
            module.fail_json(msg=f"Mount a tmpfs at the throwaway root: {last_line(err, out)}")
    config = os.path.join(state, "config.toml")
    with open(os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(params["config"])
    endpoint = f"unix://{state}/containerd.sock"
    # systemd supervises it and stops it on `systemctl stop` or after max_seconds: first
    # ExecStop removes its pods through CRI (their processes are in cgroups of their own,
    # which no unit stop reaches; CNI releases their addresses), then containerd and its
    # shims go (KillMode control-group).
    argv = [
        "systemd-run",
        f"--unit={params['unit']}",
        "--description=criops validation containerd (removed after the run)",
        "--collect",
        "--quiet",
        "--property=Type=notify",
        "--property=Delegate=yes",
        "--property=KillMode=control-group",
        "--property=TasksMax=infinity",
        "--property=TimeoutStartSec=60",
        f"--property=RuntimeMaxSec={params['max_seconds']}",
        f"--property=ExecStop={params['crictl']} --runtime-endpoint {endpoint} rmp --all --force",
        params["binary"],
        "--config",
        config,
    ]
    rc, out, err = run(module, argv)
    if rc != 0:
        module.fail_json(msg=f"Start the throwaway containerd: {last_line(err, out)}")
    crictl = Crictl(module, params["crictl"], endpoint)
    deadline = time.monotonic() + params["ready_timeout"]
    while True:
        rc, out, err = crictl.run("info", "--output", "json")
        info = json.loads(out) if rc == 0 else {}
        waiting = not_ready(info) if rc == 0 else [last_line(err, out)]
        if not waiting:
            break
        # systemd-run returned once containerd said it was ready, its plugins loaded: a
        # CRI service missing then stays missing, and containerd's log says why.
        cri_missing = "unknown service runtime." in err
        if cri_missing or time.monotonic() >= deadline:
            why = ", ".join(str(w) for w in waiting)
            if cri_missing:
                why = cri_load_error(module, params["unit"]) or why
            state = "its CRI plugin did not load" if cri_missing else f"not ready after {params['ready_timeout']:g} s"
            module.fail_json(msg=f"Wait for the throwaway containerd's CRI runtime and network: {state} ({why})")
        time.sleep(0.1)
    runtimes = handler_configs(info)
    missing = [h for h in params["handlers"] if h and h not in runtimes]
    if missing:
        module.fail_json(
            msg=f"The throwaway containerd, from {params['config_source']}, has no handler '{missing[0]}'"
            f" (it has {', '.join(runtimes)})."
        )


def main():
    module = AnsibleModule(
        argument_spec={
            "state": {"type": "str", "choices": ["started", "absent"], "required": True},
            "unit": {"type": "str", "required": True},
            "root": {"type": "path", "required": True},
            "state_dir": {"type": "path", "required": True},
            "ipam_dir": {"type": "path", "default": "/var/lib/cni/networks"},
            "binary": {"type": "path"},
            "config": {"type": "str"},
            "root_tmpfs_size": {"type": "str"},
            "config_source": {"type": "str", "default": "the node's config"},
            "crictl": {"type": "str", "default": "crictl"},
            "handlers": {"type": "list", "elements": "str", "default": []},
            "lock": {"type": "path"},
            "lock_timeout": {"type": "int", "default": 1800},
            "max_seconds": {"type": "int", "default": 2700},
            "ready_timeout": {"type": "float", "default": 15},
        },
        supports_check_mode=False,
    )
    params = module.params
    if params["state"] == "absent":
        module.exit_json(changed=False, removed=absent(module, params))
    started(module, params)
    module.exit_json(changed=False, removed={})


if __name__ == "__main__":
    main()
