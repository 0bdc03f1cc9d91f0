"""A real, throwaway Kubernetes control plane for tests: etcd and kube-apiserver
built by hack/k8s-tools.sh, on loopback, with real certificates and a token.

Most of criops' tests need only the API (CRDs, Nodes, Events, RBAC), which is
all kube-apiserver's. Tests with test hosts joined as real Nodes
(testworld/kubelet.py) also start kube-scheduler and kube-controller-manager
(`start_cluster`), and stop them when done: a node lifecycle controller would
taint the Nodes other tests register by hand.

kube-apiserver reaches kubelets through an egress proxy (`EgressProxy`): every
test host has the same slirp address (10.0.2.100), so a Node's address is the
name of its test host, and its port the loopback port podman published.
"""

from __future__ import annotations

import contextlib
import os
import socket
import socketserver
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# The machine's loopback as a test host sees it (slirp4netns, allow_host_loopback).
HOST_LOOPBACK = "10.0.2.2"


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


# Where Ansible and kubectl keep their state, under cache_dir(): the same
# variables the Makefile exports, so that runs of the tests outside make leave
# the home directory alone too. ANSIBLE_REMOTE_TMP is for the tasks the roles
# delegate to the controller (artifact_fetch); on a node it is only a path.
TOOL_STATE = {
    "ANSIBLE_HOME": "ansible",
    "ANSIBLE_ASYNC_DIR": "ansible/async",
    "ANSIBLE_REMOTE_TMP": "ansible/remote-tmp",
    "ANSIBLE_SSH_CONTROL_PATH_DIR": "ansible/cp",
    "KUBECACHEDIR": "kube-cache",
}


def keep_tool_state_in_cache() -> None:
    """Point TOOL_STATE's variables into the cache, unless already set."""
    for name, path in TOOL_STATE.items():
        os.environ.setdefault(name, str(cache_dir() / path))


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


def published_port(container: str, port: int) -> int | None:
    """The loopback port podman published for a container's `port`, or None."""
    found = subprocess.run(["podman", "port", container, f"{port}/tcp"], capture_output=True, text=True, timeout=30)
    lines = found.stdout.strip().splitlines()
    return int(lines[0].rsplit(":", 1)[1]) if found.returncode == 0 and lines else None


