"""Status as a function of facts: critest results -> Validated; conditions -> phase."""

from __future__ import annotations

from typing import Any, Literal

from .conditions import ConditionType, find, is_true
from .runtimes import CATALOG, validation_instance
from .spec import kubelet_speaks_only_v1
from .verdicts import DEGRADED, IN_PROGRESS, WAITING, Reason

Phase = Literal["Pending", "Provisioning", "Validating", "Ready", "Degraded", "Failed", "Unsupported"]


def critest_status(summary: dict[str, Any], failures_listed: int = 20) -> dict[str, Any]:
    """status.critest from validate.yml's summary.json (cri_validate's critest_summary)."""
    ran = summary["total"] - summary["skipped"]
    failures = list(summary.get("failures", []))
    return {
        "version": summary["version"],
        "handler": summary["handler"],
        "result": f"{summary['passed']}/{ran}",
        "total": summary["total"],
        "passed": summary["passed"],
        "failed": summary["failed"],
        "skipped": summary["skipped"],
        "durationSeconds": summary["durationSeconds"],
        "finishedAt": summary["finishedAt"],
        "groups": summary["groups"],
        "failures": failures[:failures_listed],
        "failuresOmitted": max(0, len(failures) - failures_listed) + summary.get("failuresOmitted", 0),
    }


def unexpected_failures(summary: dict[str, Any], expected: list[str]) -> list[str]:
    """Failed specs not listed in validation.expectedFailures (exact spec names)."""
    if summary.get("failuresOmitted"):
        # Without every name, an omitted failure cannot be shown to be expected.
        return [*summary["failures"], f"... and {summary['failuresOmitted']} more"]
    allowed = set(expected)
    return [name for name in summary.get("failures", []) if name not in allowed]


def validation_verdict(summary: dict[str, Any], expected: list[str]) -> tuple[bool, Reason, str]:
    """(proven, reason, message) for the Validated condition."""
    unexpected = unexpected_failures(summary, expected)
    ran = summary["total"] - summary["skipped"]
    if summary["total"] == 0 or ran == 0:
        return False, Reason.NO_SPECS_RAN, "critest ran no spec: check validation.focus/skip"
    if unexpected:
        shown = "; ".join(unexpected[:3]) + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else "")
        return False, Reason.CRITEST_FAILED, f"{len(unexpected)} unexpected critest failure(s): {shown}"
    expected_count = summary["failed"]
    note = f", {expected_count} expected failure(s)" if expected_count else ""
    return True, Reason.CRITEST_PASSED, f"critest {summary['version']}: {summary['passed']}/{ran} passed{note}"


def phase(conditions: list[dict[str, Any]], unsupported: bool = False) -> Phase:
    """The phase shown in `kubectl get rn`, derived from the conditions only."""
    if unsupported:
        return "Unsupported"
    if is_true(conditions, "Ready"):
        return "Ready"
    steps: tuple[tuple[ConditionType, Phase], ...] = (("Provisioned", "Provisioning"), ("Validated", "Validating"))
    for type_, running_phase in steps:
        condition = find(conditions, type_)
        if condition is None:
            continue
        if condition["status"] == "Unknown" and condition.get("reason") in IN_PROGRESS:
            return running_phase
        if condition["status"] == "False":
            if condition.get("reason") in WAITING:
                return "Pending"
            return "Degraded" if condition.get("reason") in DEGRADED else "Failed"
    labeled = find(conditions, "NodeLabeled")
    if labeled is not None and labeled["status"] == "False" and labeled.get("reason") == Reason.NODE_UPDATE_REFUSED:
        return "Failed"
    return "Pending"


def needs_drained_node(runtime: str, endpoint: str) -> bool:
    """True when critest would run on the Node's own CRI server (no throwaway instance for it)."""
    return validation_instance(runtime, endpoint) == "live"


def critest_blocker(node: dict[str, Any] | None) -> str | None:
    """Why critest must not run on this Node's CRI socket now, or None.

    critest needs the CRI server to itself: it creates and removes pods and
    images, and a running kubelet stops every pod sandbox it did not create.
    A Node whose kubelet reports Ready and that still takes pods is live; one
    that never reported (not joined yet) or is cordoned may be tested.
    (Runtimes validated on a throwaway containerd never ask: needs_drained_node.)
    """
    if node is None:
        return None
    ready = next((c for c in node.get("status", {}).get("conditions") or [] if c.get("type") == "Ready"), None)
    if ready is None or ready.get("status") != "True" or node.get("spec", {}).get("unschedulable"):
        return None
    name = node.get("metadata", {}).get("name", "?")
    return (
        f"Node {name} is Ready and schedulable: critest needs the CRI server to itself. "
        f"Drain it (kubectl drain {name} --ignore-daemonsets), or validate before it joins; "
        "spec.validation.critest: false keeps only the light probe"
    )


def kubelet_cannot_use(runtime: str, node: dict[str, Any] | None) -> str | None:
    """Why this Node's kubelet cannot use `runtime` (a CRI v1alpha2-only runtime
    under a kubelet >= 1.26), or None: no kubelet yet, an older one, or a CRI v1 runtime."""
    facts = CATALOG[runtime]
    kubelet = ((node or {}).get("status", {}).get("nodeInfo") or {}).get("kubeletVersion", "")
    if facts.cri_api != "v1alpha2" or not kubelet_speaks_only_v1(kubelet):
        return None
    name = (node or {}).get("metadata", {}).get("name", "?")
    return (
        f"{runtime} speaks only CRI v1alpha2, which kubelet {kubelet} on Node {name} cannot use "
        f"(kubelet >= 1.26 speaks only CRI v1). Run instead: {facts.instead}. "
        "criops still proves it on a Node without a kubelet or with kubelet < 1.26"
    )
