"""A real cluster: a test host provisioned by site.yml joins as a Node with a real
kubelet (testworld/kubelet.py), beside kube-scheduler and kube-controller-manager,
and pods that ask for criops' RuntimeClass crun land only where criops proved crun.

The tests share one host, one Node and one RuntimeNode and run in file order:
joined -> a pod already running, the Node live (kubelet running, schedulable),
the RuntimeNode validated without draining while a crun pod waits Pending for
the proof, then runs under crun -> the timer probe on the live Node ->
crun broken: validated=false and new pods Pending -> delete and leave: the
RuntimeClass gone and the machine as it was before the kubelet started.

A running kubelet stops within seconds every pod sandbox it did not create
(its housekeeping treats them as orphans). So criops runs critest and the smoke
pod of containerd runtimes on a throwaway containerd beside the node's (its own
root, state and socket, removed after; roles/cri_validate): the kubelet never
sees them, and they never see the kubelet's pods. The tests watch the node
through every validation: the node's containerd keeps exactly its pods, the
running pods keep their containers (no restart), and nothing of the throwaway
instance is left afterwards.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    NAMESPACE,
    kubectl_json,
    operator_world,
    phase_is,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane, versions
from testworld.hosts import Node, machine_state, run_playbook
from testworld.kubelet import join, leave

pytestmark = pytest.mark.integration

RN = "kn-crun"
IMAGE = "10.0.2.2:5000/criops/busybox:1.0"
LOG_LINE = "a pod under the RuntimeClass crun"
# A pod of the cluster's default handler (runc), running before criops validates the node.
RESIDENT = "resident"
INTERVAL = 30
# Set aside while crun is broken, restored after.
CRUN, CRUN_ASIDE = "/usr/bin/crun", "/usr/bin/crun.criops-test"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def cluster(
    kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, inventory: Path, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """The module's host provisioned and joined, the scheduler and controller manager running,
    the operator watching; the machine's state recorded before the kubelet started."""
    start = time.monotonic()
    provisioned = run_playbook(inventory)
    assert provisioned.returncode == 0, provisioned.stdout[-6000:]
    TIMINGS["site.yml"] = time.monotonic() - start
    before = machine_state()
    control_plane.start_cluster()
    try:
        start = time.monotonic()
        join(control_plane, test_host)
        TIMINGS["kubelet start -> Node Ready"] = time.monotonic() - start
        with operator_world(control_plane, test_host, tmp_path_factory.mktemp("operator"), register=False) as world:
            yield {**world, "machine before": before}
    finally:
        test_host.sh(f"[ -e {CRUN_ASIDE} ] && mv -f {CRUN_ASIDE} {CRUN}; true", check=False)
        leave(control_plane, test_host)
        control_plane.stop_cluster()
        print(f"timings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")


def pod(name: str) -> dict[str, Any]:
    """A pod that asks for the RuntimeClass crun and nothing about nodes."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "runtimeClassName": "crun",
            "terminationGracePeriodSeconds": 0,
            "containers": [
                {"name": "sleep", "image": IMAGE, "command": ["sh", "-c", f"echo {LOG_LINE}; exec sleep 3600"]}
            ],
        },
    }


def create_pod(plane: ControlPlane, name: str) -> None:
    created = plane.kubectl("create", "-f", "-", stdin=json.dumps(pod(name)))
    assert created.returncode == 0, created.stderr


def get_pod(plane: ControlPlane, name: str) -> dict[str, Any]:
    return kubectl_json(plane, "-n", "default", "get", "pod", name)


def unschedulable(plane: ControlPlane, name: str) -> str:
    """The scheduler's message for a pod it could not place ("" while it has none)."""
    conditions = get_pod(plane, name).get("status", {}).get("conditions", [])
    found = next((c for c in conditions if c["type"] == "PodScheduled" and c["status"] == "False"), {})
    return found.get("message", "") if found.get("reason") == "Unschedulable" else ""


