#!/usr/bin/env python3
"""Operator benchmarks: figures, not pass/fail. Prints Markdown for docs/benchmarks.md.

    python -m testworld.bench_operator [count] [scale|ready]   (default 1000, both; from the checkout's root)

scale:   a throwaway control plane; the operator under its ServiceAccount;
         `count` Nodes and `count` RuntimeNodes with spec.suspend (validation
         off). Operator RSS idle and with all of them handled, time to handle
         them all, and the latency of a label + status update under that load
         (p50/p99 over 100 spec changes, each measured to the Node label and to
         status.observedGeneration).
         Then a restart with all of them unchanged: the writes it makes (Nodes,
         RuntimeNodes, Events) and the time until its CPU settles.
ready:   a provisioned test host and one RuntimeNode: apply -> Ready, minus
         what critest itself took, split into the operator's own share and the
         playbook's (SSH, probe, smoke pod).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import kubernetes

from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    NAMESPACE,
    OperatorProcess,
    install_crd,
    install_operator_access,
    kubectl_json,
    register_node,
    runs,
    runtime_node,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import Node, local_host, run_playbook, ssh_port, write_inventory

ROOT = Path(__file__).resolve().parents[1]

# A focused critest keeps the benchmark short; the overhead does not depend on it.
FOCUS = ["Runtime info", "PodSandbox", "Container "]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def apply_list(plane: ControlPlane, items: list[dict]) -> None:
    for start in range(0, len(items), 200):
        chunk = {"apiVersion": "v1", "kind": "List", "items": items[start : start + 200]}
        done = plane.kubectl("create", "-f", "-", stdin=json.dumps(chunk), timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settled(pid: int, started: float, quiet: float = 5.0, busy: float = 0.1) -> tuple[float, float]:
    """Seconds from `started` to the end of the process's last busy half second
    (over `busy` of a CPU) before `quiet` seconds without one, and the CPU
    seconds it used until then."""
    last_time, last_cpu = time.monotonic(), cpu_seconds(pid)
    busy_until, busy_cpu = last_time, last_cpu
    while time.monotonic() - busy_until < quiet:
        time.sleep(0.5)
        now, cpu = time.monotonic(), cpu_seconds(pid)
        if (cpu - last_cpu) / (now - last_time) > busy:
            busy_until, busy_cpu = now, cpu
        last_time, last_cpu = now, cpu
    return busy_until - started, busy_cpu


def versions(core: kubernetes.client.CoreV1Api, custom: kubernetes.client.CustomObjectsApi) -> dict[str, str]:
    nodes = core.list_node().items
    rns = custom.list_cluster_custom_object("criops.dev", "v1alpha1", "runtimenodes")["items"]
    events = core.list_namespaced_event(NAMESPACE).items
    return {
        **{f"node/{n.metadata.name}": n.metadata.resource_version for n in nodes},
        **{f"runtimenode/{r['metadata']['name']}": r["metadata"]["resourceVersion"] for r in rns},
        **{f"event/{e.metadata.name}": e.metadata.resource_version for e in events},
    }


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def scale(workdir: Path, count: int) -> list[str]:
    plane = ControlPlane(workdir / "control-plane").start()
    operator = None
    try:
        install_crd(plane)
        kubeconfig = install_operator_access(plane, workdir)
        (workdir / "state").mkdir()
        operator = OperatorProcess(kubeconfig, workdir / "state", workdir / "operator.log", probe_tick=15).start()
        time.sleep(15)
        idle = rss_mib(operator.process.pid)

        names = [f"bench-{i:04d}" for i in range(count)]
        apply_list(plane, [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n}} for n in names])
        started = time.monotonic()
        apply_list(
            plane,
            [runtime_node(n, n, suspend=True) for n in names],
        )
        while True:
            items = kubectl_json(plane, "get", "runtimenodes")["items"]
            handled = sum(1 for i in items if i.get("status", {}).get("observedGeneration") == 1)
            if handled == count:
                break
            time.sleep(2)
        handled_in = time.monotonic() - started
        time.sleep(20)
        loaded = rss_mib(operator.process.pid)

        # Polled with the Python client (a few ms per read), not kubectl (~100 ms).
        api = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        core, custom = kubernetes.client.CoreV1Api(api), kubernetes.client.CustomObjectsApi(api)
        label_ms, status_ms = [], []
        for name in random.Random(7).sample(names, 100):
            before = time.monotonic()
            custom.patch_cluster_custom_object(
                "criops.dev", "v1alpha1", "runtimenodes", name, {"spec": {"runtime": "crun"}},
                _content_type="application/merge-patch+json",
            )  # fmt: skip
            label_done = status_done = None
            while label_done is None or status_done is None:
                now = time.monotonic()
                if label_done is None and core.read_node(name).metadata.labels.get("criops.dev/runtime") == "crun":
                    label_done = now
                if status_done is None:
                    obj = custom.get_cluster_custom_object("criops.dev", "v1alpha1", "runtimenodes", name)
                    if obj.get("status", {}).get("observedGeneration") == 2:
                        status_done = now
                time.sleep(0.005)
            label_ms.append((label_done - before) * 1000)
            status_ms.append((status_done - before) * 1000)

        def pct(values: list[float], q: int) -> float:
            return statistics.quantiles(values, n=100)[q - 1]

        label = f"{pct(label_ms, 50):.0f} / {pct(label_ms, 99):.0f}"
        status = f"{pct(status_ms, 50):.0f} / {pct(status_ms, 99):.0f}"

        # A restart with every RuntimeNode handled and unchanged: nothing to write.
        time.sleep(5)
        before = versions(core, custom)
        operator.stop()
        restarted = time.monotonic()
        operator = OperatorProcess(kubeconfig, workdir / "state", workdir / "operator.log", probe_tick=15).start()
        resync, resync_cpu = settled(operator.process.pid, restarted)
        after = versions(core, custom)
        writes = sorted(k for k in after if before.get(k) != after[k])
        restart_rss = rss_mib(operator.process.pid)
        return [
            f"| operator RSS, idle (MiB) | {idle:.0f} |",
            f"| operator RSS, {count} RuntimeNodes handled (MiB) | {loaded:.0f} |",
            f"| time to handle {count} new RuntimeNodes (s) | {handled_in:.1f} |",
            f"| Node label update after a spec change, p50 / p99 (ms) | {label} |",
            f"| status update after a spec change, p50 / p99 (ms) | {status} |",
            f"| restart with {count} unchanged RuntimeNodes: start -> CPU settled (s) | {resync:.1f} |",
            f"| restart: CPU seconds until settled | {resync_cpu:.1f} |",
            f"| restart: objects written (Nodes, RuntimeNodes, Events) | {len(writes)} {' '.join(writes[:5])} |",
            f"| restart: operator RSS after the resync (MiB) | {restart_rss:.0f} |",
        ]
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()


def ready(workdir: Path) -> list[str]:
    # Its own host name beside other runs (the integration tests' prefix).
    host, rn = f"{os.environ.get('CRIOPS_TEST_HOST_PREFIX', 'criops')}-bench-operator", "bench"
    local_host("down", host)
    assert local_host("up", host).returncode == 0
    plane = ControlPlane(workdir / "control-plane-ready").start()
    operator = None
    try:
        port = ssh_port(host)
        converged = run_playbook(write_inventory(workdir, Node(host)))
        if converged.returncode != 0:
            raise SystemExit(f"site.yml on {host} failed:\n{converged.stdout[-4000:]}")
        install_crd(plane)
        kubeconfig = install_operator_access(plane, workdir)
        register_node(plane, host, {}, [])
        (workdir / "state-ready").mkdir()
        operator = OperatorProcess(kubeconfig, workdir / "state-ready", workdir / "operator-ready.log").start()
        time.sleep(10)
        validation = {"parallel": 2, "focus": FOCUS, "expectedFailures": DEBIAN12_EXPECTED_FAILURES}
        manifest = runtime_node(rn, host, ssh_port=port, validation=validation)
        applied = time.time()
        plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        while True:
            status = kubectl_json(plane, "get", "runtimenode", rn).get("status", {})
            if status.get("phase") in ("Ready", "Failed"):
                break
            time.sleep(0.2)
        ready_at = time.time()
        if status["phase"] != "Ready":
            raise SystemExit(f"RuntimeNode {rn} is {status['phase']}: {json.dumps(status.get('conditions'), indent=2)}")
        record = runs(workdir / "state-ready", rn)[-1]
        run_start = datetime.strptime(record["startedAt"], "%Y%m%dT%H%M%S.%fZ").timestamp() - time.timezone
        run_end = parse_time(record["finishedAt"])
        critest_s = status["critest"]["durationSeconds"]
        total = ready_at - applied
        operator_share = (run_start - applied) + (ready_at - run_end)
        return [
            f"| apply -> {status['phase']}, critest focused on {status['critest']['result']} specs (s) | {total:.1f} |",
            f"| of which critest itself (s) | {critest_s:.1f} |",
            f"| apply -> Ready minus critest (s) | {total - critest_s:.1f} |",
            f"| of which the operator: apply -> playbook start, playbook end -> Ready (s) | {operator_share:.1f} |",
            f"| of which the playbook around critest (SSH, probe, smoke) (s) | {record['seconds'] - critest_s:.1f} |",
        ]
    finally:
        if operator is not None:
            operator.stop()
        plane.stop()
        local_host("down", host)


def main() -> None:
    args = sys.argv[1:]
    count = next((int(arg) for arg in args if arg.isdigit()), 1000)
    parts = [arg for arg in args if not arg.isdigit()] or ["ready", "scale"]
    workdir = ROOT / "artifacts" / "bench-operator"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    rows = (ready(workdir) if "ready" in parts else []) + (scale(workdir, count) if "scale" in parts else [])
    print("| operator figure | value |\n| --- | ---: |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
