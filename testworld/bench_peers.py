#!/usr/bin/env python3
"""criops side by side with the field's reference roles: figures, not pass/fail.

    python -m testworld.bench_peers [suite...]     (default: bookworm; from the checkout's root)

hack/bench.sh runs it when the peers' mirror is configured (hack/peers.sh
--mirror). Per suite, BENCH_PEER_ROUNDS rounds (3 unless set), tools
interleaved and their order rotated each round: per tool a fresh test host
(hack/local-host.sh), a fresh converge, then BENCH_PEER_RERUNS no-change re-runs
(2 unless set), then the host is removed. The tools:

criops       playbooks/site.yml on a host of the containerd group.
kubespray    kubespray_defaults + container-engine/containerd (with its
             dependencies containerd-common, runc, crictl, nerdctl and the
             download role): the play of its own molecule converge.yml.
geerlingguy  geerlingguy.containerd: its own molecule converge.yml.

All three run with this checkout's ansible.cfg ([defaults], [ssh_connection]),
the same ansible-core, inventory/local's group_vars/all (SSH user, key,
multiplexing, registry mirrors) and the same local sources: Debian's archive
for packages, the local registry for images, and for kubespray's downloads a
loopback HTTP server (the site's artifact mirror) with criops' containerd
tarball of Debian's binaries, the controller's Debian runc binary, the crictl
criops builds and the nerdctl hack/nerdctl.sh builds. The peers' files are
unpacked into a temporary directory, never into the checkout.

Recorded per run: wall seconds, the controller's CPU seconds (user + sys of
ansible-playbook and the processes it waited for) and the node's (the test
host's cgroup), and the recap's ok/skipped/changed. Prints Markdown tables
(docs/benchmarks.md#side-by-side-with-kubespray-and-geerlingguy).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from testworld.control_plane import versions
from testworld.hosts import (
    LOCAL_INVENTORY,
    REPO,
    ArtifactServer,
    Node,
    cgroup_cpu_seconds,
    host_cgroup,
    local_host,
    play_recap,
    run_playbook,
    serve_directory,
    ssh_port,
    write_inventory,
)

# The controller's loopback as the test hosts see it (slirp4netns, allow_host_loopback).
HOST_LOOPBACK = "10.0.2.2"
TOOLS = ("criops", "kubespray", "geerlingguy")
WHAT = {
    "criops": "site.yml: preflight of every role, node prerequisites (modules, sysctls), "
    "CNI plugins + bridge, crictl/critest, containerd + drop-ins + registry mirrors, runc + crun",
    "kubespray": "v2.29.1, its containerd role with its dependencies: containerd tarball, runc, crictl, "
    "nerdctl, config, registry mirrors",
    "geerlingguy": "geerlingguy.containerd at d02e01bf: apt source, containerd package, "
    "default config with systemd cgroups",
}


@dataclass
class Run:
    wall: float
    controller_cpu: float
    node_cpu: float
    recap: dict[str, int]

    @property
    def cpu(self) -> float:
        return self.controller_cpu + self.node_cpu

    @property
    def tasks(self) -> int:
        return self.recap.get("ok", 0) + self.recap.get("skipped", 0)


@dataclass
class Tool:
    name: str
    playbook: Path
    inventory: Callable[[Path, Node], Path]
    env: dict[str, str] = field(default_factory=dict)
    fresh: list[Run] = field(default_factory=list)
    again: list[Run] = field(default_factory=list)


def peer_artifacts() -> dict[str, Path]:
    """hack/peers.sh: the verified archives of the peers, nerdctl and containerd tarballs."""
    built = subprocess.run([str(REPO / "hack" / "peers.sh")], capture_output=True, text=True, timeout=3600)
    if built.returncode != 0:
        raise SystemExit(f"hack/peers.sh failed:\n{built.stderr[-4000:]}")
    return {name: Path(path) for name, _, path in (line.partition("=") for line in built.stdout.split())}


def sha256(path: Path) -> str:
    """The file's checksum as kubespray writes its own: "sha256:<hex>"."""
    with path.open("rb") as data:
        return "sha256:" + hashlib.file_digest(data, "sha256").hexdigest()


