"""The operator's pure status logic, on real critest summaries from criops runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from criops.core import conditions, status

from testworld.filter_plugins import critest_report as report

ROOT = Path(__file__).resolve().parents[2]

# critest v1.37.0 on containerd 1.6 (Debian 12) before criops' test images were complete.
SUMMARY = report.critest_summary(
    (ROOT / "tests/fixtures/critest/containerd-1.6-debian12-runc.xml").read_text(),
    version="v1.37.0",
    handler="runc",
    failures_listed=1000,
)
T0, T1 = "2026-11-26T00:00:00Z", "2026-11-26T00:05:00Z"


def test_critest_status_matches_the_junit_totals_and_prints_passed_over_run():
    critest = status.critest_status(SUMMARY, failures_listed=5)
    assert critest["result"] == "80/95"
    assert (critest["total"], critest["passed"], critest["failed"], critest["skipped"]) == (142, 80, 15, 47)
    assert len(critest["failures"]) == 5
    assert critest["failuresOmitted"] == 10
    assert sum(g["total"] for g in critest["groups"]) == 142


def test_unexpected_failures_block_validation():
    proven, reason, message = status.validation_verdict(SUMMARY, expected=[])
    assert not proven
    assert reason == "CritestFailed"
    assert message.startswith("15 unexpected critest failure(s): ")


def test_expected_failures_do_not_block_but_stay_visible():
    proven, reason, message = status.validation_verdict(SUMMARY, expected=SUMMARY["failures"])
    assert proven
    assert reason == "CritestPassed"
    assert message == "critest v1.37.0: 80/95 passed, 15 expected failure(s)"


def test_omitted_failure_names_cannot_be_expected():
    capped = {**SUMMARY, "failures": SUMMARY["failures"][:3], "failuresOmitted": 12}
    proven, reason, _ = status.validation_verdict(capped, expected=SUMMARY["failures"])
    assert not proven
    assert reason == "CritestFailed"


def test_a_run_with_no_specs_is_not_proof():
    empty = {**SUMMARY, "total": 10, "skipped": 10, "failed": 0, "failures": []}
    assert status.validation_verdict(empty, expected=[])[:2] == (False, "NoSpecsRan")


def test_transition_time_changes_only_with_the_status():
    first = conditions.set_condition([], "Validated", "True", "CritestPassed", "ok", 1, T0)
    same = conditions.set_condition(first, "Validated", "True", "CritestPassed", "still ok", 2, T1)
    assert same[0]["lastTransitionTime"] == T0
    assert same[0]["observedGeneration"] == 2
    flipped = conditions.set_condition(same, "Validated", "False", "ProbeFailed", "down", 2, T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_conditions_keep_their_canonical_order():
    conds = conditions.set_condition([], "Ready", "True", "Proven", "", 1, T0)
    conds = conditions.set_condition(conds, "Provisioned", "True", "Converged", "", 1, T0)
    assert [c["type"] for c in conds] == ["Provisioned", "Ready"]


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        ([], "Pending"),
        ([("Provisioned", "Unknown", "Running")], "Provisioning"),
        ([("Provisioned", "True", "Converged"), ("Validated", "Unknown", "Running")], "Validating"),
        ([("Provisioned", "False", "PlaybookFailed")], "Failed"),
        ([("Validated", "False", "CritestFailed")], "Failed"),
        ([("Validated", "False", "ProbeFailed"), ("Ready", "False", "NotValidated")], "Degraded"),
        ([("Validated", "False", "NodeNotDrained"), ("Ready", "False", "NodeNotDrained")], "Pending"),
        ([("Validated", "False", "Waiting"), ("Ready", "False", "Waiting")], "Pending"),
        (
            [("Validated", "True", "CritestPassed"), ("NodeLabeled", "True", "Labeled"), ("Ready", "True", "Proven")],
            "Ready",
        ),
        (
            [
                ("Validated", "True", "CritestPassed"),
                ("NodeLabeled", "False", "NodeUpdateRefused"),
                ("Ready", "False", "NodeUpdateRefused"),
            ],
            "Failed",
        ),
        ([("Validated", "True", "CritestPassed"), ("NodeLabeled", "False", "NodeNotFound")], "Pending"),
    ],
)
def test_phase_is_derived_from_conditions(facts, expected):
    conds: list = []
    for type_, state, reason in facts:
        conds = conditions.set_condition(conds, type_, state, reason, "", 1, T0)
    assert status.phase(conds) == expected


def test_unsupported_wins_over_everything():
    conds = conditions.set_condition([], "Ready", "True", "Proven", "", 1, T0)
    assert status.phase(conds, unsupported=True) == "Unsupported"


def _node(ready: str | None, unschedulable: bool = False) -> dict:
    conds = [{"type": "Ready", "status": ready}] if ready else []
    return {"metadata": {"name": "n1"}, "spec": {"unschedulable": unschedulable}, "status": {"conditions": conds}}


def test_critest_waits_for_a_live_node_to_be_drained():
    blocker = status.critest_blocker(_node("True"))
    assert blocker is not None and blocker.startswith("Node n1 is Ready and schedulable")
    assert "kubectl drain n1" in blocker
    # Not joined yet, not Ready, cordoned, or no Node object: critest may run.
    assert status.critest_blocker(_node(None)) is None
    assert status.critest_blocker(_node("False")) is None
    assert status.critest_blocker(_node("True", unschedulable=True)) is None
    assert status.critest_blocker(None) is None


@pytest.mark.parametrize(
    ("runtime", "endpoint", "drained"),
    [
        # containerd runtimes: a throwaway containerd serves critest, the live Node keeps its pods.
        ("containerd", "unix:///run/containerd/containerd.sock", False),
        ("crun", "unix:///run/containerd/containerd.sock", False),
        ("kata", "unix:///run/containerd/containerd.sock", False),
        # No throwaway instance: critest on the Node's own CRI server, which must be drained.
        ("containerd", "unix:///run/k3s/containerd/containerd.sock", True),
        ("virtlet", "unix:///run/virtlet.sock", True),
        ("singularity-cri", "unix:///var/run/singularity.sock", True),
    ],
)
def test_only_runtimes_without_a_throwaway_instance_need_a_drained_node(runtime: str, endpoint: str, drained: bool):
    assert status.needs_drained_node(runtime, endpoint) is drained


def _kubelet(version: str | None) -> dict:
    node: dict = {"metadata": {"name": "n1"}, "status": {}}
    if version is not None:
        node["status"]["nodeInfo"] = {"kubeletVersion": version}
    return node


def test_a_v1alpha2_runtime_is_unusable_only_under_a_kubelet_that_dropped_v1alpha2():
    message = status.kubelet_cannot_use("singularity-cri", _kubelet("v1.37.2"))
    assert message is not None
    assert "singularity-cri speaks only CRI v1alpha2, which kubelet v1.37.2 on Node n1 cannot use" in message
    assert "Run instead: runtime containerd or crun" in message
    assert "KubeVirt" in (status.kubelet_cannot_use("virtlet", _kubelet("v1.26.0")) or "")
    # No Node, no kubelet yet, an older kubelet, or a CRI v1 runtime: nothing stands in the way.
    for runtime, node in [
        ("singularity-cri", None),
        ("singularity-cri", _kubelet(None)),
        ("singularity-cri", _kubelet("")),
        ("singularity-cri", _kubelet("v1.25.16")),
        ("containerd", _kubelet("v1.37.2")),
    ]:
        assert status.kubelet_cannot_use(runtime, node) is None, (runtime, node)


def test_every_waiting_or_running_reason_leaves_the_generation_unfinished():
    from criops.core.verdicts import DEGRADED, IN_PROGRESS, PROVEN, UNFINISHED, WAITING

    assert WAITING | IN_PROGRESS <= UNFINISHED
    # A proof that held is never also unfinished: the probe timer and a restart would both act on it.
    assert not PROVEN & UNFINISHED
    assert DEGRADED <= PROVEN
    for reason in WAITING:
        conds = conditions.set_condition([], "Validated", "False", reason, "", 1, T0)
        assert status.phase(conds) == "Pending"
