"""The containerd role's config filters: keep other tools' runtimes, render TOML."""

from __future__ import annotations

import tomllib

import pytest

from testworld.filter_plugins import containerd_config as config

EXISTING = """
version = 2
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia]
  runtime_type = "io.containerd.runc.v2"
  privileged_without_host_devices = false
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia.options]
    BinaryName = "/usr/bin/nvidia-container-runtime"
    SystemdCgroup = true
"""


def test_foreign_runtimes_are_those_criops_does_not_manage():
    foreign = config.containerd_foreign_runtimes(EXISTING, ["runc", "crun"])
    assert list(foreign) == ["nvidia"]
    assert foreign["nvidia"]["options"]["BinaryName"] == "/usr/bin/nvidia-container-runtime"


def test_no_config_has_no_foreign_runtimes():
    assert config.containerd_foreign_runtimes("", ["runc"]) == {}
    assert config.containerd_foreign_runtimes(" \n", ["runc"]) == {}


def test_a_config_that_is_not_toml_is_refused_naming_the_file_and_the_error():
    # Read as "no foreign runtimes", the rewrite would drop nvidia without a word.
    broken = EXISTING.replace('BinaryName = "/usr/bin/nvidia-container-runtime"', "BinaryName = /usr/bin/nvidia")
    with pytest.raises(tomllib.TOMLDecodeError) as parse_error:
        tomllib.loads(broken)
    with pytest.raises(ValueError) as refused:
        config.containerd_foreign_runtimes(broken, ["runc", "crun"], source="/etc/containerd/config.toml")
    assert str(refused.value).startswith(f"/etc/containerd/config.toml is not valid TOML ({parse_error.value})")


def test_rendered_tables_read_back_to_the_same_runtime():
    foreign = config.containerd_foreign_runtimes(EXISTING, ["runc"])
    prefix = 'plugins."io.containerd.grpc.v1.cri".containerd.runtimes.nvidia'
    rendered = config.to_toml_tables(foreign["nvidia"], prefix, "    ")
    parsed = tomllib.loads(rendered)
    assert parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["nvidia"] == foreign["nvidia"]


def test_strings_with_quotes_and_odd_keys_survive():
    table = {"runtime_type": 'io.x "quoted"\\path', "a.b": [1, "two", True]}
    parsed = tomllib.loads(config.to_toml_tables(table, "t"))
    assert parsed["t"] == table
