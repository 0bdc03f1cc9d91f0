"""The RuntimeNode CRD refuses malformed objects in the real API server, with a
message that names the field and what was expected."""

from __future__ import annotations

import copy
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from testworld.control_plane import k8s_binary

pytestmark = pytest.mark.integration

VALID = {
    "apiVersion": "criops.dev/v1alpha1",
    "kind": "RuntimeNode",
    "metadata": {"name": "placeholder"},
    "spec": {
        "nodeName": "node-1",
        "runtime": "containerd",
        "access": {"connection": "ssh", "host": "10.0.0.5", "sshKeySecretRef": {"name": "node-1-ssh"}},
    },
}


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(k8s_binary("kubectl")), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def manifest(**changes) -> dict:
    """VALID with dotted-path changes; a value of None deletes the key."""
    obj = copy.deepcopy(VALID)
    obj["metadata"]["name"] = f"rn-{uuid.uuid4().hex[:8]}"
    for path, value in changes.items():
        *parents, leaf = path.split("__")
        target = obj
        for key in parents:
            target = target.setdefault(key, {})
        if value is None:
            target.pop(leaf, None)
        else:
            target[leaf] = value
    return obj


# (changes, words the API server's refusal must contain)
MALFORMED = {
    "no-node-name": ({"spec__nodeName": None}, ["spec.nodeName", "Required value"]),
    "no-runtime": ({"spec__runtime": None}, ["spec.runtime", "Required value"]),
    "no-access": ({"spec__access": None}, ["spec.access", "Required value"]),
    "unknown-runtime": ({"spec__runtime": "docker"}, ["spec.runtime", "Unsupported value", "containerd"]),
    "node-name-not-dns": ({"spec__nodeName": "Node_1"}, ["spec.nodeName", "should match"]),
    "tcp-endpoint": ({"spec__criEndpoint": "tcp://10.0.0.5:2376"}, ["spec.criEndpoint", "unix:///"]),
    "handler-on-virtlet": (
        {"spec__runtime": "virtlet", "spec__runtimeHandler": "runc"},
        ["spec.runtimeHandler", "only valid for runtimes behind containerd"],
    ),
    "kata-with-runc-handler": (
        {"spec__runtime": "kata", "spec__runtimeHandler": "runc"},
        ["spec.runtimeHandler", "handler 'kata'"],
    ),
    "handler-with-spaces": ({"spec__runtimeHandler": "Run C"}, ["spec.runtimeHandler", "should match"]),
    "ssh-without-host": (
        {"spec__access": {"connection": "ssh", "sshKeySecretRef": {"name": "k"}}},
        ["spec.access", "connection ssh needs host and sshKeySecretRef"],
    ),
    "ssh-without-key": (
        {"spec__access": {"connection": "ssh", "host": "10.0.0.5"}},
        ["spec.access", "connection ssh needs host and sshKeySecretRef"],
    ),
    "unknown-connection": ({"spec__access__connection": "winrm"}, ["spec.access.connection", "Unsupported value"]),
    "pod-with-host-and-key": (
        {"spec__access__connection": "pod"},
        ["spec.access", "connection pod reaches the Node named by nodeName"],
    ),
    "port-out-of-range": ({"spec__access__port": 70000}, ["spec.access.port", "less than or equal to 65535"]),
    "interval-too-short": (
        {"spec__validation": {"interval": "10s"}},
        ["spec.validation.interval", "between 30s and 24h"],
    ),
    "interval-not-a-duration": ({"spec__validation": {"interval": "2d"}}, ["spec.validation.interval", "should match"]),
    "parallel-zero": (
        {"spec__validation": {"parallel": 0}},
        ["spec.validation.parallel", "greater than or equal to 1"],
    ),
    "timeout-too-short": (
        {"spec__validation": {"timeoutSeconds": 5}},
        ["spec.validation.timeoutSeconds", "greater than or equal to 60"],
    ),
    "v1alpha2-parallel": (
        {"spec__runtime": "singularity-cri", "spec__validation": {"parallel": 2}},
        ["spec.validation", "critest v1.13: validation.parallel must be 1"],
    ),
    "v1alpha2-test-images": (
        {"spec__runtime": "virtlet", "spec__validation": {"testImages": {"webServerTestImage": "r.example/web:1"}}},
        ["spec.validation", "validation.testImages unset"],
    ),
    "owned-label-prefix": ({"spec__labels": {"criops.dev/validated": "true"}}, ["spec.labels", "criops.dev/ prefix"]),
    "unknown-field": ({"spec__runtimeClass": "kata"}, ['unknown field "spec.runtimeClass"']),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_runtime_node_is_refused_with_the_field_named(kubeconfig_with_crd: Path, case: str):
    changes, words = MALFORMED[case]
    obj = manifest(**changes)
    created = kubectl(kubeconfig_with_crd, "create", "-f", "-", stdin=json.dumps(obj))
    assert created.returncode != 0, f"{case} was accepted: {created.stdout}"
    for word in words:
        assert word in created.stderr, f"{case}: {word!r} not in {created.stderr!r}"
    missing = kubectl(kubeconfig_with_crd, "get", "runtimenode", obj["metadata"]["name"])
    assert missing.returncode != 0


def test_valid_runtime_node_gets_its_defaults(kubeconfig_with_crd: Path):
    obj = manifest()
    name = obj["metadata"]["name"]
    created = kubectl(kubeconfig_with_crd, "create", "-f", "-", stdin=json.dumps(obj))
    assert created.returncode == 0, created.stderr
    stored = json.loads(kubectl(kubeconfig_with_crd, "get", "rn", name, "-o", "json").stdout)
    assert stored["spec"]["access"]["port"] == 22
    assert stored["spec"]["access"]["user"] == "root"
    assert stored["spec"]["validation"] == {"critest": True, "parallel": 1, "interval": "5m", "timeoutSeconds": 1800}
    table = kubectl(kubeconfig_with_crd, "get", "rn", name)
    assert table.stdout.split("\n")[0].split() == ["NAME", "NODE", "RUNTIME", "PHASE", "PASSED", "VERSION", "AGE"]
    kubectl(kubeconfig_with_crd, "delete", "rn", name)


def test_node_name_is_immutable(kubeconfig_with_crd: Path):
    obj = manifest()
    name = obj["metadata"]["name"]
    assert kubectl(kubeconfig_with_crd, "create", "-f", "-", stdin=json.dumps(obj)).returncode == 0
    patched = kubectl(kubeconfig_with_crd, "patch", "rn", name, "--type=merge", "-p", '{"spec":{"nodeName":"node-2"}}')
    assert patched.returncode != 0
    assert "nodeName is immutable" in patched.stderr
    kubectl(kubeconfig_with_crd, "delete", "rn", name)


@pytest.mark.parametrize("example", ["runtimenode.yaml", "runtimenode-on-node.yaml"])
def test_the_documented_example_is_accepted(kubeconfig_with_crd: Path, example: str):
    path = Path(__file__).resolve().parents[2] / "operator" / "examples" / example
    created = kubectl(kubeconfig_with_crd, "create", "--dry-run=server", "-f", str(path))
    assert created.returncode == 0, created.stderr
