"""Reporting a RuntimeNode's state: its status, its Events, and the verdict on its Node.

The status is written as each step starts and ends, so `kubectl get rn` shows
Provisioning/Validating while a long run goes on, and an operator that restarts
finds the truth in the object. A verdict goes to the Node first (criops' labels,
the CRIRuntimeValidated condition, the taint) and then, in one status write, to
the RuntimeNode.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .core import conditions as cond
from .core import node_labels
from .core import status as st
from .core.runtimes import CATALOG
from .core.spec import NAME, CheckedSpec
from .core.verdicts import Reason
from .kube import client, nodes

log = logging.getLogger(__name__)

# (type, status, reason, message) of one condition.
Condition = tuple[str, str, str, str]
# post(kind, reason, message): an Event about one RuntimeNode.
Post = Callable[[str, str, str], None]


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventPoster:
    """Events about RuntimeNodes, posted in the background into criops' own namespace:
    a slow API server never holds up a reconcile, and an Event lost is only logged."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._pending: set[asyncio.Task[None]] = set()

    def poster(self, metadata: dict[str, Any]) -> Post:
        """post(kind, reason, message) for the RuntimeNode with this metadata."""
        obj = {"metadata": dict(metadata)}

        def post(kind: str, reason: str, message: str) -> None:
            task = asyncio.ensure_future(self._post(obj, kind, reason, message))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

        return post

    async def _post(self, obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
        try:
            await client.post_event(self.namespace, obj, kind, reason, message)
        except Exception as error:  # An Event lost is logged, never fatal.
            log.warning("could not post Event %s: %s", reason, error)


@dataclass
class StatusWriter:
    """The RuntimeNode's status as criops last wrote it; every change goes to the API at once."""

    name: str
    generation: int
    status: dict[str, Any]
    post: Post
    # Set once the endpoint is known to speak only CRI v1alpha2 under a current kubelet.
    unsupported: bool = False

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.status.get("conditions") or [])

    def phase(self) -> str:
        phase: str = self.status.get("phase", "Pending")
        return phase

    async def write(self, *updates: Condition, **fields: Any) -> None:
        """Set conditions (type, status, reason, message) and fields; derive the phase; patch."""
        conditions = self.conditions
        stamp = now()
        for type_, state, reason, message in updates:
            conditions = cond.set_condition(conditions, type_, state, reason, message, self.generation, stamp)  # type: ignore[arg-type]
        before = self.phase()
        after = st.phase(conditions, unsupported=self.unsupported)
        patch: dict[str, Any] = {"conditions": conditions, "phase": after, **fields}
        await client.patch_status(self.name, patch)
        self.status.update(patch)
        if after != before:
            kind = "Normal" if after in ("Ready", "Provisioning", "Validating", "Pending") else "Warning"
            self.post(kind, after, f"{before} -> {after}: {_phase_message(after, conditions)}")


def _phase_message(phase: str, conditions: list[dict[str, Any]]) -> str:
    """The message of the condition that decided the phase."""
    driver = {"Provisioning": "Provisioned", "Validating": "Validated"}.get(phase)
    if driver is None and phase in ("Failed", "Degraded", "Unsupported"):
        driver = next((c["type"] for c in conditions if c.get("status") == "False"), None)
    found = cond.find(conditions, driver or "Ready") or {}  # type: ignore[arg-type]
    return found.get("message") or phase


