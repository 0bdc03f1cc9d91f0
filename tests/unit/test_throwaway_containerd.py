"""The throwaway containerd's config: the node's, with nothing the two daemons would share."""

from __future__ import annotations

import copy
import tomllib

import pytest

from testworld.filter_plugins import throwaway_containerd as throwaway

# Shaped like `containerd config dump` of a node criops provisioned, plus what
# other setups set: a debug socket, metrics, a fixed stream port, NRI, a
# snapshotter root, a cgroup of its own, and a 1.7-style array of tables.
DUMP = """
imports = ["/etc/containerd/config.toml", "/etc/containerd/conf.d/kata.toml"]
root = "/var/lib/containerd"
state = "/run/containerd"
version = 2
oom_score = -999
[cgroup]
  path = "/containerd"
[debug]
  address = "/run/containerd/debug.sock"
  level = "info"
[grpc]
  address = "/run/containerd/containerd.sock"
  tcp_address = "0.0.0.0:2379"
[metrics]
  address = "127.0.0.1:1338"
[ttrpc]
  address = ""
[plugins]
  [plugins."io.containerd.gc.v1.scheduler"]
    pause_threshold = 0.02
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.k8s.io/pause:3.10"
    stream_server_address = "127.0.0.1"
    stream_server_port = "10010"
    netns_mounts_under_state_dir = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.crun.options]
        BinaryName = "/usr/bin/crun"
        SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.kata]
      runtime_type = "io.containerd.kata.v2"
    [plugins."io.containerd.grpc.v1.cri".registry]
      config_path = "/etc/containerd/certs.d"
  [plugins."io.containerd.nri.v1.nri"]
    disable = false
    socket_path = "/var/run/nri/nri.sock"
  [plugins."io.containerd.snapshotter.v1.overlayfs"]
    root_path = "/data/overlay"
  [[plugins."io.containerd.transfer.v1.local".unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
"""
ROOT, STATE = "/var/lib/criops-validate-containerd", "/run/criops-validate-containerd"
SOCKET = f"{STATE}/containerd.sock"


@pytest.fixture
def rewritten() -> dict:
    return tomllib.loads(throwaway.throwaway_containerd_config(DUMP, ROOT, STATE, SOCKET))


def test_paths_and_sockets_are_its_own(rewritten):
    assert (rewritten["root"], rewritten["state"]) == (ROOT, STATE)
    assert rewritten["grpc"]["address"] == SOCKET and rewritten["grpc"]["tcp_address"] == ""
    assert rewritten["ttrpc"]["address"] == f"{SOCKET}.ttrpc"
    assert rewritten["debug"]["address"] == f"{STATE}/debug.sock"
    assert rewritten["metrics"]["address"] == ""
    assert rewritten["cgroup"]["path"] == ""
    # Imports would merge the node's paths back over these.
    assert "imports" not in rewritten


def test_nothing_shared_with_the_node_daemon(rewritten):
    plugins = rewritten["plugins"]
    cri = plugins["io.containerd.grpc.v1.cri"]
    assert cri["stream_server_port"] == "0"
    assert cri["netns_mounts_under_state_dir"] is True
    assert plugins["io.containerd.nri.v1.nri"]["disable"] is True
    assert plugins["io.containerd.snapshotter.v1.overlayfs"]["root_path"] == ""


def test_what_is_proven_is_the_node_config(rewritten):
    original = tomllib.loads(DUMP)
    cri, node_cri = rewritten["plugins"]["io.containerd.grpc.v1.cri"], original["plugins"]["io.containerd.grpc.v1.cri"]
    for key in ("containerd", "cni", "registry", "sandbox_image", "stream_server_address"):
        assert cri[key] == node_cri[key], key
    assert rewritten["oom_score"] == -999 and rewritten["version"] == 2
    transfer = "io.containerd.transfer.v1.local"
    assert rewritten["plugins"][transfer] == original["plugins"][transfer]
    assert rewritten["plugins"]["io.containerd.gc.v1.scheduler"]["pause_threshold"] == 0.02


def test_no_debug_socket_when_the_node_has_none():
    dump = DUMP.replace('address = "/run/containerd/debug.sock"', 'address = ""')
    assert tomllib.loads(throwaway.throwaway_containerd_config(dump, ROOT, STATE, SOCKET))["debug"]["address"] == ""


def test_toml_document_round_trips_odd_keys_and_values():
    document = {
        "a key": 'quote " and newline\n',
        "n": [1, 2],
        "t": {"x.y": {"empty": {}, "b": True}},
        "arr": [{"k": "v"}, {"k": "w", "sub": {"z": 1}}],
    }
    assert tomllib.loads(throwaway.toml_document(copy.deepcopy(document))) == document