def running(plane: ControlPlane, name: str) -> dict[str, Any] | bool:
    current = get_pod(plane, name)
    return current if current.get("status", {}).get("phase") == "Running" else False


def labels(world: dict[str, Any]) -> dict[str, str]:
    return kubectl_json(world["plane"], "get", "node", world["host"].name)["metadata"].get("labels", {})


def validated_reason(plane: ControlPlane) -> str:
    status = kubectl_json(plane, "get", "runtimenode", RN).get("status", {})
    return next((c.get("reason", "") for c in status.get("conditions", []) if c["type"] == "Validated"), "")


def live_state(host: Node) -> dict[str, Any]:
    """The node's containerd as validation must leave it: its pods, their host-local IP
    allocations (address -> sandbox), network namespaces, and containerd shims."""
    script = (
        "crictl pods -q; echo ---; "
        # One file per address, its first line the sandbox; last_reserved_ip and lock are host-local's own.
        "for f in /var/lib/cni/networks/*/*; do case ${f##*/} in *[!0-9a-f.:]*) ;; "
        '*) echo "${f##*/} $(head -1 $f)";; esac; done; echo ---; '
        "ls /run/netns; echo ---; pgrep -c containerd-shim"
    )
    pods, ips, netns, shims = (part.split() for part in host.sh(script, check=False).stdout.split("---"))
    return {"pods": set(pods), "ips": dict(zip(ips[::2], ips[1::2], strict=True)), "netns": set(netns),
            "shims": int(shims[0])}  # fmt: skip


def throwaway_traces(host: Node) -> dict[str, str]:
    """Whatever is left of the throwaway containerd: each entry must be empty."""
    probes = {
        # The brackets keep these scripts' own command lines from matching.
        "unit": "systemctl list-units --all --plain --no-legend '[c]riops-validate-*'",
        "processes": "pgrep -af '[c]riops-[v]alidate'",
        "paths": "ls -d /run/[c]riops-validate-* /var/lib/[c]riops-validate-* 2>/dev/null",
        "mounts": "findmnt -rn -o TARGET | grep '[c]riops-validate'",
    }
    return {what: host.sh(script, check=False).stdout.strip() for what, script in probes.items()}


def assert_as_before(host: Node, before: dict[str, Any], added_pods: set[str] = frozenset()) -> None:
    """Nothing of the throwaway instance left; the node's containerd has the pods it had (and the
    `added_pods` the kubelet started meanwhile), and IP allocations and netns only for those."""
    assert throwaway_traces(host) == dict.fromkeys(("unit", "processes", "paths", "mounts"), "")
    after = live_state(host)
    assert after["pods"] == before["pods"] | added_pods
    added_ips = {ip: owner for ip, owner in after["ips"].items() if ip not in before["ips"]}
    assert {ip: owner for ip, owner in after["ips"].items() if ip in before["ips"]} == before["ips"]
    assert set(added_ips.values()) == added_pods, added_ips
    assert before["netns"] <= after["netns"] and len(after["netns"]) == len(before["netns"]) + len(added_pods)
    assert after["shims"] == before["shims"] + len(added_pods)


def resident_container(plane: ControlPlane) -> tuple[str, int, str]:
    """The resident pod's (containerID, restartCount, phase) as the kubelet reports them."""
    status = get_pod(plane, RESIDENT)["status"]
    container = (status.get("containerStatuses") or [{}])[0]
    return container.get("containerID", ""), container.get("restartCount", -1), status.get("phase", "")