def crictl_tarball(directory: Path, version: str) -> Path:
    """The crictl criops builds (hack/go-tools.sh), packed like cri-tools' release tarball."""
    binary = Path(os.environ.get("CRIOPS_CACHE", Path.home() / ".cache" / "criops")) / "bin"
    binary = binary / f"cri-tools-{version}" / "crictl"
    tarball = directory / f"crictl-{version}-linux-amd64.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        info = archive.gettarinfo(str(binary), "crictl")
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mtime = 0
        with binary.open("rb") as data:
            archive.addfile(info, data)
    return tarball


def nest(groups: dict, hosts: dict, group_vars: dict[str, object]) -> dict:
    """Inventory groups from `groups`, a nested dict of group names whose leaves (empty dicts)
    get `hosts`; the top groups get `group_vars`."""

    def place(tree: dict) -> dict:
        return {name: {"children": place(sub)} if sub else {"hosts": hosts} for name, sub in tree.items()}

    return {name: body | {"vars": group_vars} for name, body in place(groups).items()}


def peer_inventory(groups: dict, group_vars: dict[str, object]) -> Callable[[Path, Node], Path]:
    """An inventory writer: the node (reached as write_inventory reaches it) in `groups` (see
    nest), with inventory/local's group_vars/all: the same SSH settings and mirrors as criops."""

    def write(directory: Path, node: Node) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "group_vars").mkdir(exist_ok=True)
        all_vars = directory / "group_vars" / "all"
        if not all_vars.exists():
            all_vars.symlink_to(LOCAL_INVENTORY / "group_vars" / "all", target_is_directory=True)
        hosts = {node.name: {"ansible_host": "127.0.0.1", "ansible_port": ssh_port(node.name)}}
        path = directory / "hosts.yml"
        path.write_text(json.dumps({"all": {"children": nest(groups, hosts, group_vars)}}, indent=2) + "\n")
        return path

    return write


def kubespray_downloads(served: Path, paths: dict[str, Path], server: ArtifactServer) -> dict[str, object]:
    """kubespray's download variables for the files put in `served`, which `server` serves."""
    base = server.base_url.replace("127.0.0.1", HOST_LOOPBACK)
    pins = versions()
    containerd, nerdctl = paths["containerd"], paths["nerdctl"]
    for path in (containerd, nerdctl):
        (served / path.name).symlink_to(path)
    runc = served / "runc.amd64"
    shutil.copy2(shutil.which("runc") or "/usr/sbin/runc", runc)
    crictl = crictl_tarball(served, pins["CRI_TOOLS_VERSION"])
    match = re.match(r"containerd-(\d+\.\d+\.\d+)", containerd.name)
    assert match, containerd
    return {
        # Its config template is chosen by this version (v1 below 2.0).
        "containerd_version": match[1],
        "containerd_download_url": f"{base}/{urllib.parse.quote(containerd.name)}",
        "containerd_checksum": sha256(containerd),
        "runc_download_url": f"{base}/{runc.name}",
        "runc_binary_checksum": sha256(runc),
        "crictl_version": pins["CRI_TOOLS_VERSION"].lstrip("v"),
        "crictl_download_url": f"{base}/{crictl.name}",
        "crictl_binary_checksum": sha256(crictl),
        "nerdctl_version": pins["NERDCTL_VERSION"].lstrip("v"),
        "nerdctl_download_url": f"{base}/{nerdctl.name}",
        "nerdctl_archive_checksum": sha256(nerdctl),
    }


