#!/usr/bin/env python3
"""A fleet from one controller: figures, not pass/fail. Prints Markdown for docs/benchmarks.md.

    python -m testworld.bench_fleet [size]     (size: $BENCH_FLEET_SIZE, else 10; `make bench-fleet`)

One test host alone and `size` test hosts in one inventory, all fresh
(hack/local-host.sh), reached over SSH like nodes:

ansible:   site.yml's fresh converge on 1 host, then on `size` hosts from the
           same controller; then no-change re-runs, $BENCH_FLEET_ROUNDS rounds
           (2 unless set), each round running 1 host as configured and `size`
           hosts as configured and with one knob changed: forks 5, strategy
           free, pipelining off, SSH compression on, fact cache on disk,
           ControlPersist's masters cold (a new control path), no ControlMaster.
operator:  a throwaway control plane, the operator under its ServiceAccount
           with CRIOPS_CONCURRENCY = `size`, the hosts registered as Nodes;
           1 RuntimeNode (SSH access, a focused critest), then `size` of them
           applied at once: apply -> Ready for each.

Per run: wall seconds; the controller's CPU seconds (ansible-playbook, its SSH
connections, the operator and its runs: a cpuacct cgroup of the benchmark's
own), the test hosts' CPU seconds (their containers' cgroups) and how busy the
machine's cores were (all of its CPU time, other work included, over wall time
times cores). The test hosts share the controller's cores here; the
controller's CPU per extra host is what a fleet of real machines adds.
$BENCH_FLEET_PARTS ("ansible operator" unless set) picks the parts, $BENCH_FLEET_KNOBS
the knobs (all unless set: forks5 free nopipelining compression factcache
cold nocontrolmaster). Progress, each figure as it is measured, goes to stderr.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import kubernetes

from testworld.bench_operator import apply_list
from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    OperatorProcess,
    install_crd,
    install_operator_access,
    register_node,
    runtime_node,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import (
    Node,
    cgroup_cpu_seconds,
    host_cgroup,
    local_host,
    play_recap,
    run_playbook,
    ssh_port,
    write_inventory,
)

ROOT = Path(__file__).resolve().parents[1]
# Two groups of specs: enough to start pods on every node, short enough for a fleet at once.
FOCUS = ["Runtime info", "PodSandbox"]
CORES = os.cpu_count() or 1


class Accounts:
    """CPU seconds by cgroup (cpuacct on cgroup v1, cpu.stat on v2): the benchmark moves
    itself into a cgroup of its own before it starts what is to be counted, so
    what that starts (and the SSH masters those leave behind) is counted there.
    The test hosts are counted in the cgroups podman gave their containers."""

    def __init__(self, tag: str) -> None:
        self.v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
        self.root = Path("/sys/fs/cgroup") if self.v2 else Path("/sys/fs/cgroup/cpuacct")
        self.home = self._cgroup_of(os.getpid())
        self.groups = {name: self.root / f"{tag}-{name}" for name in ("bench", "controller", "control-plane")}
        for path in self.groups.values():
            path.mkdir(exist_ok=True)
        self.enter("bench")

    def _cgroup_of(self, pid: int) -> Path:
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if (self.v2 and controllers == "") or (not self.v2 and "cpuacct" in controllers.split(",")):
                return self.root / path.lstrip("/")
        raise RuntimeError(f"no cpu accounting cgroup for pid {pid}")

    def enter(self, name: str) -> None:
        (self.groups[name] / "cgroup.procs").write_text(str(os.getpid()))

    @contextlib.contextmanager
    def inside(self, name: str) -> Iterator[None]:
        """Processes started in this block are counted in `name`."""
        self.enter(name)
        try:
            yield
        finally:
            self.enter("bench")

    def cpu(self, name: str) -> float:
        return cgroup_cpu_seconds(self.groups[name])

    def machine(self) -> float:
        if self.v2:
            return sum(int(line.split()[i]) for line in _cpu_line() for i in (1, 2, 3)) / os.sysconf("SC_CLK_TCK")
        return cgroup_cpu_seconds(self.root)

    def close(self) -> None:
        (self.home / "cgroup.procs").write_text(str(os.getpid()))
        for path in self.groups.values():
            for _ in range(20):
                try:
                    path.rmdir()
                    break
                except OSError:
                    # SSH masters of the last runs end when their hosts are gone.
                    time.sleep(0.5)


def _cpu_line() -> list[str]:
    return [line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("cpu ")]


@dataclass
class Figures:
    wall: float
    controller: float
    nodes: float
    busy: float  # share of the machine's cores in use, other work included

    def __str__(self) -> str:
        return (
            f"wall {self.wall:.1f} s, controller CPU {self.controller:.1f} s, "
            f"test hosts' CPU {self.nodes:.1f} s, cores busy {100 * self.busy:.0f} %"
        )

    @staticmethod
    def median(runs: list[Figures]) -> Figures:
        return Figures(
            *(statistics.median(getattr(r, f) for r in runs) for f in ("wall", "controller", "nodes", "busy"))
        )


class Fleet:
    def __init__(self, accounts: Accounts, nodes: list[Node]) -> None:
        self.accounts = accounts
        self.node_cgroups = {n.name: host_cgroup(n.name) for n in nodes}

    def measure(self, nodes: list[Node], run: Callable[[], object], group: str = "controller") -> Figures:
        acct = self.accounts

        def nodes_cpu() -> float:
            return sum(cgroup_cpu_seconds(self.node_cgroups[n.name]) for n in nodes)

        before = (time.monotonic(), acct.cpu(group), nodes_cpu(), acct.machine())
        with acct.inside(group):
            run()
        after = (time.monotonic(), acct.cpu(group), nodes_cpu(), acct.machine())
        wall = after[0] - before[0]
        return Figures(wall, after[1] - before[1], after[2] - before[2], (after[3] - before[3]) / (wall * CORES))


def show(text: str) -> None:
    """Progress on stderr as each figure is measured (the tables come at the end, on stdout)."""
    print(f"[bench-fleet {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def start_hosts(names: list[str]) -> float:
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        for name, done in zip(names, pool.map(lambda n: local_host("up", n), names), strict=True):
            if done.returncode != 0:
                raise SystemExit(f"hack/local-host.sh up failed for {name}:\n{done.stdout}{done.stderr}")
    return time.monotonic() - started


def playbook(inventory: Path, env: dict[str, str], extra_vars: dict | None = None, changed: int | None = None) -> None:
    done = run_playbook(inventory, env=env, extra_vars=extra_vars)
    if done.returncode != 0:
        raise SystemExit(f"site.yml failed ({inventory}):\n{done.stdout[-4000:]}")
    if changed is not None:
        counted = sum(r["changed"] for r in play_recap(done.stdout).values())
        if counted != changed:
            print(f"warning: a no-change re-run changed {counted} tasks ({inventory})", file=sys.stderr)


def row(label: str, hosts: int, runs: list[Figures], one: Figures | None) -> str:
    wall = sorted(r.wall for r in runs)
    med = Figures.median(runs)
    walls = f"{wall[0]:.1f}" if len(wall) == 1 else f"{wall[0]:.1f} / {med.wall:.1f}"
    ratio = f"{med.wall / one.wall:.2f}" if one else ""
    return (
        f"| {label} | {hosts} | {walls} | {ratio} | {med.controller:.1f} | {med.controller / hosts:.2f} "
        f"| {med.nodes:.1f} | {med.nodes / hosts:.1f} | {100 * med.busy:.0f} % |"
    )


def extra_node_cost(one: Figures, many: Figures, size: int) -> str:
    return f"{(many.controller - one.controller) / (size - 1):.2f}"


def ansible_part(workdir: Path, fleet: Fleet, solo: Node, nodes: list[Node], rounds: int) -> list[str]:
    size = len(nodes)
    one_inv = write_inventory(workdir / "inventory-1", solo)
    many_inv = write_inventory(workdir / "inventory-n", nodes)
    # Every run uses the benchmark's own SSH control path, so "warm" means the masters
    # of this benchmark's last run (ControlPersist), not anyone else's.
    control = workdir / "cp"
    base = {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(control)}
    fresh_one = fleet.measure([solo], lambda: playbook(one_inv, base))
    show(f"fresh converge, 1 host: {fresh_one}")
    fresh_many = fleet.measure(nodes, lambda: playbook(many_inv, base))
    show(f"fresh converge, {size} hosts: {fresh_many}")

    no_master = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o ControlMaster=no"
    facts = str(workdir / "facts")
    fact_cache = {**base, "ANSIBLE_CACHE_PLUGIN": "jsonfile", "ANSIBLE_CACHE_PLUGIN_CONNECTION": facts}
    every: dict[str, tuple[str, Callable[[], dict[str, str]], dict | None]] = {
        "forks5": ("forks 5 (Ansible's default)", lambda: {**base, "ANSIBLE_FORKS": "5"}, None),
        "free": ("strategy free", lambda: {**base, "ANSIBLE_STRATEGY": "free"}, None),
        "nopipelining": ("pipelining off", lambda: {**base, "ANSIBLE_PIPELINING": "False"}, None),
        "compression": (
            "SSH compression on (Ansible's -C, added to ansible.cfg's `ssh_args`)",
            lambda: {**base, "ANSIBLE_SSH_EXTRA_ARGS": "-C"},
            None,
        ),
        "factcache": ("fact cache on disk (jsonfile), warm", lambda: fact_cache, None),
        "cold": (
            "SSH masters cold (a new ControlPath: every host's first connection anew)",
            lambda: {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / f"cp-{uuid.uuid4().hex[:8]}")},
            None,
        ),
        "nocontrolmaster": (
            "no ControlMaster (a new SSH connection per task)",
            lambda: {**base, "ANSIBLE_SSH_ARGS": "-o ControlMaster=no"},
            {"ansible_ssh_common_args": no_master},
        ),
    }
    knobs = {key: every[key] for key in os.environ.get("BENCH_FLEET_KNOBS", " ".join(every)).split()}
    if "factcache" in knobs:
        # The fact cache filled once, outside the rounds.
        playbook(many_inv, fact_cache, changed=0)
    results: dict[str, list[Figures]] = {"one": [], "many": [], **{k: [] for k in knobs}}
    for turn in range(rounds):
        results["one"].append(fleet.measure([solo], lambda: playbook(one_inv, base, changed=0)))
        results["many"].append(fleet.measure(nodes, lambda: playbook(many_inv, base, changed=0)))
        show(f"round {turn + 1}: re-run 1 host {results['one'][-1]}, {size} hosts {results['many'][-1]}")
        for key, (_, env, extra) in knobs.items():
            results[key].append(fleet.measure(nodes, lambda e=env, x=extra: playbook(many_inv, e(), x, changed=0)))
            show(f"round {turn + 1}: {key} {results[key][-1]}")

    one, many = Figures.median(results["one"]), Figures.median(results["many"])
    lines = [
        "| site.yml run | hosts | wall (s), min / median | wall / 1 host | controller CPU (s) "
        "| controller CPU per host (s) | test hosts' CPU (s) | per host (s) | cores busy (machine) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        row("fresh converge", 1, [fresh_one], None),
        row("fresh converge", size, [fresh_many], fresh_one),
        row("no-change re-run, as configured", 1, results["one"], None),
        row("no-change re-run, as configured", size, results["many"], one),
        *(row(f"no-change re-run, {label}", size, results[key], one) for key, (label, _, _) in knobs.items()),
        "",
        f"Controller CPU per extra host: fresh converge {extra_node_cost(fresh_one, fresh_many, size)} s, "
        f"no-change re-run {extra_node_cost(one, many, size)} s.",
    ]
    return lines


def operator_part(workdir: Path, fleet: Fleet, accounts: Accounts, solo: Node, nodes: list[Node]) -> list[str]:
    size = len(nodes)
    plane = ControlPlane(workdir / "control-plane")
    with accounts.inside("control-plane"):
        plane.start()
    operator = None
    try:
        install_crd(plane)
        kubeconfig = install_operator_access(plane, workdir)
        for node in [solo, *nodes]:
            register_node(plane, node.name, {}, [])
        (workdir / "state").mkdir()
        # Every RuntimeNode's playbook at once: the default (2) would queue them.
        settings = {"CRIOPS_CONCURRENCY": str(size)}
        with accounts.inside("controller"):
            operator = OperatorProcess(kubeconfig, workdir / "state", workdir / "operator.log", 15, settings).start()
        time.sleep(10)
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        custom = kubernetes.client.CustomObjectsApi(api)
        # No probe during the measurement: the interval is a day.
        specs: set[str] = set()
        failed: dict[str, str] = {}
        validation = {"focus": FOCUS, "expectedFailures": DEBIAN12_EXPECTED_FAILURES, "interval": "24h"}

        def validate(batch: list[Node], ready: dict[str, float], critest: dict[str, float]) -> None:
            names = {n.name for n in batch}
            manifests = [runtime_node(n.name, n.name, ssh_port=ssh_port(n.name), validation=validation) for n in batch]
            applied = time.monotonic()
            apply_list(plane, manifests)
            while names - ready.keys():
                for item in custom.list_cluster_custom_object("criops.dev", "v1alpha1", "runtimenodes")["items"]:
                    name, status = item["metadata"]["name"], item.get("status", {})
                    if name in names and name not in ready and status.get("phase") in ("Ready", "Failed"):
                        ready[name] = time.monotonic() - applied
                        if status["phase"] != "Ready":
                            # Counted and shown, not fatal: the other nodes' figures still stand.
                            failed[name] = json.dumps(status.get("conditions"))[:1500]
                            show(f"RuntimeNode {name} Failed: {failed[name]}")
                            continue
                        critest[name] = status["critest"]["durationSeconds"]
                        specs.add(status["critest"]["result"])
                time.sleep(0.5)

        def one_batch(batch: list[Node]) -> tuple[Figures, float, dict[str, float], dict[str, float]]:
            ready: dict[str, float] = {}
            critest: dict[str, float] = {}
            plane_before = accounts.cpu("control-plane")
            figures = fleet.measure(batch, lambda: validate(batch, ready, critest), group="bench")
            return figures, accounts.cpu("control-plane") - plane_before, ready, critest

        # The operator's CPU is read apart from the benchmark's polling (group "bench").
        results = []
        for batch in ([solo], nodes):
            controller_before = accounts.cpu("controller")
            figures, plane_cpu, ready, critest = one_batch(batch)
            figures.controller = accounts.cpu("controller") - controller_before
            results.append((batch, figures, plane_cpu, ready, critest))
            show(f"{len(batch)} RuntimeNodes: {figures}, API server + etcd {plane_cpu:.1f} s, Ready after {ready}")
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()

    lines = [
        "| RuntimeNodes applied at once | apply -> last Ready (s) | wall / 1 | apply -> Ready, median / max (s) "
        "| critest per node, median (s) | operator CPU (s) | per RuntimeNode (s) | test hosts' CPU (s) "
        "| per host (s) | API server + etcd CPU (s) | cores busy (machine) |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    first = results[0][1]
    for batch, fig, plane_cpu, ready, critest in results:
        count = len(batch)
        lines.append(
            f"| {count} | {fig.wall:.1f} | {fig.wall / first.wall:.2f} | {statistics.median(ready.values()):.1f} / "
            f"{max(ready.values()):.1f} | {statistics.median(critest.values() or [0]):.1f} | {fig.controller:.1f} "
            f"| {fig.controller / count:.2f} | {fig.nodes:.1f} | {fig.nodes / count:.1f} | {plane_cpu:.1f} "
            f"| {100 * fig.busy:.0f} % |"
        )
    lines += [
        "",
        f"Operator CPU per extra RuntimeNode: {extra_node_cost(results[0][1], results[1][1], size)} s "
        f"(critest focused on {', '.join(FOCUS)}: {' '.join(sorted(specs))} passed; CRIOPS_CONCURRENCY={size}).",
        *(f"Failed instead of Ready: {name}: {why}" for name, why in failed.items()),
    ]
    return lines


def main() -> None:
    size = int(sys.argv[1]) if len(sys.argv) > 1 else int(os.environ.get("BENCH_FLEET_SIZE", "10"))
    if size < 2:
        raise SystemExit("a fleet has at least 2 hosts")
    rounds = int(os.environ.get("BENCH_FLEET_ROUNDS", "2"))
    parts = os.environ.get("BENCH_FLEET_PARTS", "ansible operator").split()
    prefix = os.environ.get("CRIOPS_TEST_HOST_PREFIX", "criops")
    workdir = ROOT / "artifacts" / "bench-fleet"
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    solo = Node(f"{prefix}-fleet-solo")
    nodes = [Node(f"{prefix}-fleet-{i:02d}") for i in range(size)]
    names = [solo.name, *(n.name for n in nodes)]
    accounts = Accounts(f"{prefix}-bench-fleet-{os.getpid()}")
    load = os.getloadavg()[0]
    try:
        for name in names:
            local_host("down", name)
        boot = start_hosts(names)
        fleet = Fleet(accounts, [solo, *nodes])
        out = [
            f"{size + 1} test hosts up in {boot:.1f} s; load average {load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} now; {CORES} cores.",
            "",
        ]
        if "ansible" in parts:
            out += [*ansible_part(workdir, fleet, solo, nodes, rounds), ""]
        elif "operator" in parts:
            # The validations need converged hosts.
            inventory = write_inventory(workdir / "inventory-all", [solo, *nodes])
            playbook(inventory, {"ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / "cp")})
        if "operator" in parts:
            out += operator_part(workdir, fleet, accounts, solo, nodes)
        out.append(f"\nLoad average at the end: {os.getloadavg()[0]:.1f}.")
        print("\n".join(out))
    finally:
        for name in names:
            local_host("down", name)
        accounts.close()


if __name__ == "__main__":
    main()
