"""What the operator does for one RuntimeNode: provision, validate or probe, label, report.

kopf's handlers (handlers.py) call into here; status is written as each step
starts and ends, so `kubectl get rn` shows Provisioning/Validating while a long
run goes on, and an operator that restarts finds the truth in the object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from .ansible_run import PlaybookPool, RunResult
from .core import conditions as cond
from .core import runtimeclass
from .core import status as st
from .core.runtimes import CATALOG
from .core.spec import NAME, CheckedSpec, kubelet_speaks_only_v1, validate_vars
from .core.verdicts import Reason
from .kube import client, nodes
from .settings import Settings

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class TransientError(Exception):
    """Something outside the spec is not there yet (Node, Secret, a drained Node); worth retrying."""

    def __init__(self, message: str, reason: Reason = Reason.WAITING) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass
class StatusWriter:
    """The RuntimeNode's status as criops last wrote it; every change goes to the API at once."""

    name: str
    generation: int
    status: dict[str, Any]
    post: Callable[[str, str, str], None]
    # Set once the endpoint is known to speak only CRI v1alpha2 under a current kubelet.
    unsupported: bool = False

    @property
    def conditions(self) -> list[dict[str, Any]]:
        return list(self.status.get("conditions") or [])

    def phase(self) -> str:
        return self.status.get("phase", "Pending")

    async def write(self, *updates: tuple[str, str, str, str], **fields: Any) -> None:
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


