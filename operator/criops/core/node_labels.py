"""What criops puts on a Node, and how to take exactly that away again.

criops records the label keys it set in an annotation on the Node (as Node
Feature Discovery does), so that cleanup removes its own labels and never one a
person or another controller set, even under the same key later.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

LABEL_RUNTIME = "criops.dev/runtime"
LABEL_VALIDATED = "criops.dev/validated"
OWNED_ANNOTATION = "criops.dev/owned-labels"
TAINT_KEY = "criops.dev/unvalidated"
NODE_CONDITION = "CRIRuntimeValidated"

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# A label name, and a label value (which may also be empty): Kubernetes' syntax.
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
# Prefixes Kubernetes keeps for itself; NodeRestriction lets kubelets set only a
# few of them and none under node-restriction.kubernetes.io, which exists for
# labels that workloads may trust because no kubelet can set them.
_RESERVED_DOMAINS = ("kubernetes.io", "k8s.io")
_OPEN_DOMAIN = "node-restriction.kubernetes.io"


def _within(prefix: str, domain: str) -> bool:
    return prefix == domain or prefix.endswith("." + domain)


def label_problem(key: str, value: str) -> str | None:
    """Why `key: value` may not be an extra Node label of a RuntimeNode, or None.

    The syntax is Kubernetes' own (so the Node patch cannot be refused for it);
    criops.dev/ is criops' own; kubernetes.io/ and k8s.io/ (with subdomains) steer
    scheduling, load balancers and topology and are refused, except
    node-restriction.kubernetes.io/.
    """
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return f"key {key!r}: the prefix before / must be a DNS subdomain of at most 253 characters"
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        return (
            f"key {key!r}: the name must be 1-63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    if _within(prefix, "criops.dev"):
        return f"key {key!r}: criops.dev/ labels are criops' own"
    if any(_within(prefix, domain) for domain in _RESERVED_DOMAINS) and not _within(prefix, _OPEN_DOMAIN):
        return (
            f"key {key!r}: kubernetes.io/ and k8s.io/ labels are Kubernetes' own "
            f"(use {_OPEN_DOMAIN}/ for labels kubelets may not set)"
        )
    if len(value) > 63 or (value and not _LABEL_NAME.match(value)):
        return (
            f"value {value!r} of {key!r}: expected at most 63 characters of letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit"
        )
    return None


# The labels criops sets itself: criops' own whatever its record says, since no
# RuntimeNode may ask for a criops.dev/ label.
CRIOPS_LABELS = (LABEL_RUNTIME, LABEL_VALIDATED)


class CorruptOwnership(ValueError):
    """criops' record of its labels on a Node cannot be read: which labels are its own is unknown."""


def owned_labels(annotations: dict[str, str] | None) -> list[str]:
    """Label keys criops recorded as its own on this Node; none without a record.

    A record that is not a JSON list of keys raises CorruptOwnership: read as
    "owns nothing", criops could neither update nor remove its own labels.
    """
    raw = (annotations or {}).get(OWNED_ANNOTATION)
    if raw is None:
        return []
    try:
        keys = json.loads(raw)
    except json.JSONDecodeError as error:
        problem = f"not JSON: {error}"
    else:
        if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
            return sorted(keys)
        problem = (
            "a list with non-string items"
            if isinstance(keys, list)
            else {dict: "an object", str: "a string", bool: "a boolean", type(None): "null"}.get(type(keys), "a number")
        )
    shown = raw if len(raw) <= 200 else raw[:200] + "..."
    raise CorruptOwnership(f"annotation {OWNED_ANNOTATION} is not a JSON list of label keys ({problem}): {shown!r}")


def desired_labels(runtime: str, validated: bool, extra: dict[str, str]) -> dict[str, str]:
    """Labels the Node should carry: the extra ones only while the runtime is proven."""
    labels = {LABEL_RUNTIME: runtime, LABEL_VALIDATED: "true" if validated else "false"}
    if validated:
        labels.update(extra)
    return labels


def label_patch(
    current: dict[str, str] | None, annotations: dict[str, str] | None, desired: dict[str, str]
) -> tuple[dict[str, Any], list[str]]:
    """A merge patch for metadata, and the desired keys left alone because someone else owns them.

    A key already on the Node that criops does not own is never overwritten.
    Raises CorruptOwnership when criops' record cannot be read (see criops_label_patch).
    """
    current = current or {}
    owned = set(owned_labels(annotations))
    conflicts = sorted(k for k, v in desired.items() if k in current and k not in owned and current[k] != v)
    applied = {k: v for k, v in desired.items() if k not in conflicts}
    labels: dict[str, str | None] = {k: v for k, v in applied.items() if current.get(k) != v}
    labels.update({k: None for k in owned - applied.keys() if k in current})
    new_owned = sorted(applied)
    patch: dict[str, Any] = {}
    if labels:
        patch["labels"] = labels
    if new_owned != sorted(owned):
        patch["annotations"] = {OWNED_ANNOTATION: json.dumps(new_owned)}
    return patch, conflicts


def cleanup_patch(current: dict[str, str] | None, annotations: dict[str, str] | None) -> dict[str, Any]:
    """A merge patch that removes exactly the labels criops owns, and its record of them.

    Raises CorruptOwnership when the record cannot be read (see criops_label_patch).
    """
    current = current or {}
    patch: dict[str, Any] = {}
    labels = {k: None for k in owned_labels(annotations) if k in current}
    if labels:
        patch["labels"] = labels
    if OWNED_ANNOTATION in (annotations or {}):
        patch["annotations"] = {OWNED_ANNOTATION: None}
    return patch


def criops_label_patch(current: dict[str, str] | None, desired: Mapping[str, str | None]) -> dict[str, Any]:
    """A merge patch of criops' own labels (CRIOPS_LABELS) alone, for a Node whose record is corrupt.

    validated=false must still reach the Node; every other label, and the record
    itself, is left for a person to look at. A None value removes the label.
    """
    current = current or {}
    labels = {
        k: v
        for k, v in desired.items()
        if k in CRIOPS_LABELS and current.get(k) != v and (v is not None or k in current)
    }
    return {"labels": labels} if labels else {}


def taints(current: list[dict[str, Any]] | None, wanted: bool) -> list[dict[str, Any]] | None:
    """The Node's taints with criops' NoSchedule taint added or removed; None when unchanged."""
    current = current or []
    others = [t for t in current if t.get("key") != TAINT_KEY]
    updated = [*others, {"key": TAINT_KEY, "value": "true", "effect": "NoSchedule"}] if wanted else others
    return None if updated == current else updated


def node_condition(validated: bool, reason: str, message: str, now: str) -> dict[str, str]:
    """The CRIRuntimeValidated condition criops reports in Node.status.conditions."""
    return {
        "type": NODE_CONDITION,
        "status": "True" if validated else "False",
        "reason": reason,
        "message": message[:1024],
        "lastHeartbeatTime": now,
        "lastTransitionTime": now,
    }
