"""The light probe's schedule: which RuntimeNodes the index keeps, and which probes one tick starts."""

from __future__ import annotations

import asyncio
import platform
import time
from datetime import UTC, datetime

from criops import memory
from criops.core import conditions
from criops.probing import Due, ProbeLoop, due_now, schedule

LAST = "2026-11-26T00:04:00Z"
LAST_TS = datetime(2026, 11, 26, 0, 4, tzinfo=UTC).timestamp()


def runtime_node(reason: str = "CritestPassed", observed: int = 2, last: str | None = LAST, **spec) -> dict:
    state = "False" if reason.endswith("Failed") else "True"
    conds = conditions.set_condition([], "Validated", state, reason, "", observed, "2026-11-26T00:00:00Z")
    status = {"conditions": conds, **({"lastProbed": last} if last else {})}
    return {
        "metadata": {"name": "worker-1", "uid": "u-1", "generation": 2},
        "spec": {"nodeName": "worker-1", "runtime": "containerd", "validation": {"interval": "5m"}, **spec},
        "status": status,
    }


def test_a_proven_runtime_node_is_due_one_interval_after_its_last_probe():
    assert schedule(runtime_node()) == {"u-1": Due("worker-1", LAST_TS + 300)}
    assert schedule(runtime_node("ProbeFailed")) == {"u-1": Due("worker-1", LAST_TS + 300)}
    assert schedule(runtime_node(validation={"interval": "1h"}))["u-1"].at == LAST_TS + 3600
    # Never probed since its validation (and no stamp at all): due at once.
    assert schedule(runtime_node(last=None))["u-1"].at == 0.0


def test_runtime_nodes_that_cannot_become_due_are_not_kept():
    assert schedule(runtime_node("CritestFailed")) == {}  # waits for a spec change
    assert schedule(runtime_node("Running")) == {}
    assert schedule(runtime_node(observed=1)) == {}  # the new generation is not proven yet
    assert schedule(runtime_node(suspend=True)) == {}
    assert schedule(runtime_node(validation={"interval": "5s"})) == {}  # the spec handler reports it
    assert schedule({**runtime_node(), "status": {}}) == {}
    deleting = runtime_node()
    deleting["metadata"]["deletionTimestamp"] = "2026-11-26T00:05:00Z"
    assert schedule(deleting) == {}
    refused = runtime_node()
    refused["status"]["conditions"] = conditions.set_condition(
        refused["status"]["conditions"], "NodeLabeled", "False", "NodeUpdateRefused", "", 2, ""
    )
    assert schedule(refused) == {}


def test_a_tick_picks_the_due_runtime_nodes_that_nothing_else_holds():
    entries = [("a", Due("a", 100.0)), ("b", Due("b", 200.0)), ("c", Due("c", 50.0))]
    assert due_now(entries, 150.0, lambda uid: False) == [("a", "a"), ("c", "c")]
    assert due_now(entries, 150.0, lambda uid: uid == "c") == [("a", "a")]
    assert due_now(entries, 10.0, lambda uid: False) == []


def test_the_loop_starts_a_due_probe_once_until_it_ends():
    async def scenario() -> None:
        release = asyncio.Event()
        calls: list[tuple[str, str]] = []

        async def probe(uid: str, name: str) -> None:
            calls.append((uid, name))
            await release.wait()

        schedule = {"a": Due("a", 0.0), "b": Due("b", 10**12), "held": Due("held", 0.0)}
        loop = ProbeLoop(schedule, 3600, probe, busy=lambda uid: uid == "held")
        assert loop.start_due(1000.0) == ["a"]
        await asyncio.sleep(0)
        assert loop.start_due(1000.0) == []  # still running
        release.set()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert loop.running == {}
        assert loop.start_due(1000.0) == ["a"]  # the index still says due: the next tick tries again
        await asyncio.sleep(0)
        await loop.stop()
        assert calls == [("a", "a"), ("a", "a")]

    asyncio.run(scenario())


def test_a_failing_probe_does_not_stop_the_loop():
    async def scenario() -> None:
        async def probe(uid: str, name: str) -> None:
            raise RuntimeError("API server said no")

        loop = ProbeLoop({"a": Due("a", 0.0)}, 0.01, probe, busy=lambda uid: False)
        loop.start()
        await asyncio.sleep(0.1)
        assert loop._loop is not None and not loop._loop.done()
        await loop.stop()
        assert loop._loop.cancelled()

    asyncio.run(scenario())


def test_each_tick_gives_freed_memory_back():
    ticks: list[float] = []

    async def scenario() -> None:
        async def probe(uid: str, name: str) -> None:
            pass

        loop = ProbeLoop({}, 0.01, probe, busy=lambda uid: False, after_tick=lambda: ticks.append(time.time()))
        loop.start()
        await asyncio.sleep(0.1)
        await loop.stop()

    asyncio.run(scenario())
    assert len(ticks) >= 3
    # The default: glibc's malloc_trim, there on every glibc system (the image is Debian).
    assert ProbeLoop({}, 1, None, busy=lambda uid: False).after_tick is memory.trim  # type: ignore[arg-type]
    assert memory.trim() is (memory.MALLOC_TRIM is not None)
    assert memory.MALLOC_TRIM is not None or "glibc" not in platform.libc_ver()[0]
