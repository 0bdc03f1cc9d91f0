"""Status as a function of facts: critest results -> Validated; conditions -> phase."""

from __future__ import annotations

from typing import Any, Literal

from .conditions import find, is_true

Phase = Literal["Pending", "Provisioning", "Validating", "Ready", "Degraded", "Failed", "Unsupported"]

# Reasons that say the runtime was proven before and a later probe failed.
DEGRADED_REASONS = frozenset({"ProbeFailed"})
IN_PROGRESS_REASONS = frozenset({"Running"})


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


def validation_verdict(summary: dict[str, Any], expected: list[str]) -> tuple[bool, str, str]:
    """(proven, reason, message) for the Validated condition."""
    unexpected = unexpected_failures(summary, expected)
    ran = summary["total"] - summary["skipped"]
    if summary["total"] == 0 or ran == 0:
        return False, "NoSpecsRan", "critest ran no spec: check validation.focus/skip"
    if unexpected:
        shown = "; ".join(unexpected[:3]) + (f" (+{len(unexpected) - 3} more)" if len(unexpected) > 3 else "")
        return False, "CritestFailed", f"{len(unexpected)} unexpected critest failure(s): {shown}"
    expected_count = summary["failed"]
    note = f", {expected_count} expected failure(s)" if expected_count else ""
    return True, "CritestPassed", f"critest {summary['version']}: {summary['passed']}/{ran} passed{note}"


def phase(conditions: list[dict[str, Any]], unsupported: bool = False) -> Phase:
    """The phase shown in `kubectl get rn`, derived from the conditions only."""
    if unsupported:
        return "Unsupported"
    if is_true(conditions, "Ready"):
        return "Ready"
    for type_, running_phase in (("Provisioned", "Provisioning"), ("Validated", "Validating")):
        condition = find(conditions, type_)
        if condition is None:
            continue
        if condition["status"] == "Unknown" and condition.get("reason") in IN_PROGRESS_REASONS:
            return running_phase
        if condition["status"] == "False":
            return "Degraded" if condition.get("reason") in DEGRADED_REASONS else "Failed"
    return "Pending"