class _ConnectHandler(socketserver.StreamRequestHandler):
    """One HTTP CONNECT from kube-apiserver's egress dialer: `CONNECT <node>:<port>`,
    answered by a tunnel to the loopback port podman published for that port of
    the test host named <node>."""

    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").split()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # headers: nothing in them matters here
        host, _, port = request[1].rpartition(":") if len(request) == 3 and request[0] == "CONNECT" else ("", "", "")
        local = published_port(host, int(port)) if host and port.isdigit() else None
        if local is None:
            self.wfile.write(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            return
        with socket.create_connection(("127.0.0.1", local), timeout=10) as upstream:
            upstream.settimeout(None)
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self.wfile.flush()
            # Nothing is left in rfile's buffer: the dialer sends its first byte after the 200.
            pump = threading.Thread(target=_pump, args=(upstream, self.connection), daemon=True)
            pump.start()
            _pump(self.connection, upstream)
            pump.join(timeout=5)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


class EgressProxy(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """kube-apiserver's egress to the cluster (logs, exec, port-forward): HTTP CONNECT on a
    unix socket, as konnectivity offers it, to test hosts' published ports."""

    daemon_threads = True

    def __init__(self, path: Path) -> None:
        super().__init__(str(path), _ConnectHandler)
        self.thread = threading.Thread(target=self.serve_forever, name="egress-proxy", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class ControlPlane:
    """etcd + kube-apiserver in `workdir`; `kubeconfig` grants cluster-admin."""

    workdir: Path
    # By name (etcd, kube-apiserver), in start order; each one's argv to start it again.
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    argv: dict[str, list[str]] = field(default_factory=dict)
    kubeconfig: Path | None = None
    api_port: int = 0
    egress: EgressProxy | None = None

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
        # 10.0.2.2: the machine's loopback as test hosts reach it, which is where pods'
        # in-cluster clients find kube-apiserver (there is no kube-proxy for the Service).
        (pki / "san.ext").write_text(f"subjectAltName=IP:127.0.0.1,DNS:localhost,IP:{HOST_LOOPBACK}\n")
        _openssl("x509", "-req", "-in", str(pki / "apiserver.csr"), "-CA", str(pki / "ca.crt"),
                 "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-days", "1",
                 "-extfile", str(pki / "san.ext"), "-out", str(pki / "apiserver.crt"))  # fmt: skip
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        # kube-apiserver's client certificate towards kubelets (logs, exec): kubeadm's shape.
        self.issue_cert("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "system:masters")
        token = os.urandom(16).hex()
        (pki / "tokens.csv").write_text(f'{token},criops-admin,criops-admin,"system:masters"\n')

        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        self.api_port = api_port
        egress = self.workdir / "egress.yaml"
        egress.write_text(
            "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n"
            "- name: cluster\n  connection:\n    proxyProtocol: HTTPConnect\n"
            f"    transport:\n      uds:\n        udsName: {self.workdir / 'egress.sock'}\n"
        )
        self.egress = EgressProxy(self.workdir / "egress.sock")
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
            # For test hosts joined as Nodes (testworld/kubelet.py): privileged pods, and
            # kubelets reached by name through the egress proxy, with a client certificate.
            "--allow-privileged=true",
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            "--kubelet-preferred-address-types", "Hostname,InternalIP",
            "--egress-selector-config-file", str(egress),
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

    def issue_cert(self, name: str, common_name: str, organization: str = "") -> tuple[Path, Path]:
        """A client certificate `pki/<name>.crt` (and `.key`) signed by the cluster's CA."""
        pki = self.workdir / "pki"
        subject = f"/CN={common_name}" + (f"/O={organization}" if organization else "")
        crt, key, csr = (pki / f"{name}.{ext}" for ext in ("crt", "key", "csr"))
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", str(key), "-out", str(csr))
        (pki / f"{name}.ext").write_text("extendedKeyUsage=clientAuth\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                 "-CAcreateserial", "-days", "1", "-extfile", str(pki / f"{name}.ext"), "-out", str(crt))  # fmt: skip
        return crt, key

    def start_cluster(self) -> None:
        """kube-scheduler and kube-controller-manager beside kube-apiserver, for Nodes with kubelets."""
        if "kube-scheduler" in self.processes:
            return
        for binary in ("kube-scheduler", "kube-controller-manager"):
            if not k8s_binary(binary).exists():
                raise RuntimeError(f"{k8s_binary(binary)} is missing: run hack/k8s-tools.sh (hack/bootstrap.sh does)")
        pki, logs = self.workdir / "pki", self.workdir / "logs"
        # Both serve their health checks on loopback only; one instance each, no election.
        common = ["--kubeconfig", str(self.kubeconfig), "--leader-elect=false", "--bind-address", "127.0.0.1"]
        self._spawn("kube-scheduler", [
            str(k8s_binary("kube-scheduler")), *common, "--secure-port", str(free_port()),
        ], logs)  # fmt: skip
        flex = self.workdir / "flexvolume"
        flex.mkdir(exist_ok=True)
        self._spawn("kube-controller-manager", [
            str(k8s_binary("kube-controller-manager")), *common, "--secure-port", str(free_port()),
            "--service-account-private-key-file", str(pki / "sa.key"), "--root-ca-file", str(pki / "ca.crt"),
            # Its default, /usr/libexec/kubernetes/..., would be created on the machine.
            "--flex-volume-plugin-dir", str(flex),
        ], logs)  # fmt: skip

    def stop_cluster(self) -> None:
        """Stop kube-scheduler and kube-controller-manager (kube-apiserver and etcd keep running)."""
        for name in ("kube-controller-manager", "kube-scheduler"):
            process = self.processes.pop(name, None)
            if process is not None:
                _terminate(process)

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
        if self.egress is not None:
            self.egress.stop()


def _terminate(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)
