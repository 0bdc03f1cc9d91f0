"""The Node side of a RuntimeNode: owned labels, the CRIRuntimeValidated condition, the taint.

Decisions are made by criops.core.node_labels; this module reads the Node and
writes only the difference, so an unchanged Node costs one GET and no write.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException

from ..core import node_labels
from . import client

log = logging.getLogger(__name__)


@dataclass
class NodeResult:
    found: bool
    changed: bool = False
    # Labels criops wanted but left alone, because someone else set them.
    conflicts: list[str] = field(default_factory=list)
    # Why criops' record of its labels on the Node could not be read; then only
    # its own criops.dev/ labels were updated, and the caller should say so.
    ownership_error: str | None = None


async def apply(
    name: str,
    runtime: str,
    validated: bool,
    reason: str,
    message: str,
    extra_labels: dict[str, str],
    taint_until_validated: bool,
    now: str,
) -> NodeResult:
    """Bring the Node's criops labels, taint and condition in line with the verdict."""
    for _attempt in range(3):
        node = await client.read_node(name)
        if node is None:
            return NodeResult(found=False)
        meta = node.get("metadata", {})
        desired = node_labels.desired_labels(runtime, validated, extra_labels)
        ownership_error = None
        try:
            patch, conflicts = node_labels.label_patch(meta.get("labels"), meta.get("annotations"), desired)
        except node_labels.CorruptOwnership as error:
            patch, conflicts = node_labels.criops_label_patch(meta.get("labels"), desired), []
            ownership_error = _ownership_error(name, error)
        taints = node_labels.taints(node.get("spec", {}).get("taints"), taint_until_validated and not validated)
        try:
            changed = await _patch(node, patch, taints)
            condition_changed = await _set_condition(node, validated, reason, message, now)
        except ApiException as error:
            if error.status == 409:
                continue
            raise
        return NodeResult(
            found=True, changed=changed or condition_changed, conflicts=conflicts, ownership_error=ownership_error
        )
    raise RuntimeError(f"Node {name} kept changing while criops updated it")


def _ownership_error(name: str, error: node_labels.CorruptOwnership) -> str:
    return (
        f"Node {name}: {error}; criops updates only {', '.join(node_labels.CRIOPS_LABELS)} and leaves every "
        f"other label alone until a person fixes or removes it (kubectl annotate node {name} "
        f"{node_labels.OWNED_ANNOTATION}-)"
    )


async def _patch(node: dict[str, Any], metadata: dict[str, Any], taints: list[dict[str, Any]] | None) -> bool:
    """One merge patch of labels/annotations and the taint list; False when there was nothing to change."""
    if not metadata and taints is None:
        return False
    # The resourceVersion makes replacing the taint list safe against concurrent writers (409 -> retry).
    body: dict[str, Any] = {"metadata": {**metadata, "resourceVersion": node["metadata"]["resourceVersion"]}}
    if taints is not None:
        body["spec"] = {"taints": taints}
    await client.patch_node(node["metadata"]["name"], body)
    return True


async def _set_condition(node: dict[str, Any], validated: bool, reason: str, message: str, now: str) -> bool:
    conditions = node.get("status", {}).get("conditions") or []
    current = next((c for c in conditions if c.get("type") == node_labels.NODE_CONDITION), None)
    wanted = node_labels.node_condition(validated, reason, message, now)
    if current is not None:
        if all(current.get(k) == wanted[k] for k in ("status", "reason", "message")):
            return False
        if current.get("status") == wanted["status"]:
            wanted["lastTransitionTime"] = current.get("lastTransitionTime", now)
    await client.patch_node_status(node["metadata"]["name"], {"status": {"conditions": [wanted]}})
    return True


async def cleanup(name: str) -> bool:
    """Remove exactly what criops put on the Node; False when the Node is gone."""
    for _attempt in range(3):
        node = await client.read_node(name)
        if node is None:
            return False
        meta = node.get("metadata", {})
        try:
            patch = node_labels.cleanup_patch(meta.get("labels"), meta.get("annotations"))
        except node_labels.CorruptOwnership as error:
            # The delete handler has no status left to report on: the log says it.
            log.warning(
                "Node %s: %s; removing only %s, other labels and the record are left for a person to look at",
                name,
                error,
                ", ".join(node_labels.CRIOPS_LABELS),
            )
            patch = node_labels.criops_label_patch(meta.get("labels"), dict.fromkeys(node_labels.CRIOPS_LABELS))
        taints = node_labels.taints(node.get("spec", {}).get("taints"), wanted=False)
        try:
            await _patch(node, patch, taints)
            conditions = node.get("status", {}).get("conditions") or []
            if any(c.get("type") == node_labels.NODE_CONDITION for c in conditions):
                delete = {"type": node_labels.NODE_CONDITION, "$patch": "delete"}
                await client.patch_node_status(name, {"status": {"conditions": [delete]}})
        except ApiException as error:
            if error.status == 409:
                continue
            raise
        return True
    raise RuntimeError(f"Node {name} kept changing while criops cleaned it up")