class NodeWatch:
    """Samples once a second, until stopped, the node containerd's pods, the resident pod's
    container (on the node and as the kubelet reports it), and whether the throwaway
    containerd is up."""

    def __init__(self, plane: ControlPlane, host: Node) -> None:
        self.plane, self.host = plane, host
        self.samples: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pods, resident, throwaway = self.host.sh(
                "crictl pods -q | tr '\\n' ' '; echo '|'; "
                f"crictl ps -q --label io.kubernetes.pod.name={RESIDENT} | tr '\\n' ' '; echo '|'; "
                "systemctl is-active criops-validate-containerd.service",
                check=False,
            ).stdout.split("|")
            self.samples.append(
                {"pods": set(pods.split()), "resident": resident.split(), "throwaway": throwaway.strip() == "active",
                 "api": resident_container(self.plane)}
            )  # fmt: skip
            self._stop.wait(1)

    def __enter__(self) -> NodeWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def assert_untouched(self, pods: set[str], container: tuple[str, int, str], added: set[str] = frozenset()) -> None:
        """In every sample: the node's containerd had `pods` (and some of `added`), the resident
        container was the same one, never restarted; and the throwaway containerd was seen up."""
        assert self.samples, "no samples"
        assert any(s["throwaway"] for s in self.samples), "the throwaway containerd was never seen running"
        odd = [s for s in self.samples if not pods <= s["pods"] <= pods | added or s["api"] != container]
        assert not odd, f"expected pods {pods} (+ {added}) and {container}, saw {odd[:3]}"
        assert {tuple(s["resident"]) for s in self.samples} == {(container[0].removeprefix("containerd://"),)}


def sandbox(host: Node, pod: str) -> str:
    found = host.sh(f"crictl pods --namespace default --name {pod} --state ready -q").stdout.split()
    assert len(found) == 1, found
    return found[0]


def test_a_test_host_joins_as_a_real_node(cluster):
    plane, host = cluster["plane"], cluster["host"]
    node = kubectl_json(plane, "get", "node", host.name)
    info = node["status"]["nodeInfo"]
    assert info["kubeletVersion"] == versions()["KUBERNETES_VERSION"]
    assert info["containerRuntimeVersion"].startswith("containerd://")
    # The kernel settings the kubelet wants are the read-only files inside the host, not the machine's.
    assert host.sh("cat /proc/sys/vm/overcommit_memory").stdout.strip() == "1"
    # A running kubelet changed nothing on the machine either: its cgroups are inside the host's.
    assert machine_state() == cluster["machine before"]


