"""RuntimeClasses criops manages for runtimes that are a containerd handler of their own.

Pods asking for such a RuntimeClass land only on Nodes where criops proved the
handler: scheduling.nodeSelector names criops' own labels.
"""

from __future__ import annotations

from typing import Any

from .node_labels import LABEL_RUNTIME, LABEL_VALIDATED
from .runtimes import CATALOG

MANAGED_BY = {"app.kubernetes.io/managed-by": "criops"}
# On a RuntimeNode being deleted: remove its RuntimeClass even while pods use it.
FORCE_DELETE_ANNOTATION = "criops.dev/force-delete"
# Pod phases after which a pod needs its RuntimeClass no more.
_FINISHED = frozenset({"Succeeded", "Failed"})


def desired(runtime: str) -> dict[str, Any] | None:
    """The RuntimeClass object for a runtime (named for its handler), or None when it needs none."""
    facts = CATALOG.get(runtime)
    spec = facts.runtime_class if facts else None
    if spec is None:
        return None
    body: dict[str, Any] = {
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": spec.handler, "labels": dict(MANAGED_BY)},
        "handler": spec.handler,
        "scheduling": {"nodeSelector": {LABEL_RUNTIME: runtime, LABEL_VALIDATED: "true"}},
    }
    if spec.overhead:
        body["overhead"] = {"podFixed": dict(spec.overhead)}
    return body


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


def pods_using(pods: list[dict[str, Any]], name: str) -> list[str]:
    """Every unfinished pod that asks for the RuntimeClass `name`, as "<namespace>/<pod> on <node>",
    sorted: a kubelet needs the RuntimeClass to start or restart their sandboxes."""
    using = []
    for pod in pods:
        spec, status, meta = pod.get("spec") or {}, pod.get("status") or {}, pod.get("metadata") or {}
        if spec.get("runtimeClassName") != name or status.get("phase") in _FINISHED:
            continue
        where = spec.get("nodeName") or "no node yet"
        using.append(f"{meta.get('namespace', '')}/{meta.get('name', '')} on {where}")
    return sorted(using)


def forced(annotations: dict[str, str] | None) -> bool:
    return (annotations or {}).get(FORCE_DELETE_ANNOTATION) == "true"
