"""`site.yml --check --diff` on a fresh node: every role predicts its changes and
the node stays exactly as it was. The node is in the kata group too (prepared
without the host check: this machine's KVM cannot boot a guest)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from testworld.hosts import ArtifactServer, Node, Tarball, flat, node_state, play_recap, run_playbook, write_inventory

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
    assert '+runtime-endpoint: "unix:///run/containerd/containerd.sock"' in check_run.stdout
    assert 'runtime_type = "io.containerd.kata.v2"' in check_run.stdout


def test_check_mode_predicts_a_kata_drop_in_that_keeps_runc_and_crun(check_run):
    # config.toml does not exist yet: the drop-in is predicted from the one the
    # containerd role would write, never shown holding kata alone.
    _, found, rest = check_run.stdout.partition("TASK [kata : Add the Kata handler to containerd as a drop-in]")
    assert found, check_run.stdout[-3000:]
    dropin = rest.split("\nTASK [", 1)[0]
    for handler in ("runc", "crun", "kata"):
        assert f'[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{handler}]' in dropin, dropin


def test_check_mode_leaves_the_node_untouched(check_run, test_host: Node, before: str):
    assert check_run.returncode == 0
    assert node_state(test_host) == before


def test_check_mode_predicts_a_tarball_install_on_a_fresh_node(
    inventory: Path, test_host: Node, before: str, containerd_tarball: Tarball, artifact_server: ArtifactServer
):
    # The tarball is verified on the controller; its copy to the node is
    # predicted, not made, and nothing is unpacked from a copy that is not there.
    run = run_playbook(
        inventory,
        "playbooks/site.yml",
        extra_vars={
            "kata_host_check": False,
            "containerd_install_method": "tarball",
            "containerd_tarball_url": artifact_server.url(containerd_tarball.path),
            "containerd_tarball_sha256": containerd_tarball.sha256,
        },
        options=["--check", "--diff"],
    )
    assert run.returncode == 0, run.stdout[-3000:]
    assert play_recap(run.stdout)[test_host.name]["failed"] == 0
    _, found, rest = run.stdout.partition("TASK [artifact_fetch : Copy the verified artifact to the node")
    assert found, run.stdout[-3000:]
    assert f"changed: [{test_host.name}]" in rest.split("\nTASK [", 1)[0], "the copy to the node is not predicted"
    assert "+ExecStart=/usr/local/bin/containerd" in run.stdout
    assert node_state(test_host) == before


# Last: these change the node (and remove what they wrote) to prove the fingerprint
# sees each file: path, the directory made for it (new on a fresh node too), whether
# its content is hashed.
WRITTEN = [
    ("/etc/crictl.yaml", None, True),
    ("/etc/systemd/system/containerd.service", None, True),
    (
        "/etc/systemd/system/containerd.service.d/10-criops-limits.conf",
        "/etc/systemd/system/containerd.service.d",
        True,
    ),
    # Cached downloads are named by their sha256: the listing is enough.
    ("/var/cache/criops/containerd-0000.tar.gz", "/var/cache/criops", False),
]


@pytest.mark.parametrize(("path", "made", "hashed"), WRITTEN)
def test_the_fingerprint_sees_files_site_yml_writes(test_host: Node, path: str, made: str | None, hashed: bool):
    new = made or path
    assert test_host.sh(f"test ! -e {new}", check=False).returncode == 0, f"{new} exists on the fresh node"
    pristine = node_state(test_host)
    try:
        if made:
            test_host.sh(f"mkdir {made}")
        test_host.sh(f"echo a > {path}")
        written = node_state(test_host)
        assert written != pristine
        if hashed:
            # Rewritten with the same size and time: only the content tells.
            test_host.sh(f"touch -r {path} /tmp/stamp && echo b > {path} && touch -r /tmp/stamp {path}")
            assert node_state(test_host) != written
    finally:
        test_host.sh(f"rm -f {path} /tmp/stamp")
        if made:
            test_host.sh(f"rmdir {made}")