class VerdictReporter:
    """Says what criops concluded about a node, on the Node and in the RuntimeNode's status."""

    async def report(
        self,
        writer: StatusWriter,
        target: CheckedSpec,
        validated: bool,
        reason: str,
        message: str,
        *conditions: Condition,
        **fields: Any,
    ) -> bool:
        """Node labels/condition/taint for the verdict, then one status write: `conditions`,
        NodeLabeled, Ready and `fields` together (observedGeneration last of all). True when Ready."""
        try:
            result = await nodes.apply(
                target.node,
                target.runtime,
                validated,
                reason,
                message,
                target.labels,
                target.taint_until_validated,
                now(),
            )
        except ApiException as error:
            if not client.permanent(error):
                raise
            # The same patch would be refused again: say why and stop, rather
            # than have kopf retry the handler (and critest) forever.
            refused = f"the API server refused to update Node {target.node}: {client.server_message(error)}"
            await writer.write(
                *conditions,
                ("NodeLabeled", "False", Reason.NODE_UPDATE_REFUSED, refused),
                ("Ready", "False", Reason.NODE_UPDATE_REFUSED, refused),
                **fields,
            )
            return False
        if not result.found:
            missing = f"Node {target.node} does not exist"
            await writer.write(
                *conditions,
                ("NodeLabeled", "False", Reason.NODE_NOT_FOUND, missing),
                ("Ready", "False", Reason.NODE_NOT_FOUND, missing),
                **fields,
            )
            return False
        labeled = self._labeled(writer, target, validated, result)
        ready_ok = validated and labeled[1] == "True"
        ready = ("Ready", "True", Reason.PROVEN, message) if ready_ok else ("Ready", "False", reason, message)
        await writer.write(*conditions, labeled, ready, **fields)
        return ready_ok

    @staticmethod
    def _labeled(writer: StatusWriter, target: CheckedSpec, validated: bool, result: nodes.NodeResult) -> Condition:
        """The NodeLabeled condition for what nodes.apply did."""
        if result.ownership_error:
            # One Event when it appears; the condition carries it from then on.
            previous = cond.find(writer.conditions, "NodeLabeled") or {}
            if previous.get("reason") != Reason.OWNED_LABELS_UNREADABLE:
                writer.post("Warning", Reason.OWNED_LABELS_UNREADABLE, result.ownership_error)
            return ("NodeLabeled", "False", Reason.OWNED_LABELS_UNREADABLE, result.ownership_error)
        if result.conflicts:
            conflicts = f"labels set by someone else left alone: {', '.join(result.conflicts)}"
            return ("NodeLabeled", "False", Reason.LABEL_CONFLICT, conflicts)
        desired = node_labels.desired_labels(target.runtime, validated, target.labels)
        shown = ", ".join(f"{k}={v}" for k, v in sorted(desired.items()))
        return ("NodeLabeled", "True", Reason.LABELED, f"Node {target.node}: {shown}")

    async def pending(self, writer: StatusWriter, target: CheckedSpec) -> None:
        """Not proven (yet): say so on the Node (validated=false, the taint if asked for)."""
        await self.report(writer, target, False, Reason.NOT_VALIDATED, "validation pending")

    async def suspended(self, writer: StatusWriter, target: CheckedSpec) -> None:
        await self.report(
            writer,
            target,
            False,
            Reason.SUSPENDED,
            "validation suspended",
            ("Validated", "Unknown", Reason.SUSPENDED, "spec.suspend is true: criops does not validate"),
            observedGeneration=writer.generation,
        )

    async def invalid_spec(self, writer: StatusWriter, spec: dict[str, Any], problem: str) -> None:
        """A spec refused before anything touches the node: the reason on the RuntimeNode, an
        Event, and validated=false on the Node when the spec names one criops can label."""
        writer.post("Warning", Reason.INVALID_SPEC, problem)
        await writer.write(
            ("Validated", "False", Reason.INVALID_SPEC, problem),
            ("Ready", "False", Reason.INVALID_SPEC, problem),
            observedGeneration=writer.generation,
        )
        node, runtime = spec.get("nodeName"), spec.get("runtime")
        if not (isinstance(node, str) and NAME.match(node) and isinstance(runtime, str) and runtime in CATALOG):
            return
        try:
            result = await nodes.apply(node, runtime, False, Reason.INVALID_SPEC, problem, {}, False, now())
            if result.ownership_error:
                log.warning("%s", result.ownership_error)
        except ApiException as error:
            if not client.permanent(error):
                raise
            # The spec is already reported invalid; the Node's refusal adds nothing to retry for.
            log.warning("Node %s refused validated=false: %s", node, client.server_message(error))
