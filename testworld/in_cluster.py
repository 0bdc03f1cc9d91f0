"""The operator deployed in the test cluster as a user deploys it: its image
(hack/operator-image.sh) pushed to the local registry, which test hosts' containerd
reaches through its mirror at 10.0.2.2:5000, and `kubectl apply -k` of a kustomize
overlay of operator/manifests.

The overlay holds only what the test world lacks, and says why:
- the image's name in the local registry;
- `KUBERNETES_SERVICE_HOST`/`PORT`: there is no kube-proxy here, so the
  `kubernetes` Service's ClusterIP is not routed; pods reach kube-apiserver at the
  machine's loopback as test hosts see it (its serving certificate names it);
- the site's group_vars ConfigMap (`criops-group-vars`): the local test world's;
- a short probe tick and retry delay, as the out-of-cluster operator of the tests has.
"""

from __future__ import annotations

import json
import os
import subprocess
import tomllib
from pathlib import Path

from testworld.control_plane import HOST_LOOPBACK, ControlPlane, versions
from testworld.hosts import LOCAL_INVENTORY, REPO

REGISTRY = "127.0.0.1:5000"
OPERATOR_NAMESPACE = "criops-system"
NODE_NAMESPACE = "criops-nodes"
DEPLOYMENT = "criops-operator"


def operator_image_in_registry() -> str:
    """hack/operator-image.sh's image, pushed to the local registry; its name as nodes pull it.

    Built under a tag of this run's own ($CRIOPS_TEST_HOST_PREFIX, as test hosts are
    named), removed locally once pushed: runs side by side never push each other's build."""
    version = versions_of_pyproject()
    prefix = os.environ.get("CRIOPS_TEST_HOST_PREFIX", "criops-it")
    local = f"localhost/criops-operator:{version}-{prefix}"
    built = subprocess.run([str(REPO / "hack" / "operator-image.sh"), local], capture_output=True, text=True,
                           timeout=1200)  # fmt: skip
    assert built.returncode == 0, f"hack/operator-image.sh failed:\n{built.stderr[-4000:]}"
    ref = f"criops/operator:{version}-{prefix}"
    try:
        pushed = subprocess.run(
            ["podman", "push", "-q", "--tls-verify=false", local, f"docker://{REGISTRY}/{ref}"],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        # The tag only (and the image, when no other tag holds it); the build's layers stay cached.
        subprocess.run(["podman", "rmi", local], capture_output=True, timeout=120)
    assert pushed.returncode == 0, pushed.stderr
    return f"{HOST_LOOPBACK}:5000/{ref}"


def versions_of_pyproject() -> str:
    """criops' version (pyproject.toml), the operator image's tag."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def write_overlay(plane: ControlPlane, directory: Path, image: str) -> Path:
    """A kustomize overlay of operator/manifests for this test world (see the module's docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    name, _, tag = image.rpartition(":")
    (directory / "local.yml").write_text((LOCAL_INVENTORY / "group_vars" / "all" / "local.yml").read_text())
    # Read after local.yml (files of a group_vars directory load in name order): what
    # local.yml takes from this machine's cache, as the operator's image holds it.
    # local.yml reads versions and checksums from this machine's files, which a pod has not.
    pins = versions()
    (directory / "onnode.yml").write_text(
        "# cri-tools for site.yml from the image criops' on-node pods run (crictl, critest, ginkgo).\n"
        f"cri_tools_version: {pins['CRI_TOOLS_VERSION']}\ncri_tools_local_dir: /usr/local/bin\n"
        "# No CRI v1alpha2 runtime is provisioned here.\n"
        f"cri_tools_v1alpha2_version: {pins['CRI_TOOLS_V1ALPHA2_VERSION']}\ncri_tools_v1alpha2_checksums: {{}}\n"
    )
    env = [
        {"name": "KUBERNETES_SERVICE_HOST", "value": HOST_LOOPBACK},
        {"name": "KUBERNETES_SERVICE_PORT", "value": str(plane.api_port)},
        {"name": "CRIOPS_PROBE_TICK", "value": "5"},
        {"name": "CRIOPS_RETRY_DELAY", "value": "5"},
    ]
    patch = [{"op": "add", "path": "/spec/template/spec/containers/0/env/-", "value": item} for item in env]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "operator" / "manifests", directory)],
        "images": [{"name": "localhost/criops-operator", "newName": name, "newTag": tag}],
        "configMapGenerator": [
            {
                "name": "criops-group-vars",
                "namespace": OPERATOR_NAMESPACE,
                "files": ["local.yml", "onnode.yml"],
                "options": {"disableNameSuffixHash": True},
            }
        ],
        "patches": [{"target": {"kind": "Deployment", "name": DEPLOYMENT}, "patch": json.dumps(patch)}],
    }
    # JSON is YAML.
    (directory / "kustomization.yaml").write_text(json.dumps(kustomization, indent=2) + "\n")
    return directory


def deploy(plane: ControlPlane, overlay: Path, timeout: int = 300) -> None:
    """`kubectl apply -k` the overlay and wait until the operator's Deployment is available."""
    applied = plane.kubectl("apply", "-k", str(overlay), timeout=120)
    assert applied.returncode == 0, applied.stderr
    rolled = plane.kubectl(
        "-n", OPERATOR_NAMESPACE, "rollout", "status", f"deployment/{DEPLOYMENT}", f"--timeout={timeout}s",
        timeout=timeout + 30,
    )  # fmt: skip
    assert rolled.returncode == 0, rolled.stdout + rolled.stderr + operator_log(plane)


def operator_log(plane: ControlPlane, tail: int = 200) -> str:
    found = plane.kubectl("-n", OPERATOR_NAMESPACE, "logs", f"deployment/{DEPLOYMENT}", f"--tail={tail}")
    return found.stdout + found.stderr


def undeploy(plane: ControlPlane) -> None:
    """The Deployment and the group_vars ConfigMap gone, the operator's pod with them. The
    namespaces and RBAC stay: other tests of the session run the operator under that RBAC."""
    plane.kubectl("-n", OPERATOR_NAMESPACE, "delete", "deployment", DEPLOYMENT, "--ignore-not-found", "--wait=true",
                  timeout=120)  # fmt: skip
    plane.kubectl("-n", OPERATOR_NAMESPACE, "delete", "configmap", "criops-group-vars", "--ignore-not-found")
    plane.kubectl(
        "-n", OPERATOR_NAMESPACE, "wait", "--for=delete", "pod", "-l", "app.kubernetes.io/name=criops-operator",
        "--timeout=90s", timeout=120,
    )  # fmt: skip
