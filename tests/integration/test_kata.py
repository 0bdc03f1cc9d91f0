"""Kata Containers on containerd, tested for what is real on a machine: the host
check boots a guest under KVM and refuses a host where that fails (node
untouched); the handler drop-in next to runc and crun; the RuntimeClass in the
real API server; the operator's Failed with the true reason for a kata handler
that cannot start; reset of exactly the kata parts. The full kata run (critest
through the handler) needs working KVM and a kata-static artifact:
CRIOPS_KATA_ARTIFACT_URL and CRIOPS_KATA_ARTIFACT_SHA256.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from testworld.cluster import (
    OperatorProcess,
    install_operator_access,
    kubectl_json,
    register_node,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import Node, flat, node_state, play_recap, run_playbook, ssh_port, write_inventory

pytestmark = pytest.mark.integration

PREPARE_ONLY = {"kata_host_check": False}


@pytest.fixture(scope="module")
def kata_inventory(test_host: Node, tmp_path_factory) -> Path:
    return write_inventory(tmp_path_factory.mktemp("kata-inventory"), test_host, kata=True)


def runtimes(node: Node) -> dict:
    info = json.loads(node.sh("crictl info -o json").stdout)
    return info["config"]["containerd"]["runtimes"]


def test_the_host_check_boots_a_guest_and_refuses_this_machines_kvm(test_host, kata_inventory, guest_kernel):
    # The site's hypervisor, already on the node: Debian's QEMU.
    test_host.sh(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null"
    )
    before = node_state(test_host)
    run = run_playbook(kata_inventory, extra_vars={
        "kata_hypervisor_path": "/usr/bin/qemu-system-x86_64",
        "kata_host_check_kernel": guest_kernel,
        "kata_host_check_timeout": 30,
    })  # fmt: skip
    if run.returncode == 0:
        pytest.skip(
            "hardware: this machine's KVM boots a Linux guest, so the host check passed and has nothing to refuse"
        )
    output = flat(run.stdout)
    assert f"KVM on {test_host.name} does not boot a Linux guest: qemu-system-x86_64 with -accel kvm" in output
    assert "Nothing was changed" in output
    assert "kata_host_check: false skips this check" in output
    # The provisioning plays never started, the scratch directory is gone.
    assert "Provision containerd nodes" not in run.stdout
    assert node_state(test_host) == before
    assert test_host.sh("ls /tmp").stdout.count("criops-kata-check") == 0


def test_the_kata_handler_is_a_drop_in_next_to_runc_and_crun(test_host, kata_inventory):
    run = run_playbook(kata_inventory, extra_vars=PREPARE_ONLY)
    assert run.returncode == 0, run.stdout[-3000:]
    found = runtimes(test_host)
    assert {"runc", "crun", "kata"} <= found.keys()
    assert found["kata"]["runtimeType"] == "io.containerd.kata.v2"
    assert found["kata"]["options"]["ConfigPath"] == "/opt/kata/share/defaults/kata-containers/configuration-qemu.toml"
    assert found["runc"]["runtimeType"] == "io.containerd.runc.v2"
    assert "vhost_vsock" in test_host.sh("cat /etc/modules-load.d/criops-kata.conf").stdout

    again = run_playbook(kata_inventory, extra_vars=PREPARE_ONLY)
    assert again.returncode == 0
    assert play_recap(again.stdout)[test_host.name]["changed"] == 0


def test_no_drop_in_without_a_readable_config_toml(test_host, kata_inventory):
    # The drop-in replaces containerd's CRI section: written without config.toml's,
    # it would hold kata alone and take runc and crun away.
    playbook = kata_inventory.parent / "kata-only.yml"
    playbook.write_text(json.dumps([
        {"name": "Kata only", "hosts": "kata", "become": True, "gather_facts": False, "roles": ["kata"]},
    ]))  # fmt: skip
    config, dropin = "/etc/containerd/config.toml", "/etc/containerd/conf.d/20-criops-kata.toml"
    written = test_host.sh(f"sha256sum {dropin}").stdout
    test_host.sh(f"cp -p {config} /root/config.toml.kept")
    try:
        for breakage, words in {
            f"rm -rf {config}": f"{config} does not exist on {test_host.name}",
            f"rm -rf {config} && mkdir {config}": f"{config} on {test_host.name} cannot be read",
            f"rm -rf {config} && echo '[plugins' > {config}": f"{config} is not valid TOML (",
        }.items():
            test_host.sh(breakage)
            run = run_playbook(kata_inventory, str(playbook), extra_vars=PREPARE_ONLY)
            assert run.returncode != 0, f"{breakage}: the kata role went on\n{run.stdout[-3000:]}"
            assert words in flat(run.stdout), run.stdout[-3000:]
            assert test_host.sh(f"sha256sum {dropin}").stdout == written, f"{breakage}: the drop-in changed"
    finally:
        test_host.sh(f"rm -rf {config} && mv /root/config.toml.kept {config}")
    assert {"runc", "crun", "kata"} <= runtimes(test_host).keys()


@pytest.fixture(scope="module")
def kata_operator(kubeconfig_with_crd, control_plane: ControlPlane, test_host: Node, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kata-operator")
    kubeconfig = install_operator_access(control_plane, workdir)
    register_node(control_plane, test_host.name, {}, [])
    (workdir / "state").mkdir()
    operator = OperatorProcess(kubeconfig, workdir / "state", workdir / "operator.log").start()
    try:
        yield operator
    finally:
        operator.stop()
        print(operator.log())


def test_the_operator_reports_a_kata_handler_that_cannot_start(test_host, control_plane, kata_operator):
    manifest = runtime_node("kata-node", test_host.name, "kata", ssh_port(test_host.name))
    assert control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest)).returncode == 0

    runtime_class = wait_for(
        "RuntimeClass kata", lambda: control_plane.kubectl("get", "runtimeclass", "kata").returncode == 0, 60
    )
    assert runtime_class
    kata_class = kubectl_json(control_plane, "get", "runtimeclass", "kata")
    assert kata_class["handler"] == "kata"
    assert kata_class["scheduling"]["nodeSelector"] == {"criops.dev/runtime": "kata", "criops.dev/validated": "true"}
    assert kata_class["overhead"]["podFixed"] == {"cpu": "250m", "memory": "160Mi"}

    def failed() -> dict | bool:
        status = kubectl_json(control_plane, "get", "runtimenode", "kata-node").get("status", {})
        return status if status.get("phase") == "Failed" else False

    status = wait_for("phase Failed", failed, 300, interval=3)
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "ValidationFailed"
    # The true reason: the handler is registered, but Kata itself is not installed.
    assert validated["message"].endswith(
        "Run the handler's own checks (kata): /opt/kata/bin/kata-runtime: not installed"
    )
    assert status["runtime"]["name"] == "containerd"
    labels = kubectl_json(control_plane, "get", "node", test_host.name)["metadata"]["labels"]
    assert labels["criops.dev/runtime"] == "kata"
    assert labels["criops.dev/validated"] == "false"

    deleted = control_plane.kubectl("delete", "runtimenode", "kata-node", "--timeout=60s", timeout=90)
    assert deleted.returncode == 0, deleted.stderr
    # The last kata RuntimeNode took the RuntimeClass with it.
    assert control_plane.kubectl("get", "runtimeclass", "kata").returncode != 0


def reset_kata_playbook(inventory: Path) -> Path:
    """A playbook beside `inventory` that runs only the kata role's reset."""
    playbook = inventory.parent / "reset-kata.yml"
    playbook.write_text(json.dumps([{
        "name": "Reset Kata only", "hosts": "kata", "become": True, "gather_facts": False,
        "tasks": [{"name": "Remove Kata", "ansible.builtin.include_role": {"name": "kata", "tasks_from": "reset"}}],
    }]))  # fmt: skip
    return playbook


