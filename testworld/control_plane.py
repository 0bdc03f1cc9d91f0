"""A real, throwaway Kubernetes control plane for tests: etcd and kube-apiserver
built by hack/k8s-tools.sh, on loopback, with real certificates and a token.

No kubelet, scheduler or controller-manager: criops' tests need the API (CRDs,
Nodes, Events, RBAC), which is all kube-apiserver's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def versions() -> dict[str, str]:
    pins = {}
    for line in (REPO / "hack" / "versions.env").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            pins[key.strip()] = value.strip().strip('"')
    return pins


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "criops"
    return Path(os.environ.get("CRIOPS_CACHE", default))


def k8s_binary(name: str) -> Path:
    pins = versions()
    if name == "etcd":
        return cache_dir() / "bin" / f"etcd-{pins['ETCD_VERSION']}" / "etcd"
    return cache_dir() / "bin" / f"kubernetes-{pins['KUBERNETES_VERSION']}" / name


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in `workdir`; `kubeconfig` grants cluster-admin."""

    workdir: Path
    # By name (etcd, kube-apiserver), in start order; each one's argv to start it again.
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    kubeconfig: Path | None = None

    def start(self) -> ControlPlane:
        for binary in ("etcd", "kube-apiserver", "kubectl"):
            if not k8s_binary(binary).exists():
                raise RuntimeError(f"{k8s_binary(binary)} is missing: run hack/k8s-tools.sh (hack/bootstrap.sh does)")
        pki = self.workdir / "pki"
        pki.mkdir(parents=True)
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=criops-test-ca",
                 "-keyout", str(pki / "ca.key"), "-out", str(pki / "ca.crt"))  # fmt: skip
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kube-apiserver",
                 "-keyout", str(pki / "apiserver.key"), "-out", str(pki / "apiserver.csr"))  # fmt: skip
        (pki / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
                 "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "1",
                 "-extfile", str(pki / "san.ext"), "-out", str(pki / "apiserver.crt"))  # fmt: skip
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        token = os.urandom(16).hex()
        (pki / "tokens.csv").write_text(f'{token},criops-admin,criops-admin,"system:masters"\n')

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        logs = self.workdir / "logs"
        logs.mkdir()
        self._spawn("etcd", [
            str(k8s_binary("etcd")), "--data-dir", str(self.workdir / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
            "--initial-cluster", f"default=http://127.0.0.1:{peer_port}",
            "--unsafe-no-fsync",
        ], logs)  # fmt: skip
        self._spawn("kube-apiserver", [
            str(k8s_binary("kube-apiserver")),
            "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
            "--bind-address", "127.0.0.1", "--secure-port", str(api_port),
            # Loopback only: no kubernetes Service endpoint to reconcile.
            "--advertise-address", "127.0.0.1", "--endpoint-reconciler-type", "none",
            "--cert-dir", str(pki),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--token-auth-file", str(pki / "tokens.csv"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.96.0.0/24",
            "--disable-admission-plugins", "ServiceAccount",
        ], logs)  # fmt: skip

        self.kubeconfig = self.workdir / "kubeconfig"
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters:\n- name: criops-test\n  cluster:\n    server: https://127.0.0.1:{api_port}\n"
            f"    certificate-authority: {pki / 'ca.crt'}\n"
            f"users:\n- name: criops-admin\n  user:\n    token: {token}\n"
            "contexts:\n- name: criops-test\n  context:\n    cluster: criops-test\n    user: criops-admin\n"
            "current-context: criops-test\n"
        )
        self.wait_ready()
        return self

    def _spawn(self, name: str, argv: list[str], logs: Path) -> None:
        self.argv[name] = argv
        # Appended to: a restarted kube-apiserver keeps its earlier log.
        log = open(logs / f"{name}.log", "a")  # noqa: SIM115 - lives as long as the process
        self.processes[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver, at once (SIGKILL, as a crash would; etcd keeps running):
        open connections drop and new ones are refused from the moment this returns.
        A SIGTERM would stop new connections at once but keep watches open for up to ~20 s."""
        process = self.processes.pop("kube-apiserver")
        process.kill()
        process.wait(timeout=20)

    def start_apiserver(self, timeout: float = 90) -> None:
        """Start kube-apiserver again with the same flags, port, certificates and tokens; wait until ready."""
        if "kube-apiserver" in self.processes:
            raise RuntimeError("kube-apiserver is already running")
        self._spawn("kube-apiserver", self.argv["kube-apiserver"], self.workdir / "logs")
        self.wait_ready(timeout)

    def kubectl(self, *args: str, stdin: str | None = None, timeout: int = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(k8s_binary("kubectl")), "--kubeconfig", str(self.kubeconfig), *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for process in self.processes.values():
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[0]} exited with {process.returncode} (logs in {self.workdir})")
            if self.kubectl("get", "--raw", "/readyz", timeout=10).stdout.strip() == "ok":
                return
            time.sleep(0.5)
        raise RuntimeError(f"kube-apiserver not ready after {timeout} s (logs in {self.workdir / 'logs'})")

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            _terminate(process)


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)
