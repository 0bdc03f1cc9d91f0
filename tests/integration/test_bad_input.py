"""Bad inputs stop site.yml in its preflight play, name the offending variable and
what it should be, and leave the node exactly as it was.

All cases share one fresh test host: none of them may change it.
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest

from testworld.hosts import ArtifactServer, Node, Tarball, flat, node_state, run_playbook

pytestmark = pytest.mark.integration

# sha256 values that are well formed but are not the tarball's. The controller
# cache is keyed by sha256, so a dead URL is only fetched (and fails) for a
# sha256 the cache does not hold yet.
WRONG_SHA256 = hashlib.sha256(b"not the containerd tarball").hexdigest()
UNCACHED_SHA256 = hashlib.sha256(b"a tarball no mirror serves").hexdigest()


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# id: (extra vars, texts the output must contain). "{url}", "{sha256}" and
# "{dead_url}" are filled in from the local artifact server.
CASES = {
    "unknown-handler": (
        {"containerd_runtime_handlers": ["runc", "gvisor"]},
        ["containerd_runtime_handlers", "gvisor", "runc, crun"],
    ),
    "default-runtime-not-a-handler": (
        {"containerd_runtime_handlers": ["crun"], "containerd_default_runtime": "runc"},
        ["containerd_default_runtime is 'runc'", "containerd_runtime_handlers only lists crun"],
    ),
    "tarball-without-sha256": (
        {"containerd_install_method": "tarball", "containerd_tarball_url": "{url}", "containerd_tarball_sha256": ""},
        ["containerd_tarball_sha256 must be 64 lowercase hex digits"],
    ),
    "tarball-url-without-scheme": (
        {
            "containerd_install_method": "tarball",
            "containerd_tarball_url": "mirror.example/containerd.tar.gz",
            "containerd_tarball_sha256": "{sha256}",
        },
        ["containerd_tarball_url must be an http(s):// or file:// URL", "mirror.example/containerd.tar.gz"],
    ),
    "tarball-wrong-sha256": (
        {
            "containerd_install_method": "tarball",
            "containerd_tarball_url": "{url}",
            "containerd_tarball_sha256": WRONG_SHA256,
        },
        [f"containerd_tarball_sha256 ({WRONG_SHA256}) does not match the file at containerd_tarball_url ({{url}})"],
    ),
    "tarball-url-unreachable": (
        {
            "containerd_install_method": "tarball",
            "containerd_tarball_url": "{dead_url}",
            "containerd_tarball_sha256": UNCACHED_SHA256,
        },
        ["containerd_tarball_url ({dead_url})", "Connection refused"],
    ),
    "mirror-host-without-scheme": (
        {"containerd_registries_mirrors": [{"prefix": "registry.k8s.io", "mirrors": [{"host": "10.0.2.2:5000"}]}]},
        ["containerd_registries_mirrors[0] (prefix registry.k8s.io)", "'10.0.2.2:5000' must start with http://"],
    ),
    "mirror-without-hosts": (
        {"containerd_registries_mirrors": [{"prefix": "registry.k8s.io"}]},
        ["mirrors", "containerd_registries_mirrors"],
    ),
    "unsupported-distro": (
        {"node_prereqs_supported_distros": ["Ubuntu-24"]},
        ["Debian 12", "is not supported", "node_prereqs_supported_distros lists Ubuntu-24"],
    ),
    "cri-endpoint-not-unix": (
        {"cri_tools_runtime_endpoint": "tcp://127.0.0.1:1234"},
        ["cri_tools_runtime_endpoint ('tcp://127.0.0.1:1234')", "must be unix:///path endpoints"],
    ),
    # Values that would add lines to files on the node.
    "module-name-with-a-line-break": (
        {"node_prereqs_kernel_modules": [{"name": "overlay\nevil", "proof": "/sys/module/overlay"}]},
        ["node_prereqs_kernel_modules names must be module names", "overlay\\nevil"],
    ),
    "sysctl-value-with-a-line-break": (
        {"node_prereqs_sysctls": {"net.ipv4.ip_forward": "1\nkernel.panic=1"}},
        ["single-line values", "kernel.panic=1"],
    ),
    "tarball-prefix-with-a-line-break": (
        {
            "containerd_install_method": "tarball",
            "containerd_tarball_url": "{url}",
            "containerd_tarball_sha256": "{sha256}",
            "containerd_tarball_prefix": "/usr/local\nExecStartPre=/bin/touch /criops-pwned",
        },
        ["containerd_tarball_prefix must be an absolute path", "ExecStartPre"],
    ),
    "cni-subnet-without-prefix": (
        {"cni_plugins_bridge_subnet": "10.85.0.0"},
        ["cni_plugins_bridge_subnet must be an IPv4 CIDR", "(got '10.85.0.0')"],
    ),
    "cni-subnet-prefix-too-long": (
        {"cni_plugins_bridge_subnet": "10.85.0.0/40"},
        ["cni_plugins_bridge_subnet must be an IPv4 CIDR", "(got '10.85.0.0/40')"],
    ),
    "cni-subnet-octet-too-large": (
        {"cni_plugins_bridge_subnet": "10.300.0.0/16"},
        ["cni_plugins_bridge_subnet must be an IPv4 CIDR", "(got '10.300.0.0/16')"],
    ),
}


def _fill(value: object, slots: dict[str, str]) -> object:
    if isinstance(value, str):
        for key, text in slots.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, list):
        return [_fill(item, slots) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, slots) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def pristine_state(test_host: Node) -> str:
    """The fresh host's fingerprint, taken before any case runs."""
    return node_state(test_host)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_stops_before_the_node_changes(
    case: str,
    test_host: Node,
    inventory: Path,
    pristine_state: str,
    containerd_tarball: Tarball,
    artifact_server: ArtifactServer,
) -> None:
    slots = {
        "url": artifact_server.url(containerd_tarball.path),
        "sha256": containerd_tarball.sha256,
        "dead_url": f"http://127.0.0.1:{_closed_port()}/containerd.tar.gz",
    }
    extra_vars, expected = (_fill(part, slots) for part in CASES[case])

    result = run_playbook(inventory, "playbooks/site.yml", extra_vars)

    output = flat(result.stdout)
    assert result.returncode != 0, f"site.yml accepted the bad input {extra_vars}:\n{result.stdout[-4000:]}"
    for text in expected:
        assert flat(text) in output, f"output does not say {text!r}:\n{result.stdout[-4000:]}"
    # Stopped in the preflight play: the first play that changes nodes found no host left.
    assert "PLAY [Prepare every CRI node]" not in result.stdout
    assert node_state(test_host) == pristine_state, "the bad input changed the node"
