"""kopf handlers for RuntimeNodes: thin — gather what kopf gives, call criops.reconcile.

Run with: kopf run --standalone --all-namespaces -m criops.handlers
(`operator/` on PYTHONPATH; see operator/manifests/deployment.yaml).

Process state (settings, the reconciler and its playbook pool, the per-object
locks, the generations finished, the probe loop) is created by the startup
handler and kept in kopf's memo; the cleanup handler stops the probe loop and
shuts the pools when the operator stops.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import kopf

from . import probing, role_variables
from .api import DIFFBASE_KEY, DIFFBASE_PREFIX, FINALIZER, GROUP, PLURAL, VERSION
from .core.spec import SpecError
from .core.verdicts import probe_due, validated_generation
from .kube import client
from .reconcile import Reconciler, TransientError
from .report import EventPoster, StatusWriter
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class OperatorState:
    """What one operator process keeps between handler calls (in kopf's memo)."""

    settings: Settings
    reconciler: Reconciler
    events: EventPoster
    api_threads: ThreadPoolExecutor
    # uid -> (name, when its light probe is due), for RuntimeNodes whose proof holds.
    schedule: dict[str, probing.Due] = field(default_factory=dict)
    # Starts the light probes that are due (set once the state exists).
    prober: probing.ProbeLoop | None = None
    # One lock per RuntimeNode: a spec handler and the probe loop never run a
    # playbook for the same node at the same time.
    locks: defaultdict[str, asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))
    # Generations handled by this process (kopf may call create and resume
    # handlers in one cycle with the same, older body).
    finished_generations: dict[str, int] = field(default_factory=dict)

    def writer(self, meta: Mapping[str, Any], name: str, generation: int, status: Mapping[str, Any]) -> StatusWriter:
        current = {k: v for k, v in dict(status).items() if k != "kopf"}
        return StatusWriter(name, generation, current, self.events.poster(dict(meta)))

    def busy(self, uid: str) -> bool:
        """Whether a kopf handler runs a step for this RuntimeNode now."""
        lock = self.locks.get(uid)
        return lock is not None and lock.locked()

    def forget(self, uid: str) -> None:
        self.locks.pop(uid, None)
        self.finished_generations.pop(uid, None)
        self.schedule.pop(uid, None)


def state_of(memo: kopf.Memo) -> OperatorState:
    state: OperatorState = memo["criops"]
    return state


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    ours = Settings.from_env()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.StatusProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=DIFFBASE_PREFIX, key=DIFFBASE_KEY)
    # criops posts its own Events, into its own namespace (RBAC allows nothing
    # else); kopf's handler chatter stays in the log.
    settings.posting.enabled = False
    # Every handler call (the schedule's, on every event, too) would log a success line;
    # criops logs each run it starts.
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
    settings.batching.worker_limit = ours.worker_limit
    settings.batching.idle_timeout = 2.0
    # Kubernetes API calls run in threads (the client is synchronous); playbook
    # runs have their own pool (ansible_run.PlaybookPool).
    api_threads = ThreadPoolExecutor(ours.api_threads, "criops-api")
    asyncio.get_running_loop().set_default_executor(api_threads)
    state = OperatorState(
        settings=ours,
        reconciler=Reconciler(ours, role_variables.load(ours.project_dir)),
        events=EventPoster(ours.namespace),
        api_threads=api_threads,
    )
    # One loop probes every RuntimeNode whose interval is due (see criops.probing);
    # the schedule follows kopf's watch (probe_schedule).
    state.prober = probing.ProbeLoop(
        state.schedule, ours.probe_tick, lambda uid, name: probe(state, uid, name), state.busy
    )
    state.prober.start()
    memo["criops"] = state


@kopf.on.login()
async def login(logger: kopf.Logger, settings: kopf.OperatorSettings, **kwargs: Any) -> kopf.AiohttpSession | None:
    """kopf's own login (in-cluster ServiceAccount, else kubeconfig), on a bounded pool.

    kopf's default session opens a connection for every request in flight, and
    each TLS connection holds a 256 KiB read buffer: with 300 RuntimeNodes handled
    at once by a slowed operator, 76 MiB of its memory were such buffers. Requests
    beyond the bound wait for a free connection instead."""
    info = kopf.login_via_client(logger=logger, settings=settings, **kwargs)
    if info is None:
        return None
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=Settings.from_env().api_connections, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
    )


