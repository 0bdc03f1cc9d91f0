"""The operator in the cluster, proving a joined Node from a pod on it, without SSH.

A test host provisioned by site.yml (over SSH, as a node is before it joins)
joins as a real Node; the operator's image, pulled by that Node from the local
registry, is deployed with `kubectl apply -k` (testworld/in_cluster.py: an
overlay of operator/manifests with what this test world lacks). A RuntimeNode
with `access.connection: pod` is then validated by a privileged pod the operator
places on the Node (criops.onnode: Ansible in a chroot of the node's root),
whose log carries the result back: the RuntimeNode Ready with critest's numbers,
the Node labelled, the pod gone, no SSH key or Secret involved, the operator's
RBAC what the manifests say, and the machine left as it was.

The tests share one host, one Node and the deployed operator and run in file order.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import DEBIAN12_EXPECTED_FAILURES, condition, install_crd, kubectl_json, phase_is, wait_for
from testworld.control_plane import ControlPlane
from testworld.hosts import Node, machine_state, run_playbook
from testworld.in_cluster import (
    NODE_NAMESPACE,
    OPERATOR_NAMESPACE,
    deploy,
    operator_image_in_registry,
    operator_log,
    undeploy,
    write_overlay,
)
from testworld.kubelet import join, leave

pytestmark = pytest.mark.integration

RN = "on-node"
OPERATOR_SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:criops-operator"
NODE_SA = f"system:serviceaccount:{NODE_NAMESPACE}:criops-node"
# Written on the node if a RuntimeNode string were ever templated (in the pod: the
# node's root is /host there) or run by a shell (on the node).
MARKER = "/tmp/criops-onnode-pwned"
TIMINGS: dict[str, float] = {}


def secrets(plane: ControlPlane) -> set[str]:
    items = kubectl_json(plane, "get", "secrets", "--all-namespaces")["items"]
    return {f"{s['metadata']['namespace']}/{s['metadata']['name']}" for s in items}


def node_pods(plane: ControlPlane) -> list[dict[str, Any]]:
    return kubectl_json(plane, "-n", NODE_NAMESPACE, "get", "pods")["items"]


@pytest.fixture(scope="module")
def world(
    kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, inventory: Path, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """The host provisioned and joined, the operator deployed in the cluster; undeployed,
    the host gone from the cluster and the machine compared afterwards."""
    start = time.monotonic()
    image = operator_image_in_registry()
    TIMINGS["operator image built (cached) and pushed"] = time.monotonic() - start
    start = time.monotonic()
    provisioned = run_playbook(inventory)
    assert provisioned.returncode == 0, provisioned.stdout[-6000:]
    TIMINGS["site.yml over SSH, before the node joins"] = time.monotonic() - start
    before = machine_state()
    control_plane.start_cluster()
    try:
        join(control_plane, test_host)
        install_crd(control_plane)
        overlay = write_overlay(control_plane, tmp_path_factory.mktemp("overlay"), image)
        start = time.monotonic()
        deploy(control_plane, overlay)
        TIMINGS["kubectl apply -k -> operator available (image pulled by the Node)"] = time.monotonic() - start
        yield {"plane": control_plane, "host": test_host, "image": image, "machine before": before}
    finally:
        print(operator_log(control_plane, tail=400))
        control_plane.kubectl("delete", "runtimenode", "--all", "--timeout=90s", timeout=120)
        undeploy(control_plane)
        leave(control_plane, test_host)
        control_plane.stop_cluster()
        print(f"timings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def operator_pod(plane: ControlPlane) -> dict[str, Any]:
    pods = kubectl_json(plane, "-n", OPERATOR_NAMESPACE, "get", "pods", "-l", "app.kubernetes.io/name=criops-operator")
    [pod] = pods["items"]
    return pod


def test_the_operator_runs_in_the_cluster_under_the_manifests_rbac(world):
    plane, host = world["plane"], world["host"]
    pod = operator_pod(plane)
    assert pod["spec"]["nodeName"] == host.name
    assert pod["spec"]["containers"][0]["image"] == world["image"]
    assert pod["spec"]["serviceAccountName"] == "criops-operator"
    assert pod["status"]["containerStatuses"][0]["ready"]

    def can(who: str, *args: str) -> bool:
        return plane.kubectl("auth", "can-i", f"--as={who}", *args).stdout.strip() == "yes"

    # On-node pods: only in their namespace, only what a run needs.
    for verb in ("create", "get", "list", "delete"):
        assert can(OPERATOR_SA, verb, "pods", "-n", NODE_NAMESPACE), verb
    assert can(OPERATOR_SA, "get", "pods", "--subresource=log", "-n", NODE_NAMESPACE)
    assert not can(OPERATOR_SA, "create", "pods", "--subresource=exec", "-n", NODE_NAMESPACE)
    assert not can(OPERATOR_SA, "get", "pods", "--subresource=log", "-n", OPERATOR_NAMESPACE)
    assert not can(OPERATOR_SA, "update", "pods", "-n", NODE_NAMESPACE)
    for namespace in (OPERATOR_NAMESPACE, "default", "kube-system"):
        assert not can(OPERATOR_SA, "create", "pods", "-n", namespace), namespace
        assert not can(OPERATOR_SA, "delete", "pods", "-n", namespace), namespace
    assert not can(OPERATOR_SA, "get", "secrets", "-n", NODE_NAMESPACE)
    assert not can(OPERATOR_SA, "list", "secrets", "-n", OPERATOR_NAMESPACE)
    # The on-node pods' ServiceAccount may do nothing at all beyond what every identity may.
    assert not can(NODE_SA, "get", "pods", "-n", NODE_NAMESPACE)
    assert not can(NODE_SA, "get", "nodes")
    # The rules in the cluster are the manifests' (kubectl apply -k put them there).
    role = kubectl_json(plane, "-n", NODE_NAMESPACE, "get", "role", "criops-operator-nodes")
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
    ]


class PodWatch:
    """Every on-node pod seen while it runs, by name (sampled every second)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self.seen: dict[str, dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pod in node_pods(self.plane):
                self.seen[pod["metadata"]["name"]] = pod
            self._stop.wait(1)

    def __enter__(self) -> PodWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def runtime_node(host: Node, **validation: Any) -> dict[str, Any]:
    return {
        "apiVersion": "criops.dev/v1alpha1",
        "kind": "RuntimeNode",
        "metadata": {"name": RN},
        "spec": {
            "nodeName": host.name,
            "runtime": "containerd",
            "access": {"connection": "pod"},
            "validation": {"focus": ["Runtime info", "PodSandbox"], "expectedFailures": DEBIAN12_EXPECTED_FAILURES,
                           "interval": "10m", **validation},
        },
    }  # fmt: skip


def test_a_pod_mode_runtime_node_is_proven_from_a_pod_on_its_node(world):
    plane, host = world["plane"], world["host"]
    secrets_before = secrets(plane)
    kubelet = host.sh("systemctl show kubelet.service -p NRestarts -p ActiveEnterTimestampMonotonic").stdout
    with PodWatch(plane) as watch:
        start = time.monotonic()
        applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(runtime_node(host)))
        assert applied.returncode == 0, applied.stderr
        status = wait_for("generation 1 Ready or Failed", phase_is(plane, RN, "Ready", "Failed", generation=1), 600)
        TIMINGS["pod mode: apply -> RuntimeNode Ready (focused critest, operator in the cluster)"] = (
            time.monotonic() - start
        )
    assert status["phase"] == "Ready", json.dumps(status, indent=2) + operator_log(plane)
    critest = status["critest"]
    assert critest["passed"] > 0 and critest["total"] >= critest["passed"], critest
    assert status["runtime"]["name"] == "containerd"
    labels = kubectl_json(plane, "get", "node", host.name)["metadata"]["labels"]
    assert labels["criops.dev/runtime"] == "containerd" and labels["criops.dev/validated"] == "true"

    # One on-node pod ran validate.yml: on the Node, privileged as documented, no token, owned by
    # the RuntimeNode, the operator's own image; and it is gone now.
    [pod] = [p for p in watch.seen.values() if p["metadata"]["labels"]["criops.dev/playbook"] == "validate"]
    spec = pod["spec"]
    assert spec["nodeName"] == host.name
    assert (spec["hostPID"], spec["hostNetwork"], spec["automountServiceAccountToken"]) == (True, True, False)
    assert spec["serviceAccountName"] == "criops-node"
    [container] = spec["containers"]
    assert container["command"] == ["python", "-m", "criops.onnode"]
    assert container["image"].startswith(world["image"].rpartition(":")[0] + "@sha256:"), container["image"]
    assert not [v for v in spec["volumes"] if "secret" in v or "projected" in v], spec["volumes"]
    [owner] = pod["metadata"]["ownerReferences"]
    rn = kubectl_json(plane, "get", "runtimenode", RN)
    assert (owner["kind"], owner["uid"]) == ("RuntimeNode", rn["metadata"]["uid"])
    assert wait_for("no on-node pods left", lambda: node_pods(plane) == [], 60, interval=1) is True

    # No SSH anywhere: the spec names no host or key, no Secret was made or read.
    assert set(rn["spec"]["access"]) <= {"connection", "port", "user"}
    assert secrets(plane) == secrets_before
    # The kubelet kept running; nothing of the throwaway containerd (systemd-run from the chroot) is left.
    assert host.sh("systemctl show kubelet.service -p NRestarts -p ActiveEnterTimestampMonotonic").stdout == kubelet
    assert host.sh("systemctl list-units --all --plain --no-legend '[c]riops-validate-*'").stdout.strip() == ""


