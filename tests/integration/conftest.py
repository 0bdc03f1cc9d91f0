"""Fixtures of the integration tests' real test world (see the testworld package).

Each test module gets its own throwaway Debian systemd container from
localhost/criops-test-host:bookworm, started with hack/local-host.sh and removed
afterwards, reached over SSH on its published loopback port, as a node is.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from testworld.cluster import install_crd, operator_world
from testworld.control_plane import ControlPlane
from testworld.hosts import (
    REPO,
    ArtifactServer,
    Node,
    Tarball,
    hack_script,
    local_host,
    serve_directory,
    write_inventory,
)


@pytest.fixture(scope="module")
def test_host(request: pytest.FixtureRequest) -> Iterator[Node]:
    """A fresh bookworm test host for one test module, removed afterwards. Its name starts
    with $CRIOPS_TEST_HOST_PREFIX (criops-it): runs side by side keep to their own hosts."""
    if shutil.which("podman") is None:
        pytest.fail("podman is required for the integration tests (hack/bootstrap.sh installs it)")
    module = request.module.__name__.rsplit(".", 1)[-1]
    prefix = os.environ.get("CRIOPS_TEST_HOST_PREFIX", "criops-it")
    name = f"{prefix}-{re.sub(r'[^a-z0-9]+', '-', module.lower()).strip('-')}-{uuid.uuid4().hex[:8]}"
    try:
        started = local_host("up", name)
        if started.returncode != 0:
            pytest.fail(f"hack/local-host.sh up failed for {name}:\n{started.stdout}{started.stderr}")
        yield Node(name)
    finally:
        local_host("down", name)


@pytest.fixture(scope="module")
def inventory(test_host: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary inventory for the module's test host."""
    return write_inventory(tmp_path_factory.mktemp("inventory"), test_host)


@pytest.fixture(scope="session")
def containerd_tarball() -> Tarball:
    """The release-shaped tarball hack/containerd-tarball.sh builds (cached)."""
    built = subprocess.run(
        [str(REPO / "hack" / "containerd-tarball.sh")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0:
        pytest.fail(f"hack/containerd-tarball.sh failed:\n{built.stderr}")
    path = Path(built.stdout.strip().splitlines()[-1])
    sha256 = Path(f"{path}.sha256").read_text().split()[0]
    return Tarball(path, sha256)


@pytest.fixture(scope="session")
def artifact_server(containerd_tarball: Tarball) -> Iterator[ArtifactServer]:
    """A real HTTP server on loopback serving the artifacts directory: the site's mirror."""
    with serve_directory(containerd_tarball.path.parent) as server:
        yield server


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver on loopback for the whole session, stopped afterwards."""
    plane = ControlPlane(tmp_path_factory.mktemp("control-plane"))
    try:
        yield plane.start()
    finally:
        plane.stop()


@pytest.fixture(scope="session")
def kubeconfig_with_crd(control_plane: ControlPlane) -> Path:
    """The control plane's kubeconfig, with crds/ installed and established."""
    install_crd(control_plane)
    assert control_plane.kubeconfig is not None
    return control_plane.kubeconfig


@pytest.fixture(scope="session")
def legacy_artifacts() -> dict[str, Tarball]:
    """The tarballs hack/legacy-runtimes.sh builds (cached), by name without "-linux-<arch>".

    Skipped only where no source mirror is configured (docs/legacy-builds.md):
    the pinned archives come from nowhere else.
    """
    legacy_runtimes = str(REPO / "hack" / "legacy-runtimes.sh")
    if subprocess.run([legacy_runtimes, "--mirror"], capture_output=True).returncode != 0:
        pytest.skip(
            "artifact: no source mirror for the legacy runtimes' pinned archives (set CRIOPS_SOURCE_MIRROR; "
            "docs/legacy-builds.md)"
        )
    built = subprocess.run([legacy_runtimes], capture_output=True, text=True, timeout=1800)
    if built.returncode != 0:
        pytest.fail(f"hack/legacy-runtimes.sh failed:\n{built.stderr[-4000:]}")
    paths = [Path(line) for line in built.stdout.split() if line.endswith(".tar.gz")]
    return {
        path.name.split("-linux-")[0]: Tarball(path, Path(f"{path}.sha256").read_text().split()[0]) for path in paths
    }


@pytest.fixture(scope="module")
def operator_on_test_host(
    kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict]:
    """The operator, with the module's test host registered as a Node (no kubelet behind it)."""
    with operator_world(control_plane, test_host, tmp_path_factory.mktemp("operator")) as world:
        yield world


@pytest.fixture(scope="session")
def guest_kernel() -> str:
    """A real Linux kernel on the controller (hack/guest-kernel.sh): Kata's and libvirt's test boots."""
    return hack_script("guest-kernel.sh", timeout=600).strip().splitlines()[-1]


@pytest.fixture(scope="session")
def v1alpha2_tools_vars(legacy_artifacts: dict[str, Tarball], artifact_server: ArtifactServer) -> dict:
    """crictl/critest v1.13 served by the artifact server, as cri_tools' v1alpha2 variables."""
    tools = [legacy_artifacts["crictl-v1.13.0"], legacy_artifacts["critest-v1.13.0"]]
    # The server serves the artifacts directory: every tarball sits side by side.
    assert len({tarball.path.parent for tarball in tools}) == 1
    return {
        "cri_tools_v1alpha2_base_url": artifact_server.base_url,
        "cri_tools_v1alpha2_checksums": {tarball.path.name: tarball.sha256 for tarball in tools},
    }