def test_a_live_node_is_validated_without_draining_while_its_pods_run(cluster):
    plane, host = cluster["plane"], cluster["host"]
    resident = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": RESIDENT, "namespace": "default"},
        "spec": {"terminationGracePeriodSeconds": 0,
                 "containers": [{"name": "sleep", "image": IMAGE, "command": ["sleep", "3600"]}]},
    }  # fmt: skip
    assert plane.kubectl("create", "-f", "-", stdin=json.dumps(resident)).returncode == 0
    wait_for("the resident pod Running", lambda: running(plane, RESIDENT), 120, interval=1)
    container = wait_for("the resident container", lambda: (c := resident_container(plane))[0] and c, 30)
    kubelet = host.sh("systemctl show kubelet.service -p NRestarts -p ActiveEnterTimestampMonotonic").stdout
    before = live_state(host)
    assert before["pods"] and before["ips"], before
    cluster["resident"] = container

    manifest = runtime_node(
        RN, host.name, runtime="crun", ssh_port=cluster["port"],
        validation={"focus": ["Runtime info", "PodSandbox"], "parallel": 2, "interval": f"{INTERVAL}s",
                    "expectedFailures": DEBIAN12_EXPECTED_FAILURES},
    )  # fmt: skip
    with NodeWatch(plane, host) as watch:
        start = time.monotonic()
        applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
        assert applied.returncode == 0, applied.stderr
        # The RuntimeClass comes first; the Node is live (Ready, schedulable) and is not drained.
        wait_for("the RuntimeClass crun", lambda: plane.kubectl("get", "runtimeclass", "crun").returncode == 0, 60)
        runtime_class = kubectl_json(plane, "get", "runtimeclass", "crun")
        assert runtime_class["handler"] == "crun" and "overhead" not in runtime_class
        selector = {"criops.dev/runtime": "crun", "criops.dev/validated": "true"}
        assert runtime_class["scheduling"]["nodeSelector"] == selector

        create_pod(plane, "crun-1")
        # Admission put the RuntimeClass's selector on the pod; no Node matches it while validation runs.
        assert get_pod(plane, "crun-1")["spec"]["nodeSelector"] == selector
        message = wait_for("crun-1 unschedulable", lambda: unschedulable(plane, "crun-1"), 60)
        assert "didn't match Pod's node affinity/selector" in message, message
        assert kubectl_json(plane, "get", "runtimenode", RN).get("status", {}).get("phase") != "Ready"
        # Labeled unproven before validation starts (the scheduler may have looked before).
        wait_for("validated=false", lambda: labels(cluster).get("criops.dev/validated") == "false", 30, interval=0.5)

        status = wait_for("generation 1 Ready or Failed", phase_is(plane, RN, "Ready", "Failed", generation=1), 600)
        TIMINGS["live Node: apply -> RuntimeNode Ready (focused critest, kubelet running)"] = time.monotonic() - start
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert status["critest"]["handler"] == "crun" and status["critest"]["passed"] > 0
    assert labels(cluster)["criops.dev/validated"] == "true"
    assert not [c for c in status["conditions"] if c.get("reason") == "NodeNotDrained"]

    # The kubelet ran throughout, the Node was never cordoned, the resident pod never noticed.
    assert host.sh("systemctl show kubelet.service -p NRestarts -p ActiveEnterTimestampMonotonic").stdout == kubelet
    assert not kubectl_json(plane, "get", "node", host.name)["spec"].get("unschedulable")
    assert resident_container(plane) == container

    placed = wait_for("crun-1 Running", lambda: running(plane, "crun-1"), 120, interval=1)
    assert placed["spec"]["nodeName"] == host.name
    # kube-apiserver reaches the kubelet: its client certificate, the kubelet's webhook
    # authorization, the egress proxy to the host's published port.
    logs = plane.kubectl("-n", "default", "logs", "crun-1")
    assert (logs.returncode, logs.stdout.strip()) == (0, LOG_LINE), logs.stderr

    # A new pod on the proven node: create -> Running.
    start = time.monotonic()
    create_pod(plane, "crun-2")
    wait_for("crun-2 Running", lambda: running(plane, "crun-2"), 120, interval=0.5)
    TIMINGS["pod create -> Running"] = time.monotonic() - start

    # From the node: the pod's sandbox runs under the handler crun, its container under /usr/bin/crun.
    for name in ("crun-1", "crun-2"):
        inspected = json.loads(host.sh(f"crictl inspectp {sandbox(host, name)}").stdout)
        assert inspected["status"]["runtimeHandler"] == "crun"
        assert inspected["info"]["runtimeOptions"]["binary_name"] == CRUN

    # Through the whole validation the node's containerd had only its own pods (crun-1's once the
    # proof let the scheduler place it), and nothing of the throwaway instance is left.
    watch.assert_untouched(before["pods"], container, added={sandbox(host, "crun-1")})
    assert_as_before(host, before, {sandbox(host, "crun-1"), sandbox(host, "crun-2")})


def test_the_timer_probe_on_the_live_node_reports_healthy(cluster):
    plane, host = cluster["plane"], cluster["host"]
    proven = kubectl_json(plane, "get", "runtimenode", RN)["status"]
    # Between probes: the node as the probe must leave it (crun-1 and crun-2 are the node's pods now).
    wait_for("no probe running", lambda: not any(throwaway_traces(host).values()), 60, interval=1)
    before = live_state(host)
    with NodeWatch(plane, host) as watch:
        status = wait_for(
            "a probe after the proof",
            lambda: (found := kubectl_json(plane, "get", "runtimenode", RN)["status"]).get("lastProbed")
            != proven.get("lastProbed") and found,
            INTERVAL + 60,
        )  # fmt: skip
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "CritestPassed", validated
    assert validated["message"].startswith("CRI answered and a smoke pod served HTTP through crun"), validated
    assert labels(cluster)["criops.dev/validated"] == "true"
    watch.assert_untouched(before["pods"], cluster["resident"])
    for name in ("crun-1", "crun-2"):
        assert get_pod(plane, name)["status"]["containerStatuses"][0]["restartCount"] == 0
    assert_as_before(host, before)


