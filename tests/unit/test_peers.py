"""The reference roles make bench runs beside criops: their pins, their mirror, the figures."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from testworld.bench_peers import Run, Tool, nest, table

REPO = Path(__file__).resolve().parents[2]
PEERS = REPO / "hack" / "peers.sh"
# Pin prefix in hack/versions.env -> the GitHub repository of the pinned commit.
PINS = {
    "KUBESPRAY": "kubernetes-sigs/kubespray",
    "GEERLINGGUY_CONTAINERD": "geerlingguy/ansible-role-containerd",
    "NERDCTL": "containerd/nerdctl",
}


def versions() -> dict[str, str]:
    return dict(re.findall(r"^(\w+)=(\S+)$", (REPO / "hack" / "versions.env").read_text(), re.MULTILINE))


def peers_mirror(env: dict[str, str]) -> str | None:
    found = subprocess.run([str(PEERS), "--mirror"], env=env, capture_output=True, text=True, check=False)
    return found.stdout.strip() if found.returncode == 0 else None


def test_each_peer_is_pinned_by_commit_archive_url_and_sha256():
    pins = versions()
    for pin, repository in PINS.items():
        commit = pins[f"{pin}_COMMIT"]
        assert re.fullmatch(r"[0-9a-f]{40}", commit), pin
        assert pins[f"{pin}_URL"] == f"https://github.com/{repository}/archive/{commit}.tar.gz", pin
        assert pins[f"{pin}_ARCHIVE"].endswith(".tar.gz"), pin
        assert re.fullmatch(r"[0-9a-f]{64}", pins[f"{pin}_SHA256"]), pin


# Without CRIOPS_PEERS_MIRROR: the shared/peers folder beside the checkout, when it holds the archives.
BESIDE = (REPO.parent / "shared" / "peers").resolve()
BESIDE_MIRROR = f"file://{BESIDE}" if all((BESIDE / versions()[f"{pin}_ARCHIVE"]).is_file() for pin in PINS) else None


def test_the_peers_mirror_is_only_the_configured_one(tmp_path: Path):
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "CRIOPS_CACHE": str(tmp_path / "cache")}
    # The legacy runtimes' source mirror is not the peers'.
    assert peers_mirror({**env, "CRIOPS_SOURCE_MIRROR": "/srv/sources"}) == BESIDE_MIRROR
    assert peers_mirror({**env, "CRIOPS_PEERS_MIRROR": "/srv/peers/"}) == "file:///srv/peers"
    assert peers_mirror({**env, "CRIOPS_PEERS_MIRROR": "https://m.example/peers"}) == "https://m.example/peers"


MIRROR = os.environ.get("CRIOPS_PEERS_MIRROR", "") or (str(BESIDE) if BESIDE_MIRROR else "")


@pytest.mark.skipif(not MIRROR.startswith("/"), reason="no local peers' mirror (CRIOPS_PEERS_MIRROR)")
def test_the_pins_match_the_local_peers_mirror():
    pins = versions()
    for pin in PINS:
        archive = Path(MIRROR) / pins[f"{pin}_ARCHIVE"]
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == pins[f"{pin}_SHA256"], pin


def test_kubespray_gets_the_host_in_its_node_groups_and_its_variables_on_the_cluster_group():
    hosts = {"node": {"ansible_port": 2222}}
    tree = nest({"k8s_cluster": {"kube_control_plane": {}, "kube_node": {}}}, hosts, {"containerd_version": "1.6.20"})
    cluster = tree["k8s_cluster"]
    assert cluster["vars"] == {"containerd_version": "1.6.20"}
    assert cluster["children"] == {"kube_control_plane": {"hosts": hosts}, "kube_node": {"hosts": hosts}}
    assert nest({"geerlingguy": {}}, hosts, {"a": 1}) == {"geerlingguy": {"hosts": hosts, "vars": {"a": 1}}}


def runs(*values: tuple[float, float, float, int]) -> list[Run]:
    return [Run(wall, cpu, node, {"ok": ok, "changed": 0, "skipped": 2}) for wall, cpu, node, ok in values]


def test_the_table_gives_min_median_and_the_ratios_of_the_medians():
    criops = Tool("criops", Path("site.yml"), lambda *_: Path())
    criops.fresh = runs((20, 4, 6, 60), (30, 5, 7, 60), (25, 4, 8, 60))
    criops.again = runs((6, 2, 1, 50), (8, 3, 1, 50), (7, 2, 2, 50))
    peer = Tool("kubespray", Path("converge.yml"), lambda *_: Path())
    peer.fresh = runs((40, 9, 9, 80), (50, 10, 10, 80), (60, 11, 11, 80))
    peer.again = runs((28, 9, 5, 70), (35, 10, 6, 70), (30, 9, 6, 70))
    text = table("bookworm", [criops, peer])
    assert "bookworm: 3 rounds of a fresh converge and 1 no-change re-runs per tool" in text
    # tasks = ok + skipped; fresh 20 / 25; re-run 6 / 7; CPU medians 12 (4+8: the medians of each side
    # are 4 and 7, the median of the sums 12) and 4.
    assert "| criops | 62 / 52 | 20.0 / 25.0 | 6.0 / 7.0 | 12.0 (4.0 + 7.0) | 4.0 (2.0 + 1.0) | 0 |" in text
    assert "| kubespray | 82 / 72 | 40.0 / 50.0 | 28.0 / 30.0 | 20.0 (10.0 + 10.0) | 15.0 (9.0 + 6.0) | 0 |" in text
    # criops / kubespray: 25/50, 7/30, 12/20, 4/15.
    assert "| criops / kubespray | 0.50 | 0.23 | 0.60 | 0.27 |" in text
