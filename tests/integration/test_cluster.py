"""A real cluster: a test host provisioned by site.yml joins as a Node with a real
kubelet (testworld/kubelet.py), beside kube-scheduler and kube-controller-manager,
and pods that ask for criops' RuntimeClass crun land only where criops proved crun.

The tests share one host, one Node and one RuntimeNode and run in file order:
joined -> a crun pod Pending until the proof, Running under crun after it ->
crun broken: validated=false and new pods Pending -> delete and leave: the
RuntimeClass gone and the machine as it was before the kubelet started.

critest and the smoke pod need the CRI server to themselves: the operator
refuses a Ready, schedulable Node (NodeNotDrained), and a running kubelet stops
within seconds every pod sandbox it did not create, critest's and the smoke
pod's included. So each validation here runs with the Node drained as a user
would: cordoned (no pods of this test run there) and its kubelet stopped; the
kubelet starts again and the Node is uncordoned after. For the same reason the
light probe is kept off a live Node (the longest interval): on a Node whose
kubelet runs it would fail without the runtime being at fault.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import DEBIAN12_EXPECTED_FAILURES, kubectl_json, operator_world, phase_is, runtime_node, wait_for
from testworld.control_plane import ControlPlane, versions
from testworld.hosts import Node, run_playbook
from testworld.kubelet import join, leave, machine_state, wait_node_ready

pytestmark = pytest.mark.integration

RN = "kn-crun"
IMAGE = "10.0.2.2:5000/criops/busybox:1.0"
LOG_LINE = "a pod under the RuntimeClass crun"
# Set aside while crun is broken, restored after.
CRUN, CRUN_ASIDE = "/usr/bin/crun", "/usr/bin/crun.criops-test"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(
    kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, inventory: Path, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """The module's host provisioned and joined, the scheduler and controller manager running,
    the operator watching; the machine's state recorded before the kubelet started."""
    start = time.monotonic()
    provisioned = run_playbook(inventory)
    assert provisioned.returncode == 0, provisioned.stdout[-6000:]
    TIMINGS["site.yml"] = time.monotonic() - start
    before = machine_state([test_host.name])
    control_plane.start_cluster()
    try:
        start = time.monotonic()
        join(control_plane, test_host)
        TIMINGS["kubelet start -> Node Ready"] = time.monotonic() - start
        with operator_world(control_plane, test_host, tmp_path_factory.mktemp("operator"), register=False) as world:
            yield {**world, "machine before": before}
    finally:
        test_host.sh(f"[ -e {CRUN_ASIDE} ] && mv -f {CRUN_ASIDE} {CRUN}; true", check=False)
        leave(control_plane, test_host)
        control_plane.stop_cluster()
        print(f"timings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def pod(name: str) -> dict[str, Any]:
    """A pod that asks for the RuntimeClass crun and nothing about nodes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": "crun",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "sleep", "image": IMAGE, "command": ["sh", "-c", f"echo {LOG_LINE}; exec sleep 3600"]}
            ],
        },
    }


def create_pod(plane: ControlPlane, name: str) -> None:
    created = plane.kubectl("create", "-f", "-", stdin=json.dumps(pod(name)))
    assert created.returncode == 0, created.stderr


def get_pod(plane: ControlPlane, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "-n", "default", "get", "pod", name)


def unschedulable(plane: ControlPlane, name: str) -> str:
    """The scheduler's message for a pod it could not place ("" while it has none)."""
    conditions = get_pod(plane, name).get("status", {}).get("conditions", [])
    found = next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), {})
    return found.get("message", "") if found.get("reason") == "Unschedulable" else ""


def running(plane: ControlPlane, name: str) -> dict[str, Any] | bool:
    current = get_pod(plane, name)
    return current if current.get("status", {}).get("phase") == "Running" else False


def labels(world: dict[str, Any]) -> dict[str, str]:
    return kubectl_json(world["plane"], "get", "node", world["host"].name)["metadata"].get("labels", {})


def validated_reason(plane: ControlPlane) -> str:
    status = kubectl_json(plane, "get", "runtimenode", RN).get("status", {})
    return next((c.get("reason", "") for c in status.get("conditions", []) if c["type"] == "Validated"), "")


def validate_drained(world: dict[str, Any], generation: int) -> dict[str, Any]:
    """Cordon the Node and stop its kubelet, wait for the RuntimeNode's verdict on `generation`
    (its status), then start the kubelet again and uncordon the Node."""
    plane, host = world["plane"], world["host"]
    assert plane.kubectl("cordon", host.name).returncode == 0
    host.sh("systemctl stop kubelet.service")
    try:
        return wait_for(
            f"generation {generation} Ready or Failed",
            phase_is(plane, RN, "Ready", "Failed", generation=generation), 600, interval=2,
        )  # fmt: skip
    finally:
        host.sh("systemctl start kubelet.service")
        wait_node_ready(plane, host, 60)
        assert plane.kubectl("uncordon", host.name).returncode == 0


