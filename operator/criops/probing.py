"""When the light probe runs: one loop for all RuntimeNodes, not a kopf timer per object.

A kopf timer per RuntimeNode kept that object's last body (decoded JSON) and a
task, a stopper and a queue per object, also for RuntimeNodes that never probe
(suspended, failed, not proven yet). Now the operator keeps, per RuntimeNode
whose proof holds, its name and when its probe is due (``schedule``, updated
from kopf's watch events by criops.handlers.probe_schedule), and one task
(``ProbeLoop``) wakes every ``CRIOPS_PROBE_TICK`` seconds and starts the probes
that are due. Each probe reads its RuntimeNode anew with a GET and decides again
with the object as it is then (criops.handlers.probe). Each tick also gives the
memory freed since the last one back to the system (criops.memory.trim).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, NamedTuple

from . import memory
from .core.spec import SpecError, validation_interval
from .core.verdicts import probe_due_at

log = logging.getLogger(__name__)


class Due(NamedTuple):
    """A RuntimeNode's entry in the probe schedule (only this is kept)."""

    name: str
    at: float  # seconds since the epoch


def schedule(body: Mapping[str, Any]) -> dict[str, Due]:
    """The schedule's entry of one RuntimeNode: {uid: Due} while a probe can become due
    (this generation's proof holds, not suspended, not being deleted), else {}.
    An invalid interval is the spec handler's to report: no entry."""
    meta = body.get("metadata") or {}
    spec = body.get("spec") or {}
    if meta.get("deletionTimestamp") or spec.get("suspend"):
        return {}
    try:
        interval = validation_interval(spec)
    except SpecError:
        return {}
    due = probe_due_at(body.get("status") or {}, int(meta.get("generation") or 0), interval)
    if due is None:
        return {}
    return {meta["uid"]: Due(meta["name"], max(due.timestamp(), 0.0))}


def due_now(entries: Iterable[tuple[str, Due]], now: float, busy: Callable[[str], bool]) -> list[tuple[str, str]]:
    """(uid, name) of the RuntimeNodes whose probe is due at `now` and that are not busy."""
    return [(uid, due.name) for uid, due in entries if due.at <= now and not busy(uid)]


Probe = Callable[[str, str], Awaitable[None]]


class ProbeLoop:
    """Every `tick` seconds, starts `probe(uid, name)` for each due RuntimeNode of
    the schedule (uid -> Due) that `busy` does not hold and whose last probe is
    not still running. Playbook runs stay bounded by the playbook pool. Then
    `after_tick` (by default: freed memory back to the system)."""

    def __init__(
        self,
        schedule: Mapping[str, Due],
        tick: float,
        probe: Probe,
        busy: Callable[[str], bool],
        after_tick: Callable[[], object] = memory.trim,
    ) -> None:
        self.schedule, self.tick, self.probe, self.busy = schedule, tick, probe, busy
        self.after_tick = after_tick
        self.running: dict[str, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="criops-probe-loop")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop, *self.running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _probe_done(self, uid: str, _task: asyncio.Task[None]) -> None:
        self.running.pop(uid, None)

    def start_due(self, now: float) -> list[str]:
        """Start the probes due at `now`; the uids started."""
        started = []
        entries = list(self.schedule.items())
        for uid, name in due_now(entries, now, lambda uid: uid in self.running or self.busy(uid)):
            task = asyncio.create_task(self._probe(uid, name), name=f"criops-probe-{name}")
            self.running[uid] = task
            task.add_done_callback(functools.partial(self._probe_done, uid))
            started.append(uid)
        return started

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            self.start_due(time.time())
            self.after_tick()

    async def _probe(self, uid: str, name: str) -> None:
        try:
            await self.probe(uid, name)
        except asyncio.CancelledError:
            raise
        except Exception:  # One RuntimeNode's trouble never stops the loop; the next tick tries again.
            log.exception("probe of %s failed", name)
