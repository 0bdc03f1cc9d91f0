"""RuntimeClasses criops manages for runtimes that are a containerd handler of their own.

Pods asking for such a RuntimeClass land only on Nodes where criops proved the
handler: scheduling.nodeSelector names criops' own labels.
"""

from __future__ import annotations

from typing import Any

from .node_labels import LABEL_RUNTIME, LABEL_VALIDATED

MANAGED_BY = {"app.kubernetes.io/managed-by": "criops"}

# runtime -> (RuntimeClass name = handler, fixed per-pod overhead of its VM).
RUNTIME_CLASSES: dict[str, dict[str, Any]] = {
    # Kata's VM: the guest kernel, agent and hypervisor, as kata-deploy accounts them.
    "kata": {"handler": "kata", "overhead": {"cpu": "250m", "memory": "160Mi"}},
}


def desired(runtime: str) -> dict[str, Any] | None:
    """The RuntimeClass object for a runtime, or None when it needs none."""
    spec = RUNTIME_CLASSES.get(runtime)
    if spec is None:
        return None
    return {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": spec["handler"], "labels": dict(MANAGED_BY)},
        "handler": spec["handler"],
        "overhead": {"podFixed": dict(spec["overhead"])},
        "scheduling": {"nodeSelector": {LABEL_RUNTIME: runtime, LABEL_VALIDATED: "true"}},
    }


def managed(obj: dict[str, Any]) -> bool:
    labels = obj.get("metadata", {}).get("labels") or {}
    return all(labels.get(k) == v for k, v in MANAGED_BY.items())


def still_needed(runtime: str, others: list[dict[str, Any]], leaving: str) -> bool:
    """Whether RuntimeNodes other than `leaving` (and not being deleted) still use the runtime."""
    return any(
        o.get("spec", {}).get("runtime") == runtime
        and o.get("metadata", {}).get("name") != leaving
        and not o.get("metadata", {}).get("deletionTimestamp")
        for o in others
    )
