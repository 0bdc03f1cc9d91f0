"""What the operator does for one RuntimeNode, split where its jobs part:

- ``Provisioner``: site.yml on the node, when the spec asks for it;
- ``Validator``: validate.yml — critest once per generation, the light probe on the timer —
  and the verdict drawn from its reports;
- ``report.VerdictReporter``: the verdict on the Node and in the status;
- ``Reconciler``: the order of those steps for a spec, and the cleanup when a RuntimeNode goes.

kopf's handlers (criops.handlers) only gather what kopf gives them and call in here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from . import contract
from .ansible_run import PlaybookPool, RunResult
from .core import runtimeclass
from .core import status as st
from .core.runtimes import CATALOG
from .core.spec import CheckedSpec, SpecError, resolve
from .core.verdicts import Reason
from .kube import client, nodes
from .report import StatusWriter, VerdictReporter, now
from .settings import Settings

log = logging.getLogger(__name__)


class TransientError(Exception):
    """Something outside the spec is not there yet (Node, Secret, a drained Node); worth retrying."""

    def __init__(self, message: str, reason: Reason = Reason.WAITING) -> None:
        super().__init__(message)
        self.reason = reason


class MachineLocks:
    """Runs on one machine never overlap, whichever RuntimeNode asks: two may name one Node
    (a handler each), two Node names may reach one SSH address, and validation's throwaway
    containerd is one per machine."""

    def __init__(self) -> None:
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    @staticmethod
    def keys(target: CheckedSpec) -> list[str]:
        """The Node, and over SSH the address reached; sorted, so that every run takes its
        locks in one order and no two runs wait on each other."""
        keys = {f"node {target.node}"}
        if target.access.connection == "ssh":
            keys.add(f"ssh {target.access.host.lower()}:{target.access.port}")
        return sorted(keys)

    @contextlib.asynccontextmanager
    async def hold(self, target: CheckedSpec) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for key in self.keys(target):
                await stack.enter_async_context(self._locks[key])
            yield


class NodePlaybooks:
    """Runs a playbook on one RuntimeNode's node: with the SSH key its spec names, or from a
    pod on its joined Node (connection pod)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pool = PlaybookPool(settings)
        self._machines = MachineLocks()

    async def run(
        self, name: str, playbook: str, target: CheckedSpec, extravars: dict[str, Any], timeout: int, **meta: Any
    ) -> RunResult:
        ssh = None
        if target.access.connection == "ssh":
            try:
                ssh = await client.ssh_access(self.settings.namespace, target.access.secret)
            except client.SecretError as error:
                raise TransientError(str(error)) from None
        elif target.access.connection == "pod" and await client.read_node(target.node) is None:
            raise TransientError(
                f"Node {target.node} has not joined: connection pod runs on a joined Node (use ssh before it joins)"
            )
        async with self._machines.hold(target):
            return await self.pool.run(name, playbook, target, extravars, timeout, ssh=ssh, meta=meta)


