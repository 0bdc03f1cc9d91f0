"""The pod that runs a playbook on its Node for `connection: pod` (criops.onnode in it).

It is privileged because the playbooks administer the node itself: install
packages, write /etc, load kernel modules, set sysctls, start and restart
systemd units (containerd, the throwaway containerd of validation). So: the
node's root at /host (hostPath `/`, Bidirectional propagation: the node's later
mounts are seen in the pod, and a mount a playbook makes, e.g. validation's
throwaway containerd's tmpfs, is the node's too), Ansible entering it with
chroot; hostPID, so
systemctl in that chroot finds the node's systemd as PID 1 (whose root is the
same inode as the chroot's: systemctl does not take itself for chrooted);
hostNetwork, so the smoke pod's address, the registry mirrors and package
sources are reached as from the node. Nothing else: no ServiceAccount token
(it never calls the API: its result is the last line of its log), no service
links, placed by nodeName (no scheduler, every taint tolerated: the node may be
tainted unvalidated by criops itself), a deadline, never restarted.
"""

from __future__ import annotations

import hashlib
from typing import Any

from . import contract
from .api import API_VERSION, KIND

CONTAINER = "ansible"
# A ServiceAccount with no rights and no token (operator/manifests/rbac.yaml).
SERVICE_ACCOUNT = "criops-node"
LABEL_RUNTIMENODE = "criops.dev/runtimenode-uid"
LABEL_PLAYBOOK = "criops.dev/playbook"
LABELS = {
    "app.kubernetes.io/name": "criops-node",
    "app.kubernetes.io/part-of": "criops",
    "app.kubernetes.io/managed-by": "criops",
}
# Seconds the pod may outlive the playbook's own timeout (image pull, start, reports).
DEADLINE_MARGIN = 300


def pod_name(runtime_node: str, playbook: str, generation: int, run_id: str) -> str:
    """criops-<RuntimeNode>-<playbook>-g<generation>-<run id>, a DNS label (at most 63
    characters: a long RuntimeNode name is shortened and a hash of it kept)."""
    stem = playbook.removesuffix(".yml")
    suffix = f"-{stem}-g{generation}-{run_id}"
    name = runtime_node
    room = 63 - len("criops-") - len(suffix)
    if len(name) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: room - 9].rstrip('-.')}-{digest}"
    return f"criops-{name.replace('.', '-')}{suffix}"


def selector(owner_uid: str, playbook: str) -> str:
    """The label selector of one RuntimeNode's on-node pods of one playbook."""
    return f"{LABEL_RUNTIMENODE}={owner_uid},{LABEL_PLAYBOOK}={playbook.removesuffix('.yml')}"


def manifest(
    name: str,
    namespace: str,
    node: str,
    image: str,
    run_json: str,
    owner: dict[str, str],
    playbook: str,
    timeout: int,
) -> dict[str, Any]:
    """The on-node pod for one run. `owner` is the RuntimeNode's {name, uid}: the pod goes
    with it (garbage collection), also when the operator is not there to delete it."""
    labels = {**LABELS, LABEL_RUNTIMENODE: owner["uid"], LABEL_PLAYBOOK: playbook.removesuffix(".yml")}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "ownerReferences": [{"apiVersion": API_VERSION, "kind": KIND, "name": owner["name"], "uid": owner["uid"]}],
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "activeDeadlineSeconds": timeout + DEADLINE_MARGIN,
            "terminationGracePeriodSeconds": 10,
            "serviceAccountName": SERVICE_ACCOUNT,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "hostPID": True,
            "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "tolerations": [{"operator": "Exists"}],
            "containers": [
                {
                    "name": CONTAINER,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["python", "-m", "criops.onnode"],
                    "workingDir": contract.ONNODE_WORK_DIR,
                    "env": [
                        {"name": contract.ONNODE_RUN_ENV, "value": run_json},
                        # root's, not the image's operator user's.
                        {"name": "HOME", "value": "/root"},
                    ],
                    "securityContext": {"privileged": True, "runAsUser": 0, "readOnlyRootFilesystem": True},
                    "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
                    "volumeMounts": [
                        {"name": "host", "mountPath": contract.HOST_ROOT, "mountPropagation": "Bidirectional"},
                        {"name": "work", "mountPath": contract.ONNODE_WORK_DIR},
                        {"name": "tmp", "mountPath": "/tmp"},
                        # Ansible's temporary files of tasks run in the pod (root's home).
                        {"name": "home", "mountPath": "/root"},
                    ],
                }
            ],
            "volumes": [
                {"name": "host", "hostPath": {"path": "/", "type": "Directory"}},
                {"name": "work", "emptyDir": {}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "home", "emptyDir": {}},
            ],
        },
    }


# Container states that waiting longer will not fix.
STUCK_REASONS = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull", "CreateContainerConfigError",
     "CreateContainerError", "RunContainerError"}
)  # fmt: skip


def stuck(pod: dict[str, Any]) -> str | None:
    """Why a pod that has not finished never will, or None: a container that cannot be
    pulled or created, or a pod the kubelet refused (phase Failed before it ran)."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in STUCK_REASONS:
            return f"{waiting['reason']}: {waiting.get('message', '').strip() or container.get('image', '')}"
    return None


def ended(pod: dict[str, Any]) -> str:
    """How a finished pod ended, in the kubelet's words: phase, reason, message, exit code."""
    status = pod.get("status") or {}
    parts = [status.get("phase", "?")]
    parts += [status[key] for key in ("reason", "message") if status.get(key)]
    for container in status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated") or {}
        if terminated:
            parts.append(f"exit code {terminated.get('exitCode')} ({terminated.get('reason', '')})")
    return ", ".join(parts)
