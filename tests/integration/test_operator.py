"""The operator end to end against real parts: kube-apiserver + etcd, the operator
under its own ServiceAccount and RBAC, a podman test host reached over SSH with
the key from a Secret, containerd provisioned by site.yml, critest.

The tests share one host and one RuntimeNode and run in file order: apply ->
Ready, probe -> Degraded -> Ready, crash mid-validation -> one validation per
generation, refusal, delete -> cleanup.
"""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    NAMESPACE,
    kubectl_json,
    operator_world,
    phase_is,
    register_node,
    runs,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import Node

pytestmark = pytest.mark.integration

RN = "worker-1"
FOREIGN_LABEL = {"team": "storage"}
FOREIGN_TAINT = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}
INTERVAL = 30
# The probe (crictl + smoke pod) takes ~10 s; the timer looks every 5 s.
PROBE_SLACK = 45


@pytest.fixture(scope="module")
def world(kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, tmp_path_factory) -> Iterator[dict]:
    workdir = tmp_path_factory.mktemp("operator")
    with operator_world(control_plane, test_host, workdir, FOREIGN_LABEL, [FOREIGN_TAINT]) as world:
        yield world


def rn(world: dict) -> dict[str, Any]:
    return kubectl_json(world["plane"], "get", "runtimenode", RN)


def node(world: dict) -> dict[str, Any]:
    return kubectl_json(world["plane"], "get", "node", world["host"].name)


def junit_counts(path: Path) -> tuple[int, int, int, int]:
    """(specs, passed, failed, skipped) in a ginkgo JUnit file; ginkgo's suite setup nodes are not specs."""
    cases = [c for c in ET.parse(path).getroot().iter("testcase") if not c.get("name", "").endswith("Suite]")]
    total = failed = skipped = 0
    for case in cases:
        total += 1
        if case.find("failure") is not None or case.find("error") is not None:
            failed += 1
        elif case.find("skipped") is not None:
            skipped += 1
    return total, total - failed - skipped, failed, skipped


def events(world: dict, reason: str) -> list[dict]:
    items = kubectl_json(world["plane"], "-n", NAMESPACE, "get", "events")["items"]
    return [e for e in items if e.get("reason") == reason and e["involvedObject"].get("name") == RN]


def test_apply_provisions_validates_and_labels_the_node(world):
    host = world["host"]
    manifest = runtime_node(
        RN,
        host.name,
        ssh_port=world["port"],
        provision={"enabled": True},
        validation={"expectedFailures": DEBIAN12_EXPECTED_FAILURES, "parallel": 2, "interval": f"{INTERVAL}s"},
        taintUntilValidated=True,
        labels={"example.com/ready": "yes"},
    )
    applied = world["plane"].kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    # While it is unproven, the Node carries the taint and validated=false.
    wait_for("the unvalidated taint", lambda: any(
        t["key"] == "criops.dev/unvalidated" for t in node(world)["spec"].get("taints", [])), 120)  # fmt: skip

    status = wait_for("phase Ready", phase_is(world["plane"], RN, "Ready", "Failed"), 900, interval=5)
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert status["observedGeneration"] == 1

    # status.critest is the JUnit file's counts, counted here independently.
    validations = [r for r in runs(world["state"], RN) if r.get("critest")]
    assert len(validations) == 1
    junit = validations[0]["dir"] / "reports" / host.name / "runc" / "junit.xml"
    total, passed, failed, skipped = junit_counts(junit)
    critest = status["critest"]
    assert (critest["total"], critest["passed"], critest["failed"], critest["skipped"]) == (
        total, passed, failed, skipped)  # fmt: skip
    assert critest["result"] == f"{passed}/{total - skipped}"
    assert set(critest["failures"]) <= set(DEBIAN12_EXPECTED_FAILURES)
    assert sum(g["total"] for g in critest["groups"]) == total

    # status.runtime is what the endpoint reports.
    version = host.sh("crictl version").stdout
    assert f"RuntimeVersion:  {status['runtime']['version']}" in version
    assert status["runtime"]["name"] == "containerd"
    assert status["runtime"]["criApiVersion"] == "v1"

    conditions = {c["type"]: c for c in status["conditions"]}
    assert {t: c["status"] for t, c in conditions.items()} == {
        "Provisioned": "True", "Validated": "True", "NodeLabeled": "True", "Ready": "True"}  # fmt: skip
    assert all(c["observedGeneration"] == 1 for c in conditions.values())

    labels = node(world)["metadata"]["labels"]
    assert labels["criops.dev/runtime"] == "containerd"
    assert labels["criops.dev/validated"] == "true"
    assert labels["example.com/ready"] == "yes"
    assert labels["team"] == "storage"
    assert node(world)["spec"]["taints"] == world["taints"]
    node_condition = next(c for c in node(world)["status"]["conditions"] if c["type"] == "CRIRuntimeValidated")
    assert node_condition["status"] == "True"

    assert events(world, "Ready"), "a Ready Event for the RuntimeNode"
    printed = world["plane"].kubectl("get", "rn", RN).stdout
    assert "Ready" in printed and critest["result"] in printed