class Provisioner:
    def __init__(self, playbooks: NodePlaybooks, reporter: VerdictReporter) -> None:
        self.playbooks = playbooks
        self.reporter = reporter

    async def provision(self, writer: StatusWriter, name: str, target: CheckedSpec) -> bool:
        """site.yml with the spec's extra variables; True when it converged."""
        await writer.write(("Provisioned", "Unknown", Reason.RUNNING, f"site.yml on {target.node}"))
        result = await self.playbooks.run(
            name,
            contract.SITE_PLAYBOOK,
            target,
            target.provision_vars,
            self.playbooks.settings.provision_timeout,
            generation=writer.generation,
        )
        if not result.ok:
            failed = ("Provisioned", "False", Reason.PLAYBOOK_FAILED, result.reason())
            await self.reporter.report(
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


class Validator:
    def __init__(self, playbooks: NodePlaybooks, reporter: VerdictReporter) -> None:
        self.playbooks = playbooks
        self.reporter = reporter

    @staticmethod
    async def require_drained(target: CheckedSpec) -> None:
        """Refuse a spec change that would run critest on a live Node's own CRI server.
        containerd runtimes get a throwaway instance instead: no Node to read, nothing to drain."""
        if target.validation.critest and st.needs_drained_node(target.runtime, target.endpoint):
            node = await client.read_node(target.node)
            # A kubelet that cannot use the runtime gets no critest, so nothing to drain.
            blocker = None if st.kubelet_cannot_use(target.runtime, node) else st.critest_blocker(node)
            if blocker:
                raise TransientError(blocker, reason=Reason.NODE_NOT_DRAINED)

    async def validate(self, writer: StatusWriter, name: str, target: CheckedSpec, timer: bool = False) -> None:
        """Run validate.yml (critest, or the light probe on the timer), then report the verdict.

        A CRI v1alpha2 runtime under a kubelet >= 1.26 gets the probe only (what
        the endpoint answers goes into status.runtime) and the verdict Unsupported.
        """
        unsupported = await self._kubelet_cannot_use(target)
        critest = target.validation.critest and not timer and unsupported is None
        if not timer:
            what = "with critest" if critest else "(probe only)"
            await writer.write(("Validated", "Unknown", Reason.RUNNING, f"validate.yml {what} on {target.node}"))
        variables = contract.validate_vars(target, critest, failures_listed=100000)
        result = await self.playbooks.run(
            name,
            contract.VALIDATE_PLAYBOOK,
            target,
            variables,
            target.validation.timeout_seconds + 600,
            generation=writer.generation,
            critest=critest,
        )
        fields: dict[str, Any] = {"observedGeneration": writer.generation}
        fields["lastValidated" if critest else "lastProbed"] = now()
        probe = contract.probe_report(result.report_dir, target.node) or {}
        if probe.get("runtime", {}).get("name"):
            fields["runtime"] = probe["runtime"]
        if unsupported is not None:
            fields.setdefault("runtime", {"name": target.runtime, "criApiVersion": CATALOG[target.runtime].cri_api})
            writer.unsupported = True
            await self._verdict(writer, target, False, Reason.CRI_V1ALPHA2_ONLY, unsupported, fields)
            return
        if not result.ok:
            reason = Reason.PROBE_FAILED if timer else Reason.VALIDATION_FAILED
            message = f"{'critest' if critest else 'probe'} stopped at {result.reason()}"
            await self._verdict(writer, target, False, reason, message, fields)
            return
        if critest:
            summary = contract.critest_summary(result.report_dir, target.node, target.handler)
            if summary is None:
                message = f"validate.yml succeeded but wrote no critest summary under {result.report_dir}"
                await self._verdict(writer, target, False, Reason.NO_REPORT, message, fields)
                return
            fields["critest"] = st.critest_status(summary, self.playbooks.settings.failures_listed)
            proven, reason, message = st.validation_verdict(summary, list(target.validation.expected_failures))
        else:
            proven, reason = True, Reason.PROBE_PASSED
            message = f"CRI answered and a smoke pod served HTTP through {target.handler or 'the default handler'}"
            critest_result = (writer.status.get("critest") or {}).get("result")
            if timer and target.validation.critest and critest_result:
                # The probe confirms that this generation's critest verdict still holds.
                reason, message = Reason.CRITEST_PASSED, f"{message}; critest {critest_result}"
        await self._verdict(writer, target, proven, reason, message, fields)

    @staticmethod
    async def _kubelet_cannot_use(target: CheckedSpec) -> str | None:
        """st.kubelet_cannot_use for the target's Node, read only for CRI v1alpha2 runtimes:
        every probe of every other runtime would otherwise pay a Node GET for nothing."""
        if CATALOG[target.runtime].cri_api != "v1alpha2":
            return None
        return st.kubelet_cannot_use(target.runtime, await client.read_node(target.node))

    async def _verdict(
        self, writer: StatusWriter, target: CheckedSpec, proven: bool, reason: str, message: str, fields: dict[str, Any]
    ) -> None:
        verdict = ("Validated", "True" if proven else "False", reason, message)
        await self.reporter.report(writer, target, proven, reason, message, verdict, **fields)


class Reconciler:
    """The steps for one RuntimeNode, in order; one instance per operator process."""

    def __init__(self, settings: Settings, role_variables: dict[str, frozenset[str]]) -> None:
        self.settings = settings
        # What spec.provision.extraVars may set: the roles' argument specs.
        self.role_variables = role_variables
        self.playbooks = NodePlaybooks(settings)
        self.reporter = VerdictReporter()
        self.provisioner = Provisioner(self.playbooks, self.reporter)
        self.validator = Validator(self.playbooks, self.reporter)

    @property
    def active_runs(self) -> int:
        return self.playbooks.pool.active

    def close(self) -> None:
        """Stop taking playbook runs (the operator is shutting down)."""
        self.playbooks.pool.close()

    def check(self, spec: dict[str, Any]) -> CheckedSpec:
        """The spec checked field by field (raises core.spec.SpecError)."""
        return resolve(spec, self.role_variables)

    async def reconcile(self, writer: StatusWriter, spec: dict[str, Any]) -> None:
        """Provision (when asked), validate, label. Raises TransientError when something
        outside the spec is missing; the status says what, the caller retries later."""
        try:
            target = self.check(spec)
        except SpecError as error:
            # Refused before anything touches the node; the next spec change is looked at again.
            await self.reporter.invalid_spec(writer, spec, str(error))
            return
        try:
            if spec.get("suspend"):
                await self.reporter.suspended(writer, target)
                return
            await self.ensure_runtime_class(writer, target)
            if writer.phase() != "Ready":
                await self.reporter.pending(writer, target)
            await self.validator.require_drained(target)
            if not target.provision or await self.provisioner.provision(writer, writer.name, target):
                await self.validator.validate(writer, writer.name, target)
        except TransientError as error:
            writer.post("Warning", error.reason, str(error))
            await writer.write(
                ("Validated", "False", error.reason, str(error)), ("Ready", "False", error.reason, str(error))
            )
            raise

    async def probe(self, writer: StatusWriter, target: CheckedSpec) -> None:
        """The light probe (CRI Version/Status + smoke pod) on the timer."""
        await self.validator.validate(writer, writer.name, target, timer=True)

    async def ensure_runtime_class(self, writer: StatusWriter, target: CheckedSpec) -> None:
        """The runtime's RuntimeClass (crun, kata), selecting only Nodes where criops proved the handler."""
        body = runtimeclass.desired(target.runtime)
        if body is not None and await client.apply_runtime_class(body):
            writer.post("Normal", "RuntimeClass", f"RuntimeClass {body['metadata']['name']} applied")

    async def cleanup(self, name: str, spec: dict[str, Any], annotations: dict[str, str] | None = None) -> None:
        """A RuntimeNode is going: take exactly criops' labels, condition and taint off its
        Node, and its RuntimeClass with the last RuntimeNode that needs it; nothing else.

        While unfinished pods still ask for that RuntimeClass, refuse before anything
        changes (TransientError naming them: the deletion waits and is retried), unless
        the RuntimeNode carries criops.dev/force-delete: "true"."""
        node, runtime = spec.get("nodeName"), spec.get("runtime")
        desired = runtimeclass.desired(str(runtime))
        last = desired is not None and not runtimeclass.still_needed(
            str(runtime), await client.list_runtime_nodes(), name
        )
        if desired is not None and last and not runtimeclass.forced(annotations):
            users = runtimeclass.pods_using(await client.list_pods(), desired["metadata"]["name"])
            if users:
                raise TransientError(
                    f"RuntimeClass {desired['metadata']['name']} goes with this RuntimeNode, and pods still "
                    f"use it: {', '.join(users)}. Delete them first, or annotate the RuntimeNode "
                    f'{runtimeclass.FORCE_DELETE_ANNOTATION}="true" to remove it anyway'
                )
        if isinstance(node, str) and node:
            found = await nodes.cleanup(node)
            log.info("Node %s %s", node, "cleaned up" if found else "is gone: nothing to clean up")
        if desired is not None and last:
            removed = await client.delete_runtime_class(desired["metadata"]["name"])
            log.info("RuntimeClass %s removed with the last RuntimeNode: %s", desired["metadata"]["name"], removed)