class Reconciler:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = PlaybookPool(settings)

    async def _ssh_key(self, target: CheckedSpec) -> str | None:
        if target.access.connection != "ssh":
            return None
        try:
            return await client.ssh_key(self.settings.namespace, target.access.secret)
        except client.SecretError as error:
            raise TransientError(str(error)) from None

    async def _run(
        self,
        name: str,
        playbook: str,
        target: CheckedSpec,
        extravars: dict[str, Any],
        timeout: int,
        meta: dict[str, Any],
    ) -> RunResult:
        key = await self._ssh_key(target)
        return await self.pool.run(name, playbook, target, extravars, timeout, ssh_key=key, meta=meta)

    async def report_verdict(
        self,
        writer: StatusWriter,
        target: CheckedSpec,
        validated: bool,
        reason: str,
        message: str,
        *conditions: tuple[str, str, str, str],
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
            await writer.write(
                *conditions,
                ("NodeLabeled", "False", Reason.NODE_NOT_FOUND, f"Node {target.node} does not exist"),
                ("Ready", "False", Reason.NODE_NOT_FOUND, f"Node {target.node} does not exist"),
                **fields,
            )
            return False
        shown = ", ".join(
            f"{k}={v}"
            for k, v in sorted(nodes.node_labels.desired_labels(target.runtime, validated, target.labels).items())
        )
        labeled = ("NodeLabeled", "True", Reason.LABELED, f"Node {target.node}: {shown}")
        if result.conflicts:
            labeled = (
                "NodeLabeled",
                "False",
                Reason.LABEL_CONFLICT,
                f"labels set by someone else left alone: {', '.join(result.conflicts)}",
            )
        if result.ownership_error:
            labeled = ("NodeLabeled", "False", Reason.OWNED_LABELS_UNREADABLE, result.ownership_error)
            # One Event when it appears; the condition carries it from then on.
            previous = cond.find(writer.conditions, "NodeLabeled") or {}
            if previous.get("reason") != Reason.OWNED_LABELS_UNREADABLE:
                writer.post("Warning", Reason.OWNED_LABELS_UNREADABLE, result.ownership_error)
        ready_ok = validated and labeled[1] == "True"
        ready = ("Ready", "True", Reason.PROVEN, message) if ready_ok else ("Ready", "False", reason, message)
        await writer.write(*conditions, labeled, ready, **fields)
        return ready_ok

    async def require_drained(self, target: CheckedSpec) -> None:
        """Refuse (for now) a spec change that would run critest on a live Node."""
        if target.validation.critest:
            blocker = st.critest_blocker(await client.read_node(target.node))
            if blocker:
                raise TransientError(blocker, reason=Reason.NODE_NOT_DRAINED)

    async def ensure_runtime_class(self, writer: StatusWriter, target: CheckedSpec) -> None:
        """The runtime's RuntimeClass (kata), selecting only Nodes where criops proved the handler."""
        body = runtimeclass.desired(target.runtime)
        if body is not None and await client.apply_runtime_class(body):
            writer.post("Normal", "RuntimeClass", f"RuntimeClass {body['metadata']['name']} applied")

    async def mark_unvalidated(self, spec: dict[str, Any], message: str) -> None:
        """An unusable spec: criops no longer vouches for the Node (validated=false), if it can name it."""
        node, runtime = spec.get("nodeName"), spec.get("runtime")
        if not (isinstance(node, str) and NAME.match(node) and isinstance(runtime, str) and runtime in CATALOG):
            return
        try:
            result = await nodes.apply(node, runtime, False, Reason.INVALID_SPEC, message, {}, False, now())
            if result.ownership_error:
                log.warning("%s", result.ownership_error)
        except ApiException as error:
            if not client.permanent(error):
                raise
            # The spec is already reported invalid; the Node's refusal adds nothing to retry for.
            log.warning("Node %s refused validated=false: %s", node, client.server_message(error))

    async def suspend(self, writer: StatusWriter, target: CheckedSpec) -> None:
        await self.report_verdict(
            writer,
            target,
            False,
            Reason.SUSPENDED,
            "validation suspended",
            ("Validated", "Unknown", Reason.SUSPENDED, "spec.suspend is true: criops does not validate"),
            observedGeneration=writer.generation,
        )

    async def provision(self, writer: StatusWriter, name: str, target: CheckedSpec) -> bool:
        await writer.write(("Provisioned", "Unknown", Reason.RUNNING, f"site.yml on {target.node}"))
        result = await self._run(
            name,
            "site.yml",
            target,
            target.provision_vars,
            self.settings.provision_timeout,
            {"generation": writer.generation},
        )
        if not result.ok:
            failed = ("Provisioned", "False", Reason.PLAYBOOK_FAILED, result.reason())
            await self.report_verdict(
                writer,
                target,
                False,
                Reason.PROVISIONING_FAILED,
                result.reason(),
                failed,
                observedGeneration=writer.generation,
            )
            return False
        # One write with the next step, so the phase goes straight on to Validating.
        await writer.write(
            ("Provisioned", "True", Reason.CONVERGED, f"site.yml converged in {result.seconds:.0f} s"),
            ("Validated", "Unknown", Reason.RUNNING, f"validate.yml on {target.node} is next"),
        )
        return True

    async def validate(self, writer: StatusWriter, name: str, target: CheckedSpec, timer: bool = False) -> None:
        """Run validate.yml (critest, or the light probe on the timer), then write verdict, Node and Ready."""
        critest = target.validation.critest and not timer
        what = "critest" if critest else "probe"
        if not timer:
            await writer.write(("Validated", "Unknown", Reason.RUNNING, f"validate.yml with critest on {target.node}"))
        variables = validate_vars(target, critest, failures_listed=100000)
        timeout = target.validation.timeout_seconds + 600
        result = await self._run(
            name, "validate.yml", target, variables, timeout, {"generation": writer.generation, "critest": critest}
        )
        stamp = now()
        fields: dict[str, Any] = {"observedGeneration": writer.generation}
        fields["lastValidated" if critest else "lastProbed"] = stamp
        probe = result.report(target.node, "probe.json") or {}
        if probe.get("runtime", {}).get("name"):
            fields["runtime"] = probe["runtime"]
        if probe.get("criV1") is False and probe.get("reachable") and CATALOG[target.runtime].cri_api == "v1alpha2":
            node = await client.read_node(target.node) or {}
            kubelet = node.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
            if kubelet_speaks_only_v1(kubelet):
                message = f"{target.endpoint} speaks only CRI v1alpha2; kubelet {kubelet or '(unknown)'} needs CRI v1"
                fields["runtime"] = {"name": target.runtime, "criApiVersion": "v1alpha2"}
                writer.unsupported = True
                verdict = ("Validated", "False", Reason.CRI_V1ALPHA2_ONLY, message)
                await self.report_verdict(writer, target, False, Reason.CRI_V1ALPHA2_ONLY, message, verdict, **fields)
                return
        if not result.ok:
            reason = Reason.PROBE_FAILED if timer else Reason.VALIDATION_FAILED
            message = f"{what} stopped at {result.reason()}"
            verdict = ("Validated", "False", reason, message)
            await self.report_verdict(writer, target, False, reason, message, verdict, **fields)
            return
        if critest:
            summary = result.report(target.node, target.handler or "default", "summary.json")
            if summary is None:
                message = f"validate.yml succeeded but wrote no critest summary under {result.report_dir}"
                verdict = ("Validated", "False", Reason.NO_REPORT, message)
                await self.report_verdict(writer, target, False, Reason.NO_REPORT, message, verdict, **fields)
                return
            fields["critest"] = st.critest_status(summary, self.settings.failures_listed)
            proven, reason, message = st.validation_verdict(summary, list(target.validation.expected_failures))
        else:
            proven, reason = True, Reason.PROBE_PASSED
            message = f"CRI answered and a smoke pod served HTTP through {target.handler or 'the default handler'}"
            critest_result = (writer.status.get("critest") or {}).get("result")
            if timer and target.validation.critest and critest_result:
                # The probe confirms that this generation's critest verdict still holds.
                reason, message = Reason.CRITEST_PASSED, f"{message}; critest {critest_result}"
        verdict = ("Validated", "True" if proven else "False", reason, message)
        await self.report_verdict(writer, target, proven, reason, message, verdict, **fields)