def test_a_broken_crun_unvalidates_the_node_and_new_pods_stay_pending(cluster):
    plane, host = cluster["plane"], cluster["host"]
    # crun that cannot start anything: the smoke pod through the handler fails.
    host.sh(f"mv {CRUN} {CRUN_ASIDE} && printf '#!/bin/sh\\necho broken for a test >&2\\nexit 1\\n' >{CRUN} "
            f"&& chmod +x {CRUN}")  # fmt: skip
    try:
        # A new generation (one more spec to focus on) proves the live node again.
        focus = {"spec": {"validation": {"focus": ["Runtime info", "PodSandbox", "Container"]}}}
        patched = plane.kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps(focus))
        assert patched.returncode == 0, patched.stderr
        status = wait_for("generation 2 verdict", phase_is(plane, RN, "Ready", "Failed", generation=2), 600)
        assert status["phase"] == "Failed", json.dumps(status, indent=2)
        validated = next(c for c in status["conditions"] if c["type"] == "Validated")
        assert "Run the pod sandbox" in validated["message"], validated
        assert labels(cluster)["criops.dev/validated"] == "false"
        # The pods already running keep running: the kubelet and crun left them alone.
        assert running(plane, "crun-1") and running(plane, "crun-2")
        assert resident_container(plane) == cluster["resident"]
        assert not any(throwaway_traces(host).values())

        create_pod(plane, "crun-3")
        message = wait_for("crun-3 unschedulable", lambda: unschedulable(plane, "crun-3"), 60)
        assert "didn't match Pod's node affinity/selector" in message, message
        time.sleep(5)
        assert get_pod(plane, "crun-3")["status"]["phase"] == "Pending"
    finally:
        host.sh(f"mv -f {CRUN_ASIDE} {CRUN}")


def in_use_events(plane: ControlPlane) -> list[str]:
    events = kubectl_json(plane, "-n", NAMESPACE, "get", "events")["items"]
    return [e["message"] for e in events if e["reason"] == "RuntimeClassInUse" and e["involvedObject"]["name"] == RN]


def test_delete_and_leave_take_the_runtime_class_and_leave_the_machine_as_found(cluster):
    plane, host = cluster["plane"], cluster["host"]
    # The last crun RuntimeNode would take the RuntimeClass crun-1..3 ask for: its deletion
    # waits, changes nothing, and names them.
    deleting = plane.kubectl("delete", "runtimenode", RN, "--wait=false")
    assert deleting.returncode == 0, deleting.stderr
    message = wait_for("the RuntimeClassInUse Event", lambda: in_use_events(plane), 60)[0]
    for pod in (f"default/crun-1 on {host.name}", f"default/crun-2 on {host.name}", "default/crun-3 on no node yet"):
        assert pod in message, message
    assert "criops.dev/force-delete" in message, message
    assert f"default/{RESIDENT}" not in message
    assert plane.kubectl("get", "runtimeclass", "crun").returncode == 0
    assert labels(cluster).get("criops.dev/runtime") == "crun"
    assert kubectl_json(plane, "get", "runtimenode", RN)["metadata"].get("deletionTimestamp")

    deleted = plane.kubectl("-n", "default", "delete", "pod", "--all", "--grace-period=0", "--force", timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    deleted = plane.kubectl("wait", "--for=delete", f"runtimenode/{RN}", "--timeout=90s", timeout=120)
    assert deleted.returncode == 0, deleted.stderr
    # The last crun RuntimeNode took its RuntimeClass and criops' labels with it.
    assert "NotFound" in plane.kubectl("get", "runtimeclass", "crun").stderr
    assert not [k for k in labels(cluster) if k.startswith("criops.dev/")]

    leave(plane, host)
    assert machine_state() == cluster["machine before"]
