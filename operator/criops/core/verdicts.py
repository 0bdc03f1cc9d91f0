"""What criops can say about a RuntimeNode: the reasons of its conditions, which of
them count as proven, unfinished, waiting or degraded, and the two decisions
made from them (was this generation validated? is the light probe due?).

Stated once, here: status.phase, the kopf handlers and the probe timer all read
these sets, so a reason added to one cannot be forgotten in another.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from .conditions import find


class Reason(StrEnum):
    """Reasons of the Provisioned, Validated, NodeLabeled and Ready conditions."""

    # A playbook run (site.yml or validate.yml) is going on.
    RUNNING = "Running"
    # Something outside the spec is missing (the SSH key Secret); retried.
    WAITING = "Waiting"
    # critest would share a live Node's CRI server; retried until it is drained.
    NODE_NOT_DRAINED = "NodeNotDrained"
    INVALID_SPEC = "InvalidSpec"
    SUSPENDED = "Suspended"
    CONVERGED = "Converged"
    PLAYBOOK_FAILED = "PlaybookFailed"
    PROVISIONING_FAILED = "ProvisioningFailed"
    CRITEST_PASSED = "CritestPassed"
    CRITEST_FAILED = "CritestFailed"
    NO_SPECS_RAN = "NoSpecsRan"
    NO_REPORT = "NoReport"
    VALIDATION_FAILED = "ValidationFailed"
    # The light probe (crictl + smoke pod) on the timer.
    PROBE_PASSED = "ProbePassed"
    PROBE_FAILED = "ProbeFailed"
    CRI_V1ALPHA2_ONLY = "CRIv1alpha2Only"
    NOT_VALIDATED = "NotValidated"
    LABELED = "Labeled"
    LABEL_CONFLICT = "LabelConflict"
    NODE_NOT_FOUND = "NodeNotFound"
    # criops' record of the labels it owns on the Node is corrupt: only its own
    # criops.dev/ labels were updated.
    OWNED_LABELS_UNREADABLE = "OwnedLabelsUnreadable"
    # The API server refused the Node update for good (422, 403, ...).
    NODE_UPDATE_REFUSED = "NodeUpdateRefused"
    PROVEN = "Proven"


# A run of the generation is going on: phase Provisioning/Validating.
IN_PROGRESS = frozenset({Reason.RUNNING})
# criops waits for something outside the spec: phase Pending, retried.
WAITING = frozenset({Reason.WAITING, Reason.NODE_NOT_DRAINED})
# The generation's validation has not finished: a restarted operator runs it (again).
UNFINISHED = IN_PROGRESS | WAITING
# The generation's proof held at some point: the probe timer keeps checking it.
PROVEN = frozenset({Reason.CRITEST_PASSED, Reason.PROBE_PASSED, Reason.PROBE_FAILED})
# Proven before, failing the probe now: phase Degraded rather than Failed.
DEGRADED = frozenset({Reason.PROBE_FAILED})


def validated_generation(status: dict[str, Any]) -> int | None:
    """The generation whose validation finished (whatever its verdict), from status."""
    validated = find(status.get("conditions") or [], "Validated")
    if validated is None or validated.get("reason") in UNFINISHED:
        return None
    return validated.get("observedGeneration")


def probe_due_at(status: Mapping[str, Any], generation: int, interval: int) -> datetime | None:
    """When the light probe is due: the interval after the last probe (or validation)
    while this generation's proof holds; None while it does not (nothing to probe)."""
    conditions = status.get("conditions") or []
    validated = find(conditions, "Validated")
    if validated is None or validated.get("observedGeneration") != generation:
        return None
    if validated.get("reason") not in PROVEN:
        return None
    labeled = find(conditions, "NodeLabeled")
    if (
        labeled
        and labeled.get("reason") == Reason.NODE_UPDATE_REFUSED
        and labeled.get("observedGeneration") == generation
    ):
        return None  # The Node update was refused for good: a spec or policy change comes first.
    last = status.get("lastProbed") or status.get("lastValidated")
    if not last:
        return datetime.min.replace(tzinfo=UTC)
    return datetime.fromisoformat(last.replace("Z", "+00:00")) + timedelta(seconds=interval)


def probe_due(status: Mapping[str, Any], generation: int, interval: int, at: datetime) -> bool:
    """Whether the light probe should run: the proof held for this generation and the interval passed."""
    due = probe_due_at(status, generation, interval)
    return due is not None and at >= due
