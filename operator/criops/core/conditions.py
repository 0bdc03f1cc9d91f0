"""Kubernetes-style conditions of a RuntimeNode.

A condition keeps its lastTransitionTime until its status really changes, so
readers can tell how long a node has been (un)ready.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

ConditionType = Literal["Provisioned", "Validated", "NodeLabeled", "Ready"]
Status = Literal["True", "False", "Unknown"]
CONDITION_TYPES: tuple[ConditionType, ...] = ("Provisioned", "Validated", "NodeLabeled", "Ready")


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: Status
    reason: str
    message: str
    # Field names as the Kubernetes condition convention spells them.
    observedGeneration: int
    lastTransitionTime: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def set_condition(
    conditions: list[dict[str, Any]],
    type_: ConditionType,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """The conditions with `type_` set; other types are kept as they are."""
    previous = find(conditions, type_)
    transition = now if previous is None or previous.get("status") != status else previous["lastTransitionTime"]
    updated = Condition(type_, status, reason, message[:32768], generation, transition).as_dict()
    others = [c for c in conditions if c.get("type") != type_]
    return sorted([*others, updated], key=lambda c: CONDITION_TYPES.index(c["type"]))


def find(conditions: list[dict[str, Any]], type_: ConditionType) -> dict[str, Any] | None:
    return next((c for c in conditions if c.get("type") == type_), None)


def is_true(conditions: list[dict[str, Any]], type_: ConditionType) -> bool:
    found = find(conditions, type_)
    return found is not None and found.get("status") == "True"
