#!/usr/bin/env python3
"""Run a command (critest) while doing one of a kubelet's duties the runtime relies on.

    stop-containers-of-stopped-pods.py CRICTL ENDPOINT LOG -- COMMAND...

A kubelet stops a pod's containers before it stops the pod sandbox; critest
only stops and removes sandboxes. A runtime that leaves a stopped sandbox's
containers running (virtlet: each is a VM) then piles them up between specs.
While COMMAND runs, every second, each container that is not exited and whose
sandbox is no longer ready (or gone) is stopped, and removed when its sandbox
is gone, and once more when COMMAND has ended. Each action is a line of LOG.
Exits with COMMAND's status.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time


def crictl(base: list[str], *args: str) -> dict:
    done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout or "{}")


def sweep(base: list[str], log) -> None:
    pods = crictl(base, "pods", "--output", "json").get("items") or []
    states = {pod["id"]: pod.get("state", "") for pod in pods}
    for container in crictl(base, "ps", "--all", "--output", "json").get("containers") or []:
        sandbox = container.get("podSandboxId", "")
        if states.get(sandbox) == "SANDBOX_READY":
            continue
        if container.get("state") != "CONTAINER_EXITED":
            # No grace period: the pod is gone (a kubelet's would have run out by now).
            subprocess.run([*base, "stop", "--timeout", "0", container["id"]], capture_output=True, timeout=120)
            log.write(f"{time.time():.0f} stopped {container['id']} of pod {sandbox}\n")
        if sandbox not in states:
            subprocess.run([*base, "rm", container["id"]], capture_output=True, timeout=120)
            log.write(f"{time.time():.0f} removed {container['id']} of removed pod {sandbox}\n")
        log.flush()


def main() -> int:
    crictl_bin, endpoint, log_path, separator, *command = sys.argv[1:]
    if separator != "--" or not command:
        sys.exit(__doc__)
    base = [crictl_bin, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint]
    with open(log_path, "a") as log, subprocess.Popen(command) as child:
        while True:
            running = child.poll() is None
            try:
                sweep(base, log)
            except (subprocess.SubprocessError, ValueError, KeyError) as error:
                log.write(f"{time.time():.0f} sweep failed: {error}\n")
            # One sweep after the command ended: its last pod's containers too.
            if not running:
                return child.returncode
            time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