def tools(work: Path, paths: dict[str, Path], kubespray_vars: dict[str, object]) -> list[Tool]:
    """The three tools, with the peers unpacked under `work`."""
    work.mkdir(parents=True)
    for name in ("kubespray", "geerlingguy"):
        with tarfile.open(paths[name]) as archive:
            archive.extractall(work, filter="data")
    kubespray = next(work.glob("kubespray-*/"))
    # What kubespray's bootstrap_os role leaves on a node and its crictl and
    # nerdctl handlers write into; a minimal Debian has no such directory.
    playbook = work / "kubespray.yml"
    playbook.write_text(
        "- name: Prepare the node as kubespray's bootstrap_os role does\n"
        "  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Bash completion directory\n"
        "      ansible.builtin.file: {path: /etc/bash_completion.d, state: directory, mode: '0755'}\n"
        f"- import_playbook: {kubespray}/roles/container-engine/containerd/molecule/default/converge.yml\n"
    )
    debian = os.environ.get("CRIOPS_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    geerlingguy_vars = {
        "containerd_package": "containerd",
        # Its "docker" apt source, pointed at the Debian archive the node already uses.
        "docker_apt_repository": debian,
        "docker_apt_release_channel": "main",
        "docker_apt_gpg_key": "/usr/share/keyrings/debian-archive-keyring.gpg",
        "containerd_config_cgroup_driver_systemd": True,
    }
    geerlingguy = next(work.glob("geerlingguy.*/"))
    return [
        Tool("criops", REPO / "playbooks" / "site.yml", write_inventory),
        Tool(
            "kubespray",
            playbook,
            peer_inventory({"k8s_cluster": {"kube_control_plane": {}, "kube_node": {}}}, kubespray_vars),
            {"ANSIBLE_ROLES_PATH": str(kubespray / "roles")},
        ),
        Tool(
            "geerlingguy",
            geerlingguy / "molecule" / "default" / "converge.yml",
            peer_inventory({"geerlingguy": {}}, geerlingguy_vars),
            {"ANSIBLE_ROLES_PATH": str(geerlingguy.parent)},
        ),
    ]