def test_probe_turns_a_broken_runtime_degraded_and_back(world):
    host = world["host"]
    host.sh("systemctl stop containerd.service")
    stopped = time.monotonic()
    status = wait_for(
        "phase Degraded", phase_is(world["plane"], RN, "Degraded"), INTERVAL + PROBE_SLACK + 30, interval=2
    )
    took = time.monotonic() - stopped
    assert took <= INTERVAL + PROBE_SLACK, f"Degraded after {took:.0f} s"
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "ProbeFailed"
    assert "containerd.sock" in validated["message"]
    assert node(world)["metadata"]["labels"]["criops.dev/validated"] == "false"
    # A critest result is not thrown away by a failed probe.
    assert status["critest"]["total"] > 0

    host.sh("systemctl start containerd.service")
    wait_for("phase Ready again", phase_is(world["plane"], RN, "Ready"), INTERVAL + PROBE_SLACK + 30, interval=2)
    assert node(world)["metadata"]["labels"]["criops.dev/validated"] == "true"
    assert events(world, "Degraded")


def test_a_crash_mid_validation_converges_with_one_validation_per_generation(world, tmp_path):
    plane, host, operator = world["plane"], world["host"], world["operator"]
    focus = {"spec": {"validation": {"focus": ["Runtime info", "PodSandbox"]}}}
    patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(focus))
    assert patched.returncode == 0, patched.stderr
    # Watched from inside the node at 0.1 s: a focused critest may run for a second only.
    seen = host.sh("for i in $(seq 1100); do pgrep -x critest >/dev/null && exit 0; sleep 0.1; done; exit 1", False)
    assert seen.returncode == 0, "critest never ran on the node"
    operator.crash()
    before = [r for r in runs(world["state"], RN) if r.get("generation") == 2 and r.get("critest")]
    assert len(before) == 1 and "status" not in before[0], "the killed run never finished"

    operator.start()
    status = wait_for("generation 2 Ready", phase_is(world["plane"], RN, "Ready", generation=2), 600, interval=3)
    generation2 = [r for r in runs(world["state"], RN) if r.get("generation") == 2 and r.get("critest")]
    assert len(generation2) == 2, generation2
    assert [r.get("status") for r in generation2] == [None, "successful"]
    assert status["critest"]["total"] == junit_counts(
        generation2[1]["dir"] / "reports" / host.name / "runc" / "junit.xml")[0]  # fmt: skip

    # Another restart: the generation is done, nothing runs again.
    operator.stop()
    operator.start()
    time.sleep(20)
    # critest ran once for generation 1 and twice (killed, then whole) for generation 2.
    assert [r["generation"] for r in runs(world["state"], RN) if r.get("critest")] == [1, 2, 2]
    assert rn(world)["status"]["phase"] == "Ready"


