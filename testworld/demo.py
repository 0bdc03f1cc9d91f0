#!/usr/bin/env python3
"""The criops demo on this machine, end to end through the operator.

A fresh local test host (criops-local, a Debian 12 systemd container) and a
throwaway cluster (etcd, kube-apiserver, kube-scheduler and
kube-controller-manager on loopback) start; criops' CRD, namespace and RBAC are
applied; the operator runs under its own ServiceAccount; a RuntimeNode for
criops-local is applied with provisioning on. The operator provisions the host
with site.yml, proves it with critest, labels the Node, and `kubectl get
runtimenodes` shows it Ready with its critest figure. Then the host joins as a
real Node (a kubelet on the containerd criops just proved, as kubeadm would
join it: testworld/kubelet.py) and a pod that asks for a proven node
(nodeSelector criops.dev/validated=true) runs there.

The test host stays up afterwards (its kubelet stopped); the cluster and the
operator stop. Everything the demo wrote is under artifacts/demo/.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    OperatorProcess,
    install_crd,
    install_operator_access,
    kubectl_json,
    register_node,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane
from testworld.filter_plugins import critest_report
from testworld.hosts import Node, local_host
from testworld.kubelet import join, leave

ROOT = Path(__file__).resolve().parents[1]

HOST, RN, SSH_PORT = "criops-local", "criops-local", 22022
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "hello-criops", "namespace": "default"},
    "spec": {
        "nodeSelector": {"criops.dev/validated": "true"},
        "terminationGracePeriodSeconds": 0,
        "containers": [{
            "name": "hello", "image": "10.0.2.2:5000/criops/busybox:1.0",
            "command": ["sh", "-c", "echo hello from a node criops proved; exec sleep 3600"],
        }],
    },
}  # fmt: skip


def say(message: str) -> None:
    print(f"[criops demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    workdir = ROOT / "artifacts" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "state").mkdir(parents=True)

    say(f"starting a fresh test host {HOST} (SSH on 127.0.0.1:{SSH_PORT})")
    local_host("down", HOST)
    started = local_host("up", HOST)
    if started.returncode != 0:
        sys.exit(started.stderr)

    say("starting etcd, kube-apiserver, kube-scheduler and kube-controller-manager on loopback")
    plane = ControlPlane(workdir / "control-plane").start()
    plane.start_cluster()
    operator, joined = None, False
    try:
        install_crd(plane)
        kubeconfig = install_operator_access(plane, workdir)
        register_node(plane, HOST, {"kubernetes.io/hostname": HOST}, [])
        say("starting the operator under its ServiceAccount (log: artifacts/demo/operator.log)")
        operator = OperatorProcess(kubeconfig, workdir / "state", workdir / "operator.log").start()

        manifest = runtime_node(
            RN,
            HOST,
            ssh_port=SSH_PORT,
            provision={"enabled": True},
            validation={"expectedFailures": DEBIAN12_EXPECTED_FAILURES, "parallel": 2, "interval": "5m"},
            taintUntilValidated=True,
        )
        (workdir / "runtimenode.json").write_text(json.dumps(manifest, indent=2))
        say("kubectl apply -f artifacts/demo/runtimenode.json")
        print(plane.kubectl("apply", "-f", str(workdir / "runtimenode.json")).stdout, end="")

        last, deadline = "", time.monotonic() + 1200
        while time.monotonic() < deadline:
            status = kubectl_json(plane, "get", "runtimenode", RN).get("status", {})
            if status.get("phase") != last:
                last = status.get("phase", "")
                say(f"phase {last or '(none yet)'}")
            if last in ("Ready", "Failed", "Degraded", "Unsupported"):
                break
            time.sleep(3)
        say("kubectl get runtimenodes")
        print(plane.kubectl("get", "runtimenodes").stdout)
        status = kubectl_json(plane, "get", "runtimenode", RN)["status"]
        if "critest" in status:
            print(critest_report.critest_table(status["critest"]), "\n")
        for condition in status.get("conditions", []):
            print(f"  {condition['type']:<12} {condition['status']:<6} {condition['reason']}: {condition['message']}")
        node = kubectl_json(plane, "get", "node", HOST)
        labels = {k: v for k, v in node["metadata"]["labels"].items() if k.startswith("criops.dev/")}
        print(f"\nNode {HOST} labels: {labels}")
        events = plane.kubectl("-n", "criops-system", "get", "events", "--sort-by=.lastTimestamp")
        print(f"\nEvents (criops-system):\n{events.stdout}")
        if last != "Ready":
            return 1
        host = Node(HOST)
        say(f"{HOST} joins as a real Node: a kubelet on the containerd criops just proved")
        joined = True
        join(plane, host)
        return run_a_pod(plane, host)
    finally:
        if joined:
            leave(plane, Node(HOST))
        if operator is not None:
            operator.stop()
        plane.stop()
        say(f"cluster and operator stopped; {HOST} stays up (hack/local-host.sh down removes it)")


def run_a_pod(plane: ControlPlane, host: Node) -> int:
    """A pod that asks for a node criops proved: scheduled there, Running, its log and its
    sandbox as the node's containerd shows it."""
    say("kubectl create a pod with nodeSelector criops.dev/validated=true")
    created = plane.kubectl("create", "-f", "-", stdin=json.dumps(POD))
    if created.returncode != 0:
        print(created.stderr)
        return 1
    name = POD["metadata"]["name"]

    def running() -> bool:
        return kubectl_json(plane, "-n", "default", "get", "pod", name).get("status", {}).get("phase") == "Running"

    began = time.monotonic()
    try:
        wait_for(f"pod {name} Running", running, 180, interval=0.5)
    except AssertionError as error:
        say(str(error))
        print(plane.kubectl("-n", "default", "describe", "pod", name).stdout)
        return 1
    say(f"pod {name}: Running after {time.monotonic() - began:.1f} s")
    print(plane.kubectl("-n", "default", "get", "pod", name, "-o", "wide").stdout)
    print(plane.kubectl("-n", "default", "logs", name).stdout)
    sandboxes = host.sh(f"crictl pods --name {name} --output json").stdout
    for sandbox in json.loads(sandboxes).get("items", []):
        print(f"on {HOST}: sandbox {sandbox['id'][:13]} {sandbox['state']}, runtime handler "
              f"{sandbox.get('runtimeHandler') or 'runc (the default)'}")  # fmt: skip
    plane.kubectl("-n", "default", "delete", "pod", name, "--wait=false")
    return 0


if __name__ == "__main__":
    sys.exit(main())