def test_reset_removes_exactly_the_kata_parts(test_host, kata_inventory):
    run = run_playbook(kata_inventory, str(reset_kata_playbook(kata_inventory)), extra_vars=PREPARE_ONLY)
    assert run.returncode == 0, run.stdout[-3000:]
    found = runtimes(test_host)
    assert "kata" not in found
    assert {"runc", "crun"} <= found.keys()
    assert test_host.sh("test -e /etc/modules-load.d/criops-kata.conf", check=False).returncode != 0
    assert test_host.sh("systemctl is-active containerd").stdout.strip() == "active"


@pytest.fixture(scope="module")
def kata_artifact(tmp_path_factory) -> tuple[str, str]:
    """A kata-static-shaped artifact (members ./opt/kata/...) with stand-ins: enough for the download path."""
    path = tmp_path_factory.mktemp("kata-artifact") / "kata-static-0.0.0-amd64.tar.xz"
    members = {
        "./opt/kata/bin/containerd-shim-kata-v2": ("#!/bin/sh\necho stand-in >&2\nexit 1\n", 0o755),
        "./opt/kata/share/defaults/kata-containers/configuration-qemu.toml": ("# stand-in\n", 0o644),
    }
    with tarfile.open(path, "w:xz") as archive:
        for name, (text, mode) in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(text.encode()), mode
            archive.addfile(info, io.BytesIO(text.encode()))
    return path.as_uri(), hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_kata_artifact_that_fails_its_sha256_stops_before_the_node_changes(test_host, kata_inventory, kata_artifact):
    url, _ = kata_artifact
    wrong = hashlib.sha256(b"not the kata artifact").hexdigest()
    before = node_state(test_host)
    run = run_playbook(
        kata_inventory, extra_vars={**PREPARE_ONLY, "kata_artifact_url": url, "kata_artifact_sha256": wrong}
    )
    assert run.returncode != 0, run.stdout[-3000:]
    assert f"kata_artifact_sha256 ({wrong}) does not match the file at kata_artifact_url ({url})" in flat(run.stdout)
    assert "PLAY [Prepare every CRI node]" not in run.stdout
    assert node_state(test_host) == before