def test_a_test_host_joins_as_a_real_node(cluster):
    plane, host = cluster["plane"], cluster["host"]
    node = kubectl_json(plane, "get", "node", host.name)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions()["KUBERNETES_VERSION"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    # The kernel settings the kubelet wants are the read-only files inside the host, not the machine's.
    assert host.sh("cat /proc/sys/vm/overcommit_memory").stdout.strip() == "1"
    during = machine_state([host.name])
    assert during["sysctls"] == cluster["machine before"]["sysctls"]
    # The node's cgroup root is in the machine's own name=systemd hierarchy: what leave must take away.
    assert f"systemd/{host.name}" in during["cgroups"], during


def test_a_crun_pod_waits_for_the_proof_then_runs_under_crun(cluster):
    plane, host = cluster["plane"], cluster["host"]
    manifest = runtime_node(
        RN, host.name, runtime="crun", ssh_port=cluster["port"],
        validation={"focus": ["Runtime info", "PodSandbox"], "parallel": 2, "interval": "24h",
                    "expectedFailures": DEBIAN12_EXPECTED_FAILURES},
    )  # fmt: skip
    applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    # The RuntimeClass comes first; critest waits: the Node is live (Ready, schedulable).
    wait_for("the RuntimeClass crun", lambda: plane.kubectl("get", "runtimeclass", "crun").returncode == 0, 60)
    wait_for("NodeNotDrained", lambda: validated_reason(plane) == "NodeNotDrained", 60)
    runtime_class = kubectl_json(plane, "get", "runtimeclass", "crun")
    assert runtime_class["handler"] == "crun" and "overhead" not in runtime_class
    assert runtime_class["scheduling"]["nodeSelector"] == {"criops.dev/runtime": "crun", "criops.dev/validated": "true"}

    create_pod(plane, "crun-1")
    # Admission put the RuntimeClass's selector on the pod; no Node matches it yet.
    assert get_pod(plane, "crun-1")["spec"]["nodeSelector"] == runtime_class["scheduling"]["nodeSelector"]
    message = wait_for("crun-1 unschedulable", lambda: unschedulable(plane, "crun-1"), 60)
    assert "didn't match Pod's node affinity/selector" in message, message
    assert labels(cluster).get("criops.dev/validated") == "false"

    start = time.monotonic()
    status = validate_drained(cluster, generation=1)
    TIMINGS["drained -> RuntimeNode Ready (focused critest) -> Node back"] = time.monotonic() - start
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert status["critest"]["handler"] == "crun" and status["critest"]["passed"] > 0
    assert labels(cluster)["criops.dev/validated"] == "true"

    placed = wait_for("crun-1 Running", lambda: running(plane, "crun-1"), 120, interval=1)
    assert placed["spec"]["nodeName"] == host.name
    # kube-apiserver reaches the kubelet: its client certificate, the kubelet's webhook
    # authorization, the egress proxy to the host's published port.
    logs = plane.kubectl("-n", "default", "logs", "crun-1")
    assert (logs.returncode, logs.stdout.strip()) == (0, LOG_LINE), logs.stderr

    # A new pod on the proven node: create -> Running.
    start = time.monotonic()
    create_pod(plane, "crun-2")
    wait_for("crun-2 Running", lambda: running(plane, "crun-2"), 120, interval=0.5)
    TIMINGS["pod create -> Running"] = time.monotonic() - start

    # From the node: the pod's sandbox runs under the handler crun, its container under /usr/bin/crun.
    for name in ("crun-1", "crun-2"):
        sandbox = host.sh(f"crictl pods --namespace default --name {name} --state ready -q").stdout.split()
        assert len(sandbox) == 1, sandbox
        inspected = json.loads(host.sh(f"crictl inspectp {sandbox[0]}").stdout)
        assert inspected["status"]["runtimeHandler"] == "crun"
        assert inspected["info"]["runtimeOptions"]["binary_name"] == CRUN


def test_a_broken_crun_unvalidates_the_node_and_new_pods_stay_pending(cluster):
    plane, host = cluster["plane"], cluster["host"]
    # crun that cannot start anything: the smoke pod through the handler fails.
    host.sh(f"mv {CRUN} {CRUN_ASIDE} && printf '#!/bin/sh\\necho broken for a test >&2\\nexit 1\\n' >{CRUN} "
            f"&& chmod +x {CRUN}")  # fmt: skip
    try:
        # A new generation (one more spec to focus on) proves the node again, drained.
        focus = {"spec": {"validation": {"focus": ["Runtime info", "PodSandbox", "Container"]}}}
        patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(focus))
        assert patched.returncode == 0, patched.stderr
        status = validate_drained(cluster, generation=2)
        assert status["phase"] == "Failed", json.dumps(status, indent=2)
        validated = next(c for c in status["conditions"] if c["type"] == "Validated")
        assert "Run the pod sandbox" in validated["message"], validated
        assert labels(cluster)["criops.dev/validated"] == "false"
        # The pods already running keep running: the kubelet and crun left them alone.
        assert running(plane, "crun-1") and running(plane, "crun-2")

        create_pod(plane, "crun-3")
        message = wait_for("crun-3 unschedulable", lambda: unschedulable(plane, "crun-3"), 60)
        assert "didn't match Pod's node affinity/selector" in message, message
        time.sleep(5)
        assert get_pod(plane, "crun-3")["status"]["phase"] == "Pending"
    finally:
        host.sh(f"mv -f {CRUN_ASIDE} {CRUN}")


def test_delete_and_leave_take_the_runtime_class_and_leave_the_machine_as_found(cluster):
    plane, host = cluster["plane"], cluster["host"]
    deleted = plane.kubectl("-n", "default", "delete", "pod", "--all", "--grace-period=0", "--force", timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    deleted = plane.kubectl("delete", "runtimenode", RN, "--timeout=60s", timeout=90)
    assert deleted.returncode == 0, deleted.stderr
    # The last crun RuntimeNode took its RuntimeClass and criops' labels with it.
    assert "NotFound" in plane.kubectl("get", "runtimeclass", "crun").stderr
    assert not [k for k in labels(cluster) if k.startswith("criops.dev/")]

    leave(plane, host)
    assert machine_state([host.name]) == cluster["machine before"]
