"""Podman test hosts, their inventories, ansible-playbook runs and node
fingerprints: the node side of the test world. Nothing here is mocked.

The integration tests' fixtures (tests/integration/conftest.py), the demo and
the benchmarks use these helpers.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import threading
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOCAL_INVENTORY = REPO / "inventory" / "local"
PLAYBOOK_TIMEOUT = 900

# What a privileged test host could change on the machine whose kernel it shares:
# kernel settings that are not namespaced (a kubelet writes the first three, checks
# the rest), cgroups at the top of any hierarchy, and a kubelet's default flex volume
# directory (kube-controller-manager makes it too when not pointed elsewhere).
MACHINE_SYSCTLS = (
    "vm/overcommit_memory",
    "kernel/panic",
    "kernel/panic_on_oops",
    "vm/panic_on_oom",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
FLEX_DIR = Path("/usr/libexec/kubernetes")
# podman's own parent of every container's cgroups: made by the first container started.
PODMAN_CGROUP_PARENT = "libpod_parent"

# What site.yml may change on a node: the fingerprint a failed preflight must leave alone.
# Files whose rewrite need not change their size or listing are hashed; a missing
# path is part of the fingerprint too (its error is recorded).
NODE_STATE_SCRIPT = (
    "ls -laR /etc/containerd 2>&1; "
    "ls -la /etc/cni/net.d /etc/sysctl.d /etc/modules-load.d /opt /opt/criops /usr/local/bin /var/cache/criops "
    "/etc/systemd/system/containerd.service /etc/systemd/system/containerd.service.d 2>&1; "
    "sha256sum /etc/crictl.yaml /etc/containerd/config.toml /etc/systemd/system/containerd.service "
    "/etc/systemd/system/containerd.service.d/* /lib/systemd/system/containerd.service 2>&1; "
    "dpkg-query -W -f='${Package} ${Version}\\n' | sort; "
    "systemctl is-enabled containerd 2>&1; "
    "systemctl is-active containerd"
)


@dataclass(frozen=True)
class Node:
    """A running throwaway test host; its name is the container, hostname and inventory name."""

    name: str

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a shell script inside the node."""
        return subprocess.run(
            ["podman", "exec", self.name, "sh", "-c", script],
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )


@dataclass(frozen=True)
class Tarball:
    """A containerd release-shaped tarball and its sha256."""

    path: Path
    sha256: str