def test_the_operator_refuses_what_the_schema_lets_through(world):
    plane = world["plane"]
    before = len(runs(world["state"], RN))
    # A ginkgo focus the schema cannot parse: refused before anything reaches the node.
    bad = {"spec": {"validation": {"focus": ["(unclosed"]}}}
    patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(bad))
    assert patched.returncode == 0, patched.stderr
    status = wait_for("phase Failed", phase_is(world["plane"], RN, "Failed", generation=3), 60)
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "InvalidSpec"
    assert validated["message"].startswith("spec.validation.focus[0]: expected a regular expression")
    refused = wait_for("an InvalidSpec Event", lambda: events(world, "InvalidSpec"), 30)
    assert refused[0]["type"] == "Warning"
    assert len(runs(world["state"], RN)) == before
    assert node(world)["metadata"]["labels"]["criops.dev/validated"] == "false"


def test_delete_removes_exactly_what_criops_put_on_the_node(world):
    plane = world["plane"]
    deleted = plane.kubectl("delete", "runtimenode", RN, "--timeout=60s", timeout=90)
    assert deleted.returncode == 0, deleted.stderr
    current = node(world)
    labels = current["metadata"]["labels"]
    assert not [k for k in labels if k.startswith("criops.dev")], labels
    assert labels["team"] == "storage"
    assert "criops.dev/owned-labels" not in current["metadata"].get("annotations", {})
    assert current["spec"]["taints"] == world["taints"]
    assert not [c for c in current["status"].get("conditions", []) if c["type"] == "CRIRuntimeValidated"]


def test_critest_on_a_live_nodes_own_cri_server_waits_until_it_is_drained(world):
    """containerd at the catalog's socket is validated on a throwaway containerd (test_cluster.py);
    a CRI server elsewhere has none, so critest there needs the Node drained. The socket here is
    the host's containerd under another path, as a containerd at another socket would be."""
    plane, host = world["plane"], world["host"]
    live, rn_name = f"{host.name}-live", "live-node"
    host.sh("mkdir -p /run/other-cri && ln -sf /run/containerd/containerd.sock /run/other-cri/cri.sock")
    register_node(plane, live, {}, [])
    # What a joined node's kubelet reports; critest on its socket would fight its pods.
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                        "message": "kubelet is posting ready status"}]}}  # fmt: skip
    patched = plane.kubectl("patch", "node", live, "--subresource=status", "--type=merge", "-p", json.dumps(ready))
    assert patched.returncode == 0, patched.stderr
    manifest = runtime_node(
        rn_name, live, ssh_port=world["port"], criEndpoint="unix:///run/other-cri/cri.sock",
        validation={"focus": ["Runtime info"]},
    )  # fmt: skip
    assert plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest)).returncode == 0

    def validated() -> dict:
        status = kubectl_json(plane, "get", "runtimenode", rn_name).get("status", {})
        return next((c for c in status.get("conditions", []) if c["type"] == "Validated"), {})

    waiting = wait_for("NodeNotDrained", lambda: validated().get("reason") == "NodeNotDrained" and validated(), 60)
    assert waiting["message"].startswith(
        f"Node {live} is Ready and schedulable: critest needs the CRI server to itself"
    )
    assert kubectl_json(plane, "get", "runtimenode", rn_name)["status"]["phase"] == "Pending"
    assert wait_for("a NodeNotDrained Event", lambda: [
        e for e in kubectl_json(plane, "-n", NAMESPACE, "get", "events")["items"]
        if e["reason"] == "NodeNotDrained" and e["involvedObject"]["name"] == rn_name], 30)  # fmt: skip
    time.sleep(10)  # two retries later, still nothing ran on the node
    assert runs(world["state"], rn_name) == []

    assert plane.kubectl("cordon", live).returncode == 0
    wait_for("Ready once cordoned", lambda: validated().get("reason") == "CritestPassed", 180, interval=2)
    assert len(runs(world["state"], rn_name)) == 1
    assert plane.kubectl("delete", "runtimenode", rn_name, "--timeout=60s", timeout=90).returncode == 0
    host.sh("rm -rf /run/other-cri")
