"""The kata drop-in on a config.toml the containerd role wrote on a Debian 12 node."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from testworld.filter_plugins import kata_dropin

CONFIG = (Path(__file__).resolve().parents[1] / "fixtures/containerd/config-debian12.toml").read_text()
KATA = {"runtime_type": "io.containerd.kata.v2", "options": {"ConfigPath": "/opt/kata/configuration-qemu.toml"}}
CRI = "io.containerd.grpc.v1.cri"
SOURCE = "/etc/containerd/config.toml"


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


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param("version = 2\n[grpc]\n  address = '/run/containerd/containerd.sock'\n", id="no-cri-section"),
        pytest.param(f'version = 2\n[plugins."{CRI}".containerd]\n  snapshotter = "overlayfs"\n', id="no-runtimes"),
    ],
)
def test_a_config_without_runtimes_is_refused_not_turned_into_a_kata_only_drop_in(text):
    # Such a drop-in would replace containerd's CRI section: runc and crun gone.
    with pytest.raises(ValueError, match=f"^{SOURCE} .*runc"):
        kata_dropin.kata_cri_dropin(text, "kata", KATA, source=SOURCE)


def test_a_config_that_is_not_toml_is_refused_naming_the_file_and_the_error():
    broken = CONFIG.replace('snapshotter = "overlayfs"', "snapshotter = overlayfs")
    with pytest.raises(tomllib.TOMLDecodeError) as parse_error:
        tomllib.loads(broken)
    with pytest.raises(ValueError) as refused:
        kata_dropin.kata_cri_dropin(broken, "kata", KATA, source=SOURCE)
    assert str(refused.value).startswith(f"{SOURCE} is not valid TOML ({parse_error.value})")
