"""`site.yml --check --diff` on a fresh node: every role predicts its changes and
the node stays exactly as it was. The node is in the kata group too (prepared
without the host check: this machine's KVM cannot boot a guest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from criops_world import Node, flat, node_state, play_recap, run_playbook, write_inventory

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def inventory(test_host: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("inventory"), test_host, kata=True)


@pytest.fixture(scope="module")
def before(test_host: Node) -> str:
    return node_state(test_host)


@pytest.fixture(scope="module")
def check_run(inventory: Path, test_host: Node, before: str) -> subprocess.CompletedProcess[str]:
    return run_playbook(
        inventory, "playbooks/site.yml", extra_vars={"kata_host_check": False}, options=["--check", "--diff"]
    )


def test_check_mode_succeeds_and_predicts_changes(check_run, test_host: Node):
    assert check_run.returncode == 0, check_run.stdout[-3000:]
    recap = play_recap(check_run.stdout)[test_host.name]
    assert recap["failed"] == 0
    # A fresh node needs everything: check mode must say so, not report a no-op.
    assert recap["changed"] >= 10, flat(check_run.stdout[-2000:])
    # --diff shows what would be written: containerd's config and crictl's.
    assert '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]' in check_run.stdout
    assert "+runtime-endpoint: unix:///run/containerd/containerd.sock" in check_run.stdout
    assert 'runtime_type = "io.containerd.kata.v2"' in check_run.stdout


def test_check_mode_leaves_the_node_untouched(check_run, test_host: Node, before: str):
    assert check_run.returncode == 0
    assert node_state(test_host) == before
