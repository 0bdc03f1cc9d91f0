"""The operator's test world: a real control plane with criops' CRD and RBAC, the
operator running as its own process under the ServiceAccount the manifests
define, and podman test hosts registered as Nodes.

A pod restart kills every process of the container; `OperatorProcess.crash`
does the same to the operator and everything it started (ansible-playbook,
ssh), so restart tests see what a real crash leaves behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testworld.control_plane import ControlPlane, cache_dir
from testworld.hosts import REPO, Node, ssh_port

NAMESPACE = "criops-system"
SSH_SECRET = "criops-node-ssh"
# critest v1.37.0 on Debian 12's containerd 1.6 (docs/critest-results.md): the
# digest image is not in the air-gapped registry; containerd 1.6's stop is not idempotent.
DEBIAN12_EXPECTED_FAILURES = [
    "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance] [Serial]",
    "[k8s.io] Idempotence StopPodSandbox should not return an error if not found",
    "[k8s.io] Idempotence StopContainer should not return an error if not found",
]


def kubectl_json(plane: ControlPlane, *args: str) -> Any:
    done = plane.kubectl(*args, "-o", "json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def runtime_node(
    name: str, node: str, runtime: str = "containerd", ssh_port: int | None = None, **spec: Any
) -> dict[str, Any]:
    """A RuntimeNode manifest: reached over SSH on a loopback port with the test key's Secret, else local."""
    access = (
        {"host": "127.0.0.1", "port": ssh_port, "sshKeySecretRef": {"name": SSH_SECRET}}
        if ssh_port
        else {"connection": "local"}
    )
    return {
        "apiVersion": "criops.dev/v1alpha1",
        "kind": "RuntimeNode",
        "metadata": {"name": name},
        "spec": {"nodeName": node, "runtime": runtime, "access": access, **spec},
    }


def install_crd(plane: ControlPlane) -> None:
    """crds/ applied and established."""
    applied = plane.kubectl("apply", "-f", str(REPO / "crds"))
    assert applied.returncode == 0, applied.stderr
    established = plane.kubectl(
        "wait", "--for=condition=Established", "crd/runtimenodes.criops.dev", "--timeout=60s", timeout=90
    )
    assert established.returncode == 0, established.stderr


def create_ssh_secret(
    plane: ControlPlane, name: str, key: Path, known_hosts: Path | None = None, exist_ok: bool = False
) -> None:
    """A kubernetes.io/ssh-auth Secret in the operator's namespace: the private key file,
    and the node's host keys as known_hosts when given."""
    files = [f"--from-file=ssh-privatekey={key}"]
    if known_hosts is not None:
        files.append(f"--from-file=known_hosts={known_hosts}")
    made = plane.kubectl(
        "-n", NAMESPACE, "create", "secret", "generic", name, "--type=kubernetes.io/ssh-auth", *files
    )  # fmt: skip
    assert made.returncode == 0 or (exist_ok and "already exists" in made.stderr), made.stderr


def install_operator_access(plane: ControlPlane, workdir: Path) -> Path:
    """Namespace + RBAC from operator/manifests, the SSH key Secret, and a kubeconfig
    holding a token of the operator's ServiceAccount (so its RBAC is what is tested)."""
    manifests = REPO / "operator" / "manifests"
    for name in ("namespace.yaml", "rbac.yaml"):
        applied = plane.kubectl("apply", "-f", str(manifests / name))
        assert applied.returncode == 0, applied.stderr
    create_ssh_secret(plane, SSH_SECRET, cache_dir() / "ssh" / "id_ed25519", exist_ok=True)
    token = plane.kubectl("-n", NAMESPACE, "create", "token", "criops-operator", "--duration=6h")
    assert token.returncode == 0, token.stderr
    admin = kubectl_json(plane, "config", "view", "--raw")
    cluster = admin["clusters"][0]["cluster"]
    kubeconfig = workdir / "operator.kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "test", "cluster": cluster}],
                "users": [{"name": "criops-operator", "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {"name": "op", "context": {"cluster": "test", "user": "criops-operator", "namespace": NAMESPACE}}
                ],
                "current-context": "op",
            }
        )
    )
    return kubeconfig


def register_node(plane: ControlPlane, name: str, labels: dict[str, str], taints: list[dict[str, str]]) -> None:
    """A Node object for a test host, as a kubelet would register it (there is no kubelet)."""
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "spec": {"taints": taints},
    }
    created = plane.kubectl("create", "-f", "-", stdin=json.dumps(node))
    assert created.returncode == 0, created.stderr