def test_a_kata_artifact_is_installed_once_and_reset(test_host, kata_inventory, kata_artifact):
    url, sha256 = kata_artifact
    artifact = {**PREPARE_ONLY, "kata_artifact_url": url, "kata_artifact_sha256": sha256}
    run = run_playbook(kata_inventory, extra_vars=artifact)
    assert run.returncode == 0, run.stdout[-3000:]
    assert test_host.sh("cat /opt/kata/.criops-artifact-sha256").stdout.strip() == sha256
    shim = test_host.sh("readlink /usr/local/bin/containerd-shim-kata-v2").stdout.strip()
    assert shim == "/opt/kata/bin/containerd-shim-kata-v2"
    assert "stand-in" in test_host.sh("cat /opt/kata/share/defaults/kata-containers/configuration-qemu.toml").stdout

    again = run_playbook(kata_inventory, extra_vars=artifact)
    assert again.returncode == 0, again.stdout[-3000:]
    assert play_recap(again.stdout)[test_host.name]["changed"] == 0, again.stdout[-3000:]

    reset = run_playbook(kata_inventory, str(reset_kata_playbook(kata_inventory)), extra_vars=artifact)
    assert reset.returncode == 0, reset.stdout[-3000:]
    assert test_host.sh("test -e /opt/kata", check=False).returncode != 0
    assert {"runc", "crun"} <= runtimes(test_host).keys()


@pytest.mark.skipif(
    not os.environ.get("CRIOPS_KATA_ARTIFACT_URL") or not os.environ.get("CRIOPS_KATA_ARTIFACT_SHA256"),
    reason="artifact: the full kata run needs a kata-static artifact (set CRIOPS_KATA_ARTIFACT_URL and "
    "CRIOPS_KATA_ARTIFACT_SHA256; none is served here)",
)
def test_critest_through_the_kata_handler(test_host, kata_inventory):
    artifact = {
        "kata_artifact_url": os.environ["CRIOPS_KATA_ARTIFACT_URL"],
        "kata_artifact_sha256": os.environ["CRIOPS_KATA_ARTIFACT_SHA256"],
    }
    run = run_playbook(kata_inventory, extra_vars=artifact)
    if "does not boot a Linux guest" in run.stdout:
        pytest.skip("hardware: this machine's KVM cannot boot a guest (the host check refused it); Kata needs it")
    assert run.returncode == 0, run.stdout[-3000:]
    validate = run_playbook(kata_inventory, "playbooks/validate.yml", extra_vars={
        **artifact,
        "cri_validate_handlers": ["kata"],
        "cri_validate_handler_checks": {"kata": [["/opt/kata/bin/kata-runtime", "check", "--no-network-checks"]]},
    })  # fmt: skip
    assert validate.returncode == 0, validate.stdout[-3000:]