def test_site_yml_through_the_pod_restarts_containerd_and_hostile_fields_stay_inert(world):
    """Generation 2 provisions through the pod: site.yml changes containerd's unit, so systemd,
    asked from the chroot, restarts containerd; the pods on the Node (the operator's, the
    on-node pod itself) live on. Every RuntimeNode string travels to the pod as JSON in its
    environment and reaches Ansible marked unsafe there: a template in focus is critest's
    literal text, a shell command in skip is never run (either would write MARKER on the
    node: /host is its root in the pod)."""
    plane, host = world["plane"], world["host"]
    before = host.sh("systemctl show containerd.service -p MainPID -p LimitNOFILE").stdout.split()
    assert "LimitNOFILE=16384" not in before
    operator = operator_pod(plane)["status"]["containerStatuses"][0]
    template = "{{ lookup('pipe', 'touch /host" + MARKER + "-template') }}"
    spec = runtime_node(host, focus=["Runtime info", template], skip=[f"$(touch {MARKER}-shell)"])["spec"]
    spec["provision"] = {"enabled": True, "extraVars": {"containerd_limit_nofile": "16384"}}
    with PodWatch(plane) as watch:
        start = time.monotonic()
        patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps({"spec": spec}))
        assert patched.returncode == 0, patched.stderr
        status = wait_for("generation 2 Ready or Failed", phase_is(plane, RN, "Ready", "Failed", generation=2), 900)
        TIMINGS["pod mode: site.yml (containerd restarted) + focused critest -> Ready"] = time.monotonic() - start
    assert status["phase"] == "Ready", json.dumps(status, indent=2) + operator_log(plane)
    assert condition(status, "Provisioned")["reason"] == "Converged"
    assert status["critest"]["passed"] >= 1
    playbooks = sorted(p["metadata"]["labels"]["criops.dev/playbook"] for p in watch.seen.values())
    assert playbooks == ["site", "validate"], playbooks

    after = host.sh("systemctl show containerd.service -p MainPID -p LimitNOFILE").stdout.split()
    assert "LimitNOFILE=16384" in after
    assert after[0] != before[0], (before, after)  # MainPID: restarted
    # The operator's container ran through containerd's restart: same container, no restart.
    now = operator_pod(plane)["status"]["containerStatuses"][0]
    assert (now["containerID"], now["restartCount"]) == (operator["containerID"], 0)
    assert host.sh(f"ls {MARKER}* 2>/dev/null || true").stdout.strip() == ""
    assert wait_for("no on-node pods left", lambda: node_pods(plane) == [], 60, interval=1) is True


