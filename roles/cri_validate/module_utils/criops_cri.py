"""What cri_validate's modules share: crictl as argv, and a step's failure in a line."""

from __future__ import annotations

import json


def last_line(*texts):
    """The last non-empty line of the first text that has one: a command's own last words."""
    for text in texts:
        lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1]
    return ""


def handler_configs(info):
    """containerd's runtime handler configs from `crictl info` (decoded); other runtimes list none."""
    return ((info.get("config") or {}).get("containerd") or {}).get("runtimes") or {}


def run(module, argv):
    """(rc, stdout, stderr) of a command; one that cannot start is rc 127 with the reason, not a failed module."""
    try:
        return module.run_command(argv, handle_exceptions=False)
    except OSError as error:
        return 127, "", f"{argv[0]}: {error.strerror}"


class Crictl:
    """crictl against one endpoint (runtime and image service alike), each call an argv."""

    def __init__(self, module, binary, endpoint):
        self.module = module
        self.base = [binary, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint]

    def run(self, *args):
        """(rc, stdout, stderr) of one call."""
        return run(self.module, [*self.base, *args])

    def must(self, step, *args):
        """stdout of a call that must succeed; else `step: <its last line>` raises StepFailed."""
        rc, out, err = self.run(*args)
        if rc != 0:
            raise StepFailed(f"{step}: {last_line(err, out) or f'exited {rc}'}")
        return out.strip()


# critest names every pod it makes into a namespace of its own with this prefix.
CRITEST_NAMESPACE_PREFIX = "cri-test-namespace"


def remove_pod(crictl, pod_id, v1alpha2):
    """Remove a pod as a kubelet does: its containers first (virtlet's rmp leaves a pod's
    containers, each a VM, behind), then the pod; crictl v1.13's rmp has no --force.
    Whether the pod is gone."""
    rc, out, _ = crictl.run("ps", "--all", "--quiet", "--pod", pod_id)
    for container_id in out.split() if rc == 0 else []:
        crictl.run("stop", container_id)
        crictl.run("rm", container_id)
    if v1alpha2:
        crictl.run("stopp", pod_id)
    return crictl.run("rmp", *([] if v1alpha2 else ["--force"]), pod_id)[0] == 0


def remove_critest_pods(crictl, v1alpha2):
    """Remove the pods critest left (a spec that failed before its own cleanup), as a
    kubelet's garbage collection would; only critest's namespaces are touched.
    The `namespace/name` of each, and whether it is gone."""
    rc, out, _ = crictl.run("pods", "--output", "json")
    if rc != 0:
        return []
    left = []
    for pod in json.loads(out or "{}").get("items") or []:
        metadata = pod.get("metadata") or {}
        if (metadata.get("namespace") or "").startswith(CRITEST_NAMESPACE_PREFIX):
            gone = remove_pod(crictl, pod["id"], v1alpha2)
            left.append(f"{metadata.get('namespace')}/{metadata.get('name')}: {'removed' if gone else 'NOT removed'}")
    return left


class StepFailed(Exception):
    """A step of the node-side work failed; the text says which and why."""