@dataclass(frozen=True)
class ArtifactServer:
    """The loopback HTTP server standing in for a site's artifact mirror."""

    base_url: str

    def url(self, path: Path) -> str:
        return f"{self.base_url}/{urllib.parse.quote(path.name)}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[ArtifactServer]:
    """A real HTTP server on loopback serving `directory` (a site's artifact mirror) until the
    block ends. Test hosts reach the controller's loopback as 10.0.2.2, on the same port."""
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="artifact-server", daemon=True)
    thread.start()
    try:
        yield ArtifactServer(f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def ssh_port(name: str) -> int:
    """The loopback port a test host answers SSH on (hack/local-host.sh published it)."""
    found = subprocess.run(["podman", "port", name, "22/tcp"], capture_output=True, text=True, check=True)
    return int(found.stdout.strip().splitlines()[0].rsplit(":", 1)[1])


def local_host(action: str, name: str, suite: str = "bookworm") -> subprocess.CompletedProcess[str]:
    """hack/local-host.sh up|down for a test host of the given name."""
    args = [str(REPO / "hack" / "local-host.sh"), action] + ([suite] if action == "up" else [])
    return subprocess.run(
        args,
        env={**os.environ, "CRIOPS_LOCAL_HOST": name},
        capture_output=True,
        text=True,
        timeout=300,
    )


def ansible_playbook() -> str:
    """ansible-playbook from PATH (the Makefile puts .venv/bin first), else beside this Python."""
    found = shutil.which("ansible-playbook")
    if found:
        return found
    beside = Path(sys.executable).parent / "ansible-playbook"
    if beside.exists():
        return str(beside)
    raise FileNotFoundError(f"ansible-playbook is neither on PATH nor next to {sys.executable}")


def write_inventory(
    directory: Path,
    node: Node | list[Node],
    kata: bool = False,
    host_vars: dict[str, object] | None = None,
    group: str = "containerd",
) -> Path:
    """A YAML inventory for `node` (or a list of nodes: a fleet) in cri_nodes' child group
    `group` (with kata: in containerd's child group kata), with inventory/local's group_vars.
    A node is reached over SSH on the loopback port hack/local-host.sh published, as a node
    is (inventory/local's group_vars hold the user, key and multiplexing), unless
    `host_vars` say otherwise.

    group_vars are found relative to the inventory file, so they are linked next
    to it; they find the repository through CRIOPS_ROOT, which run_playbook sets.
    """
    directory.mkdir(parents=True, exist_ok=True)
    group_vars = directory / "group_vars"
    if not group_vars.exists():
        group_vars.symlink_to(LOCAL_INVENTORY / "group_vars", target_is_directory=True)
    nodes = node if isinstance(node, list) else [node]
    hosts = {n.name: host_vars or {"ansible_host": "127.0.0.1", "ansible_port": ssh_port(n.name)} for n in nodes}
    body = {"children": {"kata": {"hosts": hosts}}} if kata else {"hosts": hosts}
    inventory = {"all": {"children": {"cri_nodes": {"children": {group: body}}}}}
    path = directory / "hosts.yml"
    # JSON is YAML: no quoting rules to get wrong.
    path.write_text(json.dumps(inventory, indent=2) + "\n")
    return path


def run_playbook(
    inventory: Path,
    playbook: str = "playbooks/site.yml",
    extra_vars: dict | None = None,
    options: list[str] | None = None,
    env: dict[str, str] | None = None,
    timeout: float = PLAYBOOK_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """Run a playbook of the repository from its root with its ansible.cfg (`env` adds
    to the environment: ANSIBLE_* settings of one run, ANSIBLE_ROLES_PATH for other roles;
    `timeout` in seconds, for runs longer than a converge such as a whole critest suite).

    Extra variables go in a JSON file (-e @file), never through a shell string.
    The result's stdout holds stdout and stderr interleaved, as a user sees them;
    it is also kept as run-<id>.log next to the inventory.
    """
    run_id = uuid.uuid4().hex[:8]
    cmd = [ansible_playbook(), "-i", str(inventory), playbook, *(options or [])]
    if extra_vars:
        vars_file = inventory.parent / f"extra-vars-{run_id}.json"
        vars_file.write_text(json.dumps(extra_vars, indent=2) + "\n")
        cmd += ["-e", f"@{vars_file}"]
    env = {
        **os.environ,
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        # How inventory/local's group_vars find the repository from a copied inventory.
        "CRIOPS_ROOT": str(REPO),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        **(env or {}),
    }
    result = subprocess.run(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )
    # The whole output stays beside the inventory (pytest's basetemp) for post-mortems.
    (inventory.parent / f"run-{run_id}.log").write_text(f"$ {' '.join(cmd)}\nrc={result.returncode}\n{result.stdout}")
    return result


def assert_run_changes_nothing(
    inventory: Path, node: Node, extra_vars: dict | None = None, playbook: str = "playbooks/site.yml"
) -> subprocess.CompletedProcess[str]:
    """Run `playbook` again and fail, naming the changed tasks, unless it succeeds with changed=0."""
    again = run_playbook(inventory, playbook, extra_vars)
    assert again.returncode == 0, again.stdout[-6000:]
    recap = play_recap(again.stdout)[node.name]
    changed = [line for line in again.stdout.splitlines() if line.startswith("changed:")]
    assert recap["changed"] == 0, f"second run changed {recap['changed']} tasks: {changed}\n{again.stdout[-6000:]}"
    return again


def node_state(node: Node) -> str:
    """Fingerprint of everything site.yml would change on the node."""
    return node.sh(NODE_STATE_SCRIPT, check=False).stdout


_RECAP_LINE = re.compile(r"^(\S+)\s+:\s+((?:\w+=\d+\s*)+)$", re.MULTILINE)


def play_recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host, e.g. {"node": {"ok": 12, "changed": 0, ...}}."""
    _, found, recap = output.rpartition("PLAY RECAP")
    if not found:
        raise ValueError("no PLAY RECAP in the output")
    return {
        host: {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", counters)}
        for host, counters in _RECAP_LINE.findall(recap)
    }


def flat(text: str) -> str:
    """Text with every whitespace run made one space: Ansible wraps long messages."""
    return " ".join(text.split())


def member_sha256(tarball: Path, member: str) -> str:
    """The sha256 of one file inside a tarball."""
    with tarfile.open(tarball) as archive:
        extracted = archive.extractfile(member)
        assert extracted is not None, f"{member} is not a file in {tarball}"
        return hashlib.file_digest(extracted, "sha256").hexdigest()


def crictl(node: Node, endpoint: str, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The CRI v1alpha2 crictl (v1.13) against `endpoint` on the node."""
    return node.sh(f"crictl-v1alpha2 --runtime-endpoint {endpoint} --image-endpoint {endpoint} {args}", check=check)


def cgroup_cpu_seconds(path: Path) -> float:
    """CPU seconds a cgroup and its children used: cpuacct.usage on cgroup v1, cpu.stat on v2."""
    if (path / "cpuacct.usage").exists():
        return int((path / "cpuacct.usage").read_text()) / 1e9
    stat = dict(line.split() for line in (path / "cpu.stat").read_text().splitlines())
    return int(stat["usage_usec"]) / 1e6


def host_cgroup(name: str) -> Path:
    """The CPU accounting cgroup podman gave a test host's container (everything in it counts there)."""
    found = subprocess.run(
        ["podman", "inspect", "--format", "{{.State.CgroupPath}}", name], capture_output=True, text=True, check=True
    )
    path = found.stdout.strip().lstrip("/")
    v1 = Path("/sys/fs/cgroup/cpuacct") / path
    return v1 if v1.is_dir() else Path("/sys/fs/cgroup") / path


def critest_pods(node: Node, endpoint: str) -> list[str]:
    """Pods in critest's own namespaces on the node (through crictl v1.13): what a validation left."""
    listed = json.loads(crictl(node, endpoint, "pods --output json").stdout or "{}").get("items") or []
    return [
        f"{pod['metadata']['namespace']}/{pod['metadata']['name']} {pod.get('state')}"
        for pod in listed
        if pod["metadata"]["namespace"].startswith("cri-test-namespace")
    ]


def hack_script(name: str, timeout: int = 1800) -> str:
    """Run one of hack/'s cached build scripts; its stdout (the paths it printed)."""
    built = subprocess.run([str(REPO / "hack" / name)], capture_output=True, text=True, timeout=timeout)
    assert built.returncode == 0, f"hack/{name} failed:\n{built.stderr[-4000:]}"
    return built.stdout


def machine_state() -> dict[str, object]:
    """What a test host could have changed on the machine (MACHINE_SYSCTLS, above), read
    on the machine itself. Every test host keeps its cgroups inside its own container's
    (hack/test-host-init), so the machine's top-level cgroups stay as they are."""
    cgroups = sorted(
        str(path.relative_to("/sys/fs/cgroup"))
        for path in Path("/sys/fs/cgroup").glob("*/*")
        if path.is_dir() and path.name != PODMAN_CGROUP_PARENT
    )
    return {
        "sysctls": {name: Path("/proc/sys", name).read_text().strip() for name in MACHINE_SYSCTLS},
        "cgroups": cgroups,
        "flex volume dir": FLEX_DIR.exists(),
    }