def test_a_node_that_has_not_joined_waits_and_no_pod_is_made(world):
    plane = world["plane"]
    manifest = runtime_node(world["host"])
    manifest["metadata"]["name"], manifest["spec"]["nodeName"] = "not-joined", "not-joined-node"
    assert plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest)).returncode == 0

    def waiting() -> dict[str, Any] | bool:
        found = condition(kubectl_json(plane, "get", "runtimenode", "not-joined").get("status", {}), "Validated")
        return found if found.get("reason") == "Waiting" else False

    found = wait_for("Validated=False Waiting", waiting, 60, interval=1)
    assert "Node not-joined-node has not joined" in found["message"], found
    assert node_pods(plane) == []
    deleted = plane.kubectl("delete", "runtimenode", "not-joined", "--timeout=60s", timeout=90)
    assert deleted.returncode == 0, deleted.stderr


def set_operator_env(plane: ControlPlane, assignment: str) -> None:
    """`kubectl set env` on the operator's Deployment, then wait for its new pod."""
    done = plane.kubectl("-n", OPERATOR_NAMESPACE, "set", "env", "deployment/criops-operator", assignment)
    assert done.returncode == 0, done.stderr
    rolled = plane.kubectl("-n", OPERATOR_NAMESPACE, "rollout", "status", "deployment/criops-operator",
                           "--timeout=180s", timeout=200)  # fmt: skip
    assert rolled.returncode == 0, rolled.stderr