class OperatorProcess:
    """`kopf run -m criops.handlers` as its own process, logging to a file."""

    def __init__(
        self, kubeconfig: Path, state_dir: Path, log: Path, probe_tick: int = 5, env: dict[str, str] | None = None
    ) -> None:
        self.kubeconfig, self.state_dir, self.log_path, self.probe_tick = kubeconfig, state_dir, log, probe_tick
        # Settings of the operator's own (CRIOPS_CONCURRENCY...) on top of the test world's.
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "PYTHONPATH": str(REPO / "operator"),
            "CRIOPS_STATE_DIR": str(self.state_dir),
            "CRIOPS_GROUP_VARS": str(REPO / "inventory" / "local" / "group_vars"),
            "CRIOPS_NAMESPACE": NAMESPACE,
            "CRIOPS_PROBE_TICK": str(self.probe_tick),
            # Waiting RuntimeNodes (missing Secret, live Node) are looked at again soon.
            "CRIOPS_RETRY_DELAY": "5",
            # Keep every run, so tests can count them.
            "CRIOPS_RUNS_KEPT": "1000",
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            **self.env,
        }
        kopf = Path(sys.executable).parent / "kopf"
        log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [str(kopf), "run", "--standalone", "--all-namespaces", "-m", "criops.handlers"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.state_dir,
            start_new_session=True,
        )
        return self

    def crash(self) -> None:
        """SIGKILL the operator and every process it started, like a container restart."""
        assert self.process is not None
        for pid in [*_descendants(self.process.pid), self.process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.crash()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def runs(state_dir: Path, owner: str, playbook: str = "validate.yml") -> list[dict[str, Any]]:
    """The operator's run records for one RuntimeNode, oldest first."""
    found = []
    for record in sorted((state_dir / "runs" / owner).glob("*/run.json")):
        meta = json.loads(record.read_text())
        if meta.get("playbook") == playbook:
            found.append({**meta, "dir": record.parent})
    return found


def wait_for(what: str, check: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def operator_world(
    plane: ControlPlane,
    host: Node,
    workdir: Path,
    labels: dict[str, str] | None = None,
    taints: list[dict[str, str]] | None = None,
    probe_tick: int = 5,
    register: bool = True,
) -> Iterator[dict[str, Any]]:
    """The operator's access, `host` registered as a Node (with `labels` and `taints`
    of someone else's; not when `register` is False: a kubelet registered it), and the
    operator running; stopped (its log printed) afterwards."""
    kubeconfig = install_operator_access(plane, workdir)
    if register:
        register_node(plane, host.name, labels or {}, taints or [])
    state = workdir / "state"
    state.mkdir()
    world: dict[str, Any] = {
        "plane": plane,
        "host": host,
        "kubeconfig": kubeconfig,
        "state": state,
        "log": workdir / "operator.log",
        "port": ssh_port(host.name),
        # The API server's admission adds its own taints (not-ready) to a new Node.
        "taints": kubectl_json(plane, "get", "node", host.name)["spec"].get("taints", []),
    }
    world["operator"] = OperatorProcess(kubeconfig, state, world["log"], probe_tick=probe_tick).start()
    try:
        yield world
    finally:
        world["operator"].stop()
        print(world["operator"].log())


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """A condition of a RuntimeNode's status by type ({} when it has none)."""
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def phase_is(plane: ControlPlane, name: str, *phases: str, generation: int | None = None) -> Callable[[], Any]:
    """A wait_for check: the RuntimeNode's status once its phase is one of `phases` (for `generation`)."""

    def check() -> Any:
        status = kubectl_json(plane, "get", "runtimenode", name).get("status", {})
        if status.get("phase") in phases and (generation is None or status.get("observedGeneration") == generation):
            return status
        return False

    return check


def report_kubelet(world: dict[str, Any], version: str) -> None:
    """What a kubelet of `version` reports in the world's Node's status (there is no kubelet)."""
    patch = json.dumps({"status": {"nodeInfo": {"kubeletVersion": version}}})
    done = world["plane"].kubectl(
        "patch", "node", world["host"].name, "--subresource=status", "--type=merge", "-p", patch
    )
    assert done.returncode == 0, done.stderr


def node_labels(world: dict[str, Any]) -> dict[str, str]:
    """The labels of the world's Node."""
    return kubectl_json(world["plane"], "get", "node", world["host"].name)["metadata"].get("labels", {})
