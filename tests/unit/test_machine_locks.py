"""Runs on one machine take turns: MachineLocks, on real asyncio tasks."""

from __future__ import annotations

import asyncio
import copy

from criops.core.spec import resolve
from criops.reconcile import MachineLocks

SPEC = {
    "nodeName": "worker-1",
    "runtime": "containerd",
    "access": {"host": "10.0.0.7", "sshKeySecretRef": {"name": "node-ssh"}},
}


def target(node: str, host: str, port: int = 22, connection: str = "ssh"):
    spec = copy.deepcopy(SPEC)
    spec["nodeName"] = node
    spec["access"].update(host=host, port=port)
    if connection != "ssh":
        spec["access"] = {"connection": connection}
    return resolve(spec)


def overlapped(*targets) -> bool:
    """Whether runs holding MachineLocks for `targets`, started together, overlapped."""

    async def main() -> bool:
        locks, inside, most = MachineLocks(), 0, 0

        async def run(one) -> None:
            nonlocal inside, most
            async with locks.hold(one):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.01)
                inside -= 1

        # A deadlock would never end: wait_for turns it into a TimeoutError.
        await asyncio.wait_for(asyncio.gather(*(run(one) for one in targets)), 5)
        return most > 1

    return asyncio.run(main())


def test_one_node_and_one_ssh_address_take_turns_other_machines_do_not():
    assert not overlapped(target("worker-1", "10.0.0.7"), target("worker-1", "10.0.0.7"))
    # Two Node names, one machine: the SSH address is what they share.
    assert not overlapped(target("worker-1", "Node-A.example"), target("worker-2", "node-a.example"))
    assert overlapped(target("worker-1", "10.0.0.7"), target("worker-2", "10.0.0.8"))
    # Another port of one address is another machine (test hosts publish SSH on loopback ports).
    assert overlapped(target("worker-1", "127.0.0.1", 22121), target("worker-2", "127.0.0.1", 22122))


def test_runs_that_cross_over_all_finish():
    # Each of the last two shares its Node with one of the first two and its address with
    # the other: with the locks taken in one (sorted) order, all four finish.
    crossed = [
        target("worker-1", "10.0.0.8"),
        target("worker-2", "10.0.0.7"),
        target("worker-2", "10.0.0.8"),
        target("worker-1", "10.0.0.7"),
    ]
    assert MachineLocks.keys(crossed[0]) == ["node worker-1", "ssh 10.0.0.8:22"]
    overlapped(*crossed)


def test_pod_access_locks_the_node_only():
    assert MachineLocks.keys(target("worker-1", "", connection="pod")) == ["node worker-1"]