def test_an_on_node_pod_that_cannot_pull_its_image_fails_with_the_kubelets_words(world):
    plane, host = world["plane"], world["host"]
    missing = world["image"].rpartition(":")[0] + ":no-such-tag"
    set_operator_env(plane, f"CRIOPS_NODE_IMAGE={missing}")
    try:
        generation = kubectl_json(plane, "get", "runtimenode", RN)["metadata"]["generation"] + 1
        patch = {"spec": {"provision": {"enabled": False}, "validation": {"focus": ["Runtime info"]}}}
        patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(patch))
        assert patched.returncode == 0, patched.stderr
        status = wait_for("the verdict", phase_is(plane, RN, "Ready", "Failed", generation=generation), 300)
        message = condition(status, "Validated")["message"]
        assert status["phase"] == "Failed", json.dumps(status, indent=2)
        assert "cannot start: ErrImagePull" in message or "cannot start: ImagePullBackOff" in message, message
        assert missing in message, message
        assert kubectl_json(plane, "get", "node", host.name)["metadata"]["labels"]["criops.dev/validated"] == "false"
        assert wait_for("no on-node pods left", lambda: node_pods(plane) == [], 60, interval=1) is True
    finally:
        set_operator_env(plane, "CRIOPS_NODE_IMAGE-")


def running_node_pods(plane: ControlPlane) -> list[dict[str, Any]]:
    return [p for p in node_pods(plane) if p.get("status", {}).get("phase") == "Running"]


def test_an_operator_killed_mid_run_leaves_no_on_node_pod_behind(world):
    """The operator's pod deleted at once while an on-node pod runs critest: its successor
    validates the generation again, deleting the pod the killed one left first."""
    plane, host = world["plane"], world["host"]
    generation = kubectl_json(plane, "get", "runtimenode", RN)["metadata"]["generation"] + 1
    with PodWatch(plane) as watch:
        patch = {"spec": {"validation": {"focus": ["Runtime info", "PodSandbox"]}}}
        patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(patch))
        assert patched.returncode == 0, patched.stderr
        first = wait_for("an on-node pod running", lambda: running_node_pods(plane), 120, interval=1)[0]
        killed = operator_pod(plane)["metadata"]["name"]
        gone = plane.kubectl("-n", OPERATOR_NAMESPACE, "delete", "pod", killed, "--grace-period=0", "--force")
        assert gone.returncode == 0, gone.stderr
        status = wait_for("the verdict", phase_is(plane, RN, "Ready", "Failed", generation=generation), 600)
    assert status["phase"] == "Ready", json.dumps(status, indent=2) + operator_log(plane)
    assert operator_pod(plane)["metadata"]["name"] != killed
    names = sorted(watch.seen)
    assert first["metadata"]["name"] in names and len(names) == 2, names
    assert wait_for("no on-node pods left", lambda: node_pods(plane) == [], 60, interval=1) is True
    # Nothing of the killed run's throwaway containerd is left either.
    assert host.sh("systemctl list-units --all --plain --no-legend '[c]riops-validate-*'").stdout.strip() == ""


def test_delete_and_leave_leave_the_node_and_the_machine_as_found(world):
    plane, host = world["plane"], world["host"]
    deleted = plane.kubectl("delete", "runtimenode", RN, "--timeout=90s", timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    labels = kubectl_json(plane, "get", "node", host.name)["metadata"].get("labels", {})
    assert not [k for k in labels if k.startswith("criops.dev/")]
    assert node_pods(plane) == []
    undeploy(plane)
    leave(plane, host)
    assert machine_state() == world["machine before"]
