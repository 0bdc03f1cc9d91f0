"""kopf entry points for RuntimeNodes: thin — gather, call criops.reconcile, write.

Run with: kopf run --standalone --all-namespaces -m criops.handlers
(`operator/` on PYTHONPATH; see operator/manifests/deployment.yaml).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import kopf

from . import role_variables
from .core import runtimeclass
from .core.spec import SpecError, resolve
from .core.verdicts import Reason, probe_due, validated_generation
from .kube import client, nodes
from .reconcile import Reconciler, StatusWriter, TransientError
from .settings import Settings

GROUP, VERSION, PLURAL = client.GROUP, client.VERSION, client.PLURAL
FINALIZER = "criops.dev/node-cleanup"

SETTINGS = Settings.from_env()
RECONCILER = Reconciler(SETTINGS)
# What spec.provision.extraVars may set: the roles' argument specs.
ROLE_VARIABLES = role_variables.load(SETTINGS.project_dir)
# One lock per RuntimeNode: a spec handler and the probe timer never run a
# playbook for the same node at the same time.
LOCKS: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
# Generations validated by this process (kopf may call create and resume
# handlers in one cycle with the same, older body).
FINISHED_GENERATIONS: dict[str, int] = {}


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="criops.dev", key="last-handled-configuration"
    )
    # criops posts its own Events, into its own namespace (RBAC allows nothing
    # else); kopf's handler chatter stays in the log.
    settings.posting.enabled = False
    # Every timer tick would log a success line; criops logs each run it starts.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.networking.connect_timeout = 10
    # kopf retries failed API calls (its watch stream too) with these pauses,
    # then starts over: at most 5 s apart, so a spec change made just after an
    # API server outage is seen within seconds, not after a 21 s pause.
    settings.networking.error_backoffs = (1, 1, 2, 3, 5, 5, 5, 5)
    settings.networking.request_timeout = 120
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    # One worker per RuntimeNode with pending events; a finished one waits
    # idle_timeout for more before it frees its slot. A low limit makes events
    # of other objects wait for idle workers (seconds at 1000 RuntimeNodes).
    settings.batching.worker_limit = SETTINGS.worker_limit
    settings.batching.idle_timeout = 2.0
    # Kubernetes API calls run in threads (the client is synchronous); playbook
    # runs have their own pool (ansible_run.PlaybookPool).
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(SETTINGS.api_threads, "criops-api"))


# Events are posted in the background: a slow API server never holds up a reconcile.
_POSTING: set[asyncio.Task[None]] = set()


def _poster(body: kopf.Body) -> Callable[[str, str, str], None]:
    obj = {"metadata": dict(body.metadata)}

    def post(kind: str, reason: str, message: str) -> None:
        task = asyncio.ensure_future(_post(obj, kind, reason, message))
        _POSTING.add(task)
        task.add_done_callback(_POSTING.discard)

    return post


async def _post(obj: dict[str, Any], kind: str, reason: str, message: str) -> None:
    try:
        await client.post_event(SETTINGS.namespace, obj, kind, reason, message)
    except Exception as error:  # An Event lost is logged, never fatal.
        logging.getLogger(__name__).warning("could not post Event %s: %s", reason, error)


def _writer(body: kopf.Body, name: str, generation: int, status: kopf.Status) -> StatusWriter:
    current = {k: v for k, v in dict(status).items() if k != "kopf"}
    return StatusWriter(name, generation, current, _poster(body))


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    uid: str,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Provision (when asked), validate, label: once per generation."""
    generation = int(meta["generation"])
    async with LOCKS[uid]:
        writer = _writer(body, name, generation, status)
        if FINISHED_GENERATIONS.get(uid) == generation or validated_generation(writer.status) == generation:
            logger.info("generation %s already validated: nothing to do", generation)
            FINISHED_GENERATIONS[uid] = generation
            return
        try:
            target = resolve(dict(spec), ROLE_VARIABLES)
        except SpecError as error:
            # Refused before anything touches the node; the next spec change is looked at again.
            _poster(body)("Warning", Reason.INVALID_SPEC, str(error))
            await writer.write(
                ("Validated", "False", Reason.INVALID_SPEC, str(error)),
                ("Ready", "False", Reason.INVALID_SPEC, str(error)),
                observedGeneration=generation,
            )
            await RECONCILER.mark_unvalidated(spec, str(error))
            FINISHED_GENERATIONS[uid] = generation
            return
        try:
            if spec.get("suspend"):
                await RECONCILER.suspend(writer, target)
                FINISHED_GENERATIONS[uid] = generation
                return
            await RECONCILER.ensure_runtime_class(writer, target)
            if writer.phase() != "Ready":
                # Not proven yet: say so on the Node (validated=false, the taint if asked for).
                await RECONCILER.report_verdict(writer, target, False, Reason.NOT_VALIDATED, "validation pending")
            await RECONCILER.require_drained(target)
            if not target.provision or await RECONCILER.provision(writer, name, target):
                await RECONCILER.validate(writer, name, target)
        except TransientError as error:
            _poster(body)("Warning", error.reason, str(error))
            await writer.write(
                ("Validated", "False", error.reason, str(error)), ("Ready", "False", error.reason, str(error))
            )
            raise kopf.TemporaryError(str(error), delay=SETTINGS.retry_delay) from None
        FINISHED_GENERATIONS[uid] = generation


@kopf.timer(GROUP, VERSION, PLURAL, interval=SETTINGS.probe_tick, initial_delay=SETTINGS.probe_tick)
async def probe(
    body: kopf.Body,
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    uid: str,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """The light probe (CRI Version/Status + smoke pod) once per spec.validation.interval."""
    lock = LOCKS[uid]
    if lock.locked() or spec.get("suspend"):
        return
    generation = int(meta["generation"])
    try:
        target = resolve(dict(spec), ROLE_VARIABLES)
    except SpecError:
        return  # reported by the spec handler
    if not probe_due(dict(status), generation, target.validation.interval_seconds, datetime.now(UTC)):
        return
    async with lock:
        writer = _writer(body, name, generation, status)
        try:
            await RECONCILER.validate(writer, name, target, timer=True)
        except TransientError as error:
            logger.warning("probe of %s postponed: %s", name, error)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(body: kopf.Body, spec: kopf.Spec, name: str, uid: str, logger: kopf.Logger, **_: Any) -> None:
    """Take exactly criops' labels, condition and taint off the Node; nothing else."""
    node, runtime = spec.get("nodeName"), spec.get("runtime")
    async with LOCKS[uid]:
        if isinstance(node, str) and node:
            found = await nodes.cleanup(node)
            logger.info("Node %s %s", node, "cleaned up" if found else "is gone: nothing to clean up")
        desired = runtimeclass.desired(str(runtime))
        if desired is not None:
            others = await client.list_runtime_nodes()
            if not runtimeclass.still_needed(str(runtime), others, name):
                removed = await client.delete_runtime_class(desired["metadata"]["name"])
                logger.info(
                    "RuntimeClass %s removed with the last RuntimeNode: %s", desired["metadata"]["name"], removed
                )
    LOCKS.pop(uid, None)
    FINISHED_GENERATIONS.pop(uid, None)


@kopf.on.probe(id="runs")
def active_runs(**_: Any) -> int:
    """Playbook slots in use, for the liveness endpoint's report."""
    return RECONCILER.pool.active