def timed(tool: Tool, inventory: Path, node: Node) -> Run:
    """One playbook run of `tool`; fails loudly unless it succeeded."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    node_before = cgroup_cpu_seconds(host_cgroup(node.name))
    start = time.monotonic()
    result = run_playbook(inventory, str(tool.playbook), env=tool.env)
    wall = time.monotonic() - start
    node_after = cgroup_cpu_seconds(host_cgroup(node.name))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{tool.name} failed on {node.name}:\n{result.stdout[-6000:]}")
    controller = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return Run(wall, controller, node_after - node_before, play_recap(result.stdout)[node.name])


def start_host(node: Node, suite: str, attempts: int = 3) -> None:
    """A fresh test host; a boot that outlasts hack/local-host.sh's wait on a loaded
    machine is retried with another fresh host, as its time is not measured."""
    for _ in range(attempts):
        local_host("down", node.name)
        started = local_host("up", node.name, suite)
        if started.returncode == 0:
            return
    raise SystemExit(f"hack/local-host.sh up failed for {node.name}:\n{started.stderr[-2000:]}")


def measure(suite: str, tools: list[Tool], work: Path, rounds: int, reruns: int) -> None:
    prefix = os.environ.get("CRIOPS_TEST_HOST_PREFIX", "criops")
    for round_ in range(rounds):
        # Rotated each round: no tool always runs first or after the same neighbour.
        for tool in tools[round_ % len(tools) :] + tools[: round_ % len(tools)]:
            node = Node(f"{prefix}-peer-{tool.name}-{suite}")
            start_host(node, suite)
            try:
                inventory = tool.inventory(work / "inventories" / f"{tool.name}-{suite}-{round_}", node)
                tool.fresh.append(timed(tool, inventory, node))
                for _ in range(reruns):
                    tool.again.append(timed(tool, inventory, node))
                print(
                    f"[criops bench {datetime.now():%H:%M:%S}] {suite} round {round_ + 1}/{rounds} {tool.name}: "
                    + ", ".join(
                        f"{what} {run.wall:.1f} s (CPU {run.controller_cpu:.1f} + {run.node_cpu:.1f} s)"
                        for what, run in [("fresh", tool.fresh[-1])] + [("re-run", run) for run in tool.again[-reruns:]]
                    ),
                    file=sys.stderr,
                    flush=True,
                )
            finally:
                local_host("down", node.name)


def min_median(values: list[float]) -> str:
    return f"{min(values):.1f} / {statistics.median(values):.1f}"


def table(suite: str, tools: list[Tool]) -> str:
    out = io.StringIO()
    rounds = len(tools[0].fresh)
    reruns = len(tools[0].again) // rounds
    print(f"#### {suite}: {rounds} rounds of a fresh converge and {reruns} no-change re-runs per tool\n", file=out)
    print(
        "| tool | tasks fresh / re-run | fresh converge s (min / median) | no-change re-run s (min / median) "
        "| fresh CPU s, controller + node (median) | re-run CPU s, controller + node (median) | re-run changed |",
        file=out,
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |", file=out)
    for tool in tools:
        fresh_cpu = [run.cpu for run in tool.fresh]
        again_cpu = [run.cpu for run in tool.again]
        print(
            f"| {tool.name} | {tool.fresh[0].tasks} / {tool.again[0].tasks} "
            f"| {min_median([run.wall for run in tool.fresh])} | {min_median([run.wall for run in tool.again])} "
            f"| {statistics.median(fresh_cpu):.1f} "
            f"({statistics.median(run.controller_cpu for run in tool.fresh):.1f} + "
            f"{statistics.median(run.node_cpu for run in tool.fresh):.1f}) "
            f"| {statistics.median(again_cpu):.1f} "
            f"({statistics.median(run.controller_cpu for run in tool.again):.1f} + "
            f"{statistics.median(run.node_cpu for run in tool.again):.1f}) "
            f"| {max(run.recap.get('changed', 0) for run in tool.again)} |",
            file=out,
        )
    criops = tools[0]
    print(
        "\n| criops / peer (medians) | fresh converge wall | no-change re-run wall | fresh CPU | re-run CPU |",
        file=out,
    )
    print("| --- | ---: | ---: | ---: | ---: |", file=out)

    def ratio(ours: list[Run], theirs: list[Run], value: Callable[[Run], float]) -> str:
        return f"{statistics.median(map(value, ours)) / statistics.median(map(value, theirs)):.2f}"

    for peer in tools[1:]:
        wall, cpu = (lambda run: run.wall), (lambda run: run.cpu)
        print(
            f"| criops / {peer.name} | {ratio(criops.fresh, peer.fresh, wall)} "
            f"| {ratio(criops.again, peer.again, wall)} "
            f"| {ratio(criops.fresh, peer.fresh, cpu)} | {ratio(criops.again, peer.again, cpu)} |",
            file=out,
        )
    return out.getvalue()


def main(argv: list[str]) -> int:
    suites = argv or ["bookworm"]
    rounds = int(os.environ.get("BENCH_PEER_ROUNDS", "3"))
    reruns = int(os.environ.get("BENCH_PEER_RERUNS", "2"))
    paths = peer_artifacts()
    print(
        f"Side by side, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f} at the start "
        f"(1-minute average, {os.cpu_count()} cores); tasks = ok + skipped of the recap.\n"
    )
    for tool in TOOLS:
        print(f"- {tool}: {WHAT[tool]}")
    with tempfile.TemporaryDirectory(prefix="criops-bench-peers-") as tmp:
        work = Path(tmp)
        served = work / "serve"
        served.mkdir()
        with serve_directory(served) as server:
            kubespray_vars = kubespray_downloads(served, paths, server)
            for suite in suites:
                measured = tools(work / suite, paths, kubespray_vars)
                measure(suite, measured, work / suite, rounds, reruns)
                print(f"\n{table(suite, measured)}", end="", flush=True)
                print(f"\nload {os.getloadavg()[0]:.1f} at the end of {suite}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