@kopf.on.cleanup()
async def shut_down(memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    state = memo.get("criops")
    if state is None:
        return
    if state.prober is not None:
        await state.prober.stop()
    state.reconciler.close()
    state.api_threads.shutdown(wait=False, cancel_futures=True)
    logger.info("probe loop stopped, playbook and API thread pools shut")


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
async def reconcile(
    spec: kopf.Spec,
    status: kopf.Status,
    meta: kopf.Meta,
    name: str,
    uid: str,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Provision (when asked), validate, label: once per generation."""
    state = state_of(memo)
    generation = int(meta["generation"])
    async with state.locks[uid]:
        writer = state.writer(meta, name, generation, status)
        if state.finished_generations.get(uid) == generation or validated_generation(writer.status) == generation:
            logger.info("generation %s already validated: nothing to do", generation)
            state.finished_generations[uid] = generation
            return
        try:
            await state.reconciler.reconcile(writer, dict(spec))
        except TransientError as error:
            raise kopf.TemporaryError(str(error), delay=state.settings.retry_delay) from None
        state.finished_generations[uid] = generation


@kopf.on.event(GROUP, VERSION, PLURAL)
async def probe_schedule(type: str | None, body: kopf.Body, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Keep the schedule's entry of this RuntimeNode as its last watch event says: (name, when
    the probe is due) while its proof holds, none otherwise or once it is deleted.

    An event handler, not a kopf index: kopf holds every handler of a restarted operator
    until all objects are indexed, waking each waiting one per object indexed (5.8 CPU
    seconds instead of 1.6 for a restart with 1000 RuntimeNodes)."""
    schedule = state_of(memo).schedule
    schedule.pop(uid, None)
    if type != "DELETED":
        schedule.update(probing.schedule(body))


async def probe(state: OperatorState, uid: str, name: str) -> None:
    """The light probe (CRI Version/Status + smoke pod), started by the probe loop when
    the schedule says it is due: decided again on the RuntimeNode as the API has it now."""
    lock = state.locks[uid]
    if lock.locked():
        return  # a spec handler runs for it; the next tick looks again
    async with lock:
        body = await client.read_runtime_node(name)
        meta = (body or {}).get("metadata") or {}
        if body is None or meta.get("uid") != uid:
            state.forget(uid)  # gone (or gone and made anew): nothing of it is kept
            return
        if meta.get("deletionTimestamp"):
            return  # the delete handler's now
        spec, status = body.get("spec") or {}, body.get("status") or {}
        if spec.get("suspend"):
            return
        generation = int(meta["generation"])
        try:
            target = state.reconciler.check(spec)
        except SpecError:
            return  # reported by the spec handler
        if not probe_due(status, generation, target.validation.interval_seconds, datetime.now(UTC)):
            return
        try:
            await state.reconciler.probe(state.writer(meta, name, generation, status), target)
        except TransientError as error:
            log.warning("probe of %s postponed: %s", name, error)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def delete(spec: kopf.Spec, meta: kopf.Meta, name: str, uid: str, memo: kopf.Memo, **_: Any) -> None:
    """Take exactly criops' labels, condition and taint off the Node; nothing else.
    While pods still use the RuntimeClass that would go with it, the deletion waits."""
    state = state_of(memo)
    async with state.locks[uid]:
        try:
            await state.reconciler.cleanup(name, dict(spec), dict(meta.get("annotations") or {}))
        except TransientError as error:
            # The user deleting it is told why it stays: an Event on the RuntimeNode.
            state.events.poster(dict(meta))("Warning", "RuntimeClassInUse", str(error))
            raise kopf.TemporaryError(str(error), delay=state.settings.retry_delay) from None
    state.forget(uid)


@kopf.on.probe(id="runs")
def active_runs(memo: kopf.Memo, **_: Any) -> int:
    """Playbook slots in use, for the liveness endpoint's report."""
    return state_of(memo).reconciler.active_runs
