"""The operator image (operator/Containerfile, built with podman by hack/operator-image.sh)
runs as the Deployment runs it: non-root, read-only root filesystem, the
ServiceAccount's token, and handles RuntimeNodes against the real API server.
"""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from testworld.cluster import NAMESPACE, install_operator_access, kubectl_json, register_node, runtime_node, wait_for
from testworld.control_plane import ControlPlane, free_port
from testworld.hosts import REPO

pytestmark = pytest.mark.integration
# runc (crun refuses hybrid cgroups) and rlimits within this machine's hard limits.
# The image on a Debian 12 slim base (hack/slim-image.sh here, as debian:bookworm-slim).
IMAGE_SIZE_LIMIT = 400_000_000
PODMAN_RUN = ["podman", "run", "--runtime", "runc", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> str:
    built = subprocess.run([str(REPO / "hack" / "operator-image.sh")], capture_output=True, text=True, timeout=1200)
    assert built.returncode == 0, built.stderr[-3000:]
    return built.stdout.strip().splitlines()[-1]


def test_the_image_carries_the_playbooks_and_tools(image):
    script = (
        "cd /opt/criops && ansible-playbook --syntax-check -i localhost, playbooks/site.yml playbooks/validate.yml"
        # The two collections the roles use, taken alone from the pinned ansible release.
        " && ansible-doc -t module community.general.modprobe ansible.posix.sysctl >/dev/null"
        " && critest --version && crictl --version && id -u"
    )
    checked = subprocess.run(
        [*PODMAN_RUN, "--rm", "--entrypoint", "sh", image, "-c", script],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "critest version: v1.37.0" in checked.stdout
    assert checked.stdout.strip().endswith("10001")


def test_the_image_stays_small(image):
    """Only what the operator runs: no `ansible` bundle, no build tools (operator/image-venv.sh)."""
    size = int(subprocess.run(["podman", "image", "inspect", "--format", "{{.Size}}", image],
                              capture_output=True, text=True, check=True).stdout)  # fmt: skip
    print(f"operator image: {size / 1e6:.0f} MB")
    assert size < IMAGE_SIZE_LIMIT, f"{image} is {size / 1e6:.0f} MB, over {IMAGE_SIZE_LIMIT / 1e6:.0f} MB"


def test_the_image_runs_the_operator_as_the_deployment_does(image, kubeconfig_with_crd, control_plane: ControlPlane,
                                                            tmp_path: Path):  # fmt: skip
    operator_kubeconfig = json.loads(install_operator_access(control_plane, tmp_path).read_text())
    cluster = operator_kubeconfig["clusters"][0]["cluster"]
    cluster["certificate-authority-data"] = base64.b64encode(
        Path(cluster.pop("certificate-authority")).read_bytes()).decode()  # fmt: skip
    kubeconfig = tmp_path / "kubeconfig.json"
    kubeconfig.write_text(json.dumps(operator_kubeconfig))
    kubeconfig.chmod(0o644)

    name, port = f"image-check-{uuid.uuid4().hex[:6]}", free_port()
    register_node(control_plane, name, {}, [])
    container = f"criops-operator-{name}"
    started = subprocess.run(
        [*PODMAN_RUN, "-d", "--name", container, "--network", "host",
         "--read-only", "--tmpfs", "/tmp", "--tmpfs", "/var/lib/criops-operator",
         "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
         "-v", f"{kubeconfig}:/etc/criops/kubeconfig:ro", "-e", "KUBECONFIG=/etc/criops/kubeconfig",
         "-e", f"CRIOPS_NAMESPACE={NAMESPACE}", image,
         "--standalone", "--all-namespaces", f"--liveness=http://127.0.0.1:{port}/healthz", "-m", "criops.handlers"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        manifest = runtime_node(name, name, "crun", suspend=True)
        assert control_plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest)).returncode == 0

        def handled() -> bool:
            status = kubectl_json(control_plane, "get", "runtimenode", name).get("status", {})
            return status.get("observedGeneration") == 1

        wait_for("the operator in the image to handle the RuntimeNode", handled, 120)
        labels = kubectl_json(control_plane, "get", "node", name)["metadata"]["labels"]
        assert labels["criops.dev/runtime"] == "crun"
        assert labels["criops.dev/validated"] == "false"
        health = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/healthz"], capture_output=True, text=True)
        assert health.returncode == 0, health.stderr

        deleted = control_plane.kubectl("delete", "runtimenode", name, "--timeout=60s", timeout=90)
        assert deleted.returncode == 0, deleted.stderr
        labels = kubectl_json(control_plane, "get", "node", name)["metadata"].get("labels", {})
        assert not [k for k in labels if k.startswith("criops.dev/")]
    finally:
        logs = subprocess.run(["podman", "logs", container], capture_output=True, text=True).stdout
        subprocess.run(["podman", "rm", "-f", "-t", "0", container], capture_output=True)
        print(logs[-4000:])


def test_the_manifests_apply_with_kustomize_and_with_f(kubeconfig_with_crd, control_plane: ControlPlane):
    manifests = REPO / "operator" / "manifests"
    # The namespace first (a dry run creates nothing for the namespaced objects to land in).
    assert control_plane.kubectl("apply", "-f", str(manifests / "namespace.yaml")).returncode == 0
    kustomized = control_plane.kubectl("apply", "-k", str(manifests), "--dry-run=server")
    assert kustomized.returncode == 0, kustomized.stderr
    assert "deployment.apps/criops-operator created (server dry run)" in kustomized.stdout
    files = [f"-f={manifests / name}" for name in ("namespace.yaml", "rbac.yaml", "deployment.yaml")]
    plain = control_plane.kubectl("apply", *files, "--dry-run=server")
    assert plain.returncode == 0, plain.stderr
