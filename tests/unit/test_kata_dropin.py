"""The kata drop-in on a config.toml the containerd role wrote on a Debian 12 node."""

from __future__ import annotations

import tomllib
from pathlib import Path

from filter_plugins import kata_dropin

CONFIG = (Path(__file__).resolve().parents[1] / "fixtures/containerd/config-debian12.toml").read_text()
KATA = {"runtime_type": "io.containerd.kata.v2", "options": {"ConfigPath": "/opt/kata/configuration-qemu.toml"}}
CRI = "io.containerd.grpc.v1.cri"


def test_the_drop_in_carries_the_whole_cri_section_plus_kata():
    dropin = tomllib.loads(kata_dropin.kata_cri_dropin(CONFIG, "kata", KATA))
    original = tomllib.loads(CONFIG)["plugins"][CRI]
    cri = dropin["plugins"][CRI]
    # containerd 1.x replaces the CRI section with an imported one: nothing may be lost.
    assert {k: v for k, v in cri.items() if k != "containerd"} == {
        k: v for k, v in original.items() if k != "containerd"
    }
    assert cri["containerd"]["runtimes"]["runc"] == original["containerd"]["runtimes"]["runc"]
    assert cri["containerd"]["runtimes"]["crun"] == original["containerd"]["runtimes"]["crun"]
    assert cri["containerd"]["runtimes"]["kata"] == KATA
    assert cri["containerd"]["default_runtime_name"] == "runc"
    # Only the CRI plugin: root, state and grpc stay config.toml's alone.
    assert set(dropin) == {"version", "plugins"}
    assert set(dropin["plugins"]) == {CRI}


def test_without_a_config_the_drop_in_holds_just_the_handler():
    dropin = tomllib.loads(kata_dropin.kata_cri_dropin("", "kata", KATA))
    assert dropin["plugins"][CRI] == {"containerd": {"runtimes": {"kata": KATA}}}
