"""Faults the operator must ride out, on real parts: a test host killed while
site.yml installs packages, containerd killed with SIGKILL, kube-apiserver
killed for a minute while critest runs, and the operator's state directory lost.

The tests share one host, one operator and one RuntimeNode and run in file
order; the first one provisions the host (its first converge is the one that
gets killed). Each ends with the RuntimeNode's status, the Node's labels,
taints and CRIRuntimeValidated condition and the operator's run records
agreeing with each other (`assert_consistent`). docs/reliability.md records
what they measured.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import (
    DEBIAN12_EXPECTED_FAILURES,
    OperatorProcess,
    condition,
    kubectl_json,
    operator_world,
    phase_is,
    runs,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import Node, local_host, ssh_port

pytestmark = pytest.mark.integration

RN = "faults-1"
FOREIGN_LABEL = {"team": "faults"}
FOREIGN_TAINT = {"key": "example.com/maintenance", "value": "true", "effect": "NoSchedule"}
INTERVAL = 30
PROBE_TICK = 5
# critest's two "Runtime info" specs prove the runtime answers; the full suite
# (test_operator.py) proves nothing more about these faults.
FOCUS = ["Runtime info"]
VALIDATION = {
    "focus": FOCUS,
    "expectedFailures": DEBIAN12_EXPECTED_FAILURES,
    "parallel": 2,
    "interval": f"{INTERVAL}s",
}
API_OUTAGE = 60
# The bound docs/reliability.md states: the operator writes again within 10 s of the API's return.
RESUME_BOUND = 10
# Status writes and the test's own polling, on top of the timer tick and a probe's own run.
MARGIN = 10
# The in-host loop that keeps killing containerd stops when this file appears.
CRASH_STOP = "/run/criops-test-crash-loop.stop"
LAST_KILL = "/run/criops-test-last-kill"


@pytest.fixture(scope="module")
def world(
    kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("faults")
    with operator_world(
        control_plane, test_host, workdir, FOREIGN_LABEL, [FOREIGN_TAINT], probe_tick=PROBE_TICK
    ) as world:
        try:
            yield world
        finally:
            if "kube-apiserver" not in control_plane.processes:
                control_plane.start_apiserver()  # a test stopped midway: leave the shared API server running
            # With the operator still running, so its finalizer takes criops' marks off the Node.
            control_plane.kubectl("delete", "runtimenode", RN, "--ignore-not-found", "--timeout=60s", timeout=90)


def rn(world: dict[str, Any]) -> dict[str, Any]:
    return kubectl_json(world["plane"], "get", "runtimenode", RN)


def node(world: dict[str, Any]) -> dict[str, Any]:
    return kubectl_json(world["plane"], "get", "node", world["host"].name)


def patch_spec(world: dict[str, Any], spec: dict[str, Any]) -> int:
    """Merge `spec` into the RuntimeNode's; the new generation."""
    patched = world["plane"].kubectl("patch", "runtimenode", RN, "--type=merge", "-p", json.dumps({"spec": spec}))
    assert patched.returncode == 0, patched.stderr
    return int(rn(world)["metadata"]["generation"])


def all_runs(state: Path) -> list[dict[str, Any]]:
    return sorted(runs(state, RN, "site.yml") + runs(state, RN, "validate.yml"), key=lambda r: r["startedAt"])


def critest_runs(state: Path, generation: int) -> list[dict[str, Any]]:
    return [r for r in runs(state, RN) if r.get("critest") and r.get("generation") == generation]


def wait_in_host(host: Node, command: str, timeout: int, then: str = "true") -> None:
    """Wait, polling every 10 ms inside the host, until `command` succeeds; then run `then` there at once."""
    script = (
        f"end=$(($(date +%s) + {timeout})); "
        f"until {{ {command}; }} >/dev/null 2>&1; do [ $(date +%s) -lt $end ] || exit 1; sleep 0.01; done; {then}"
    )
    done = subprocess.run(["podman", "exec", host.name, "sh", "-c", script], capture_output=True, timeout=timeout + 30)
    assert done.returncode == 0, f"{command!r} never succeeded in {host.name} within {timeout} s"


def containerd_pid(host: Node) -> int:
    return int(host.sh("systemctl show -p MainPID --value containerd.service").stdout.strip() or 0)


def next_probe(world: dict[str, Any], after: str | None, timeout: float) -> dict[str, Any]:
    """The status once a probe finished after `after` (a lastProbed stamp, or None)."""

    def probed() -> Any:
        status = rn(world).get("status", {})
        return status if status.get("lastProbed") and status.get("lastProbed") != after else False

    return wait_for("the next probe", probed, timeout, interval=0.5)


def stamp(text: str) -> float:
    """A status time stamp (RFC 3339, second resolution) as a POSIX time."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def assert_consistent(world: dict[str, Any]) -> dict[str, Any]:
    """The RuntimeNode's status, the Node and the run records tell one story; the status."""
    current = rn(world)
    status, generation = current["status"], current["metadata"]["generation"]
    ready = status["phase"] == "Ready"
    assert status["observedGeneration"] == generation, status
    conditions = {c["type"]: c for c in status["conditions"]}
    # Ready is written last, for the generation the phase speaks of.
    assert conditions["Ready"]["observedGeneration"] == generation
    assert conditions["Ready"]["status"] == ("True" if ready else "False")
    # kopf has no handler left to retry for this object.
    assert not (status.get("kopf") or {}).get("progress"), status["kopf"]

    found = node(world)
    labels = found["metadata"]["labels"]
    assert labels["criops.dev/runtime"] == "containerd"
    assert labels["criops.dev/validated"] == ("true" if ready else "false")
    assert {k: labels[k] for k in FOREIGN_LABEL} == FOREIGN_LABEL
    taints = found["spec"].get("taints", [])
    assert [t for t in taints if t["key"] != "criops.dev/unvalidated"] == world["taints"]
    assert any(t["key"] == "criops.dev/unvalidated" for t in taints) == (not ready)
    node_condition = next(c for c in found["status"]["conditions"] if c["type"] == "CRIRuntimeValidated")
    assert node_condition["status"] == ("True" if ready else "False")
    if not ready:
        assert node_condition["reason"] == conditions["Ready"]["reason"]

    for run in all_runs(world["state"]):
        # The SSH key lives only as long as its run.
        assert not (run["dir"] / "env" / "ssh-key").exists(), run["dir"]
        assert run.get("status") in ("successful", "failed"), run
    for number in {r["generation"] for r in runs(world["state"], RN) if r.get("critest")}:
        assert len(critest_runs(world["state"], number)) == 1, f"critest ran twice for generation {number}"
    return status


def test_a_host_killed_mid_converge_fails_with_the_reason_then_converges(world: dict[str, Any]) -> None:
    plane, host, state = world["plane"], world["host"], world["state"]
    manifest = runtime_node(
        RN,
        host.name,
        ssh_port=ssh_port(host.name),
        provision={"enabled": True},
        validation=VALIDATION,
        taintUntilValidated=True,
    )
    applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    wait_for("phase Provisioning", phase_is(world["plane"], RN, "Provisioning"), 120, interval=0.5)

    # A power cut while site.yml installs packages: the moment dpkg has recorded
    # work in its journal, every process in the host dies at once (dpkg, sshd,
    # Ansible's module), then the host itself (systemd).
    wait_in_host(host, '[ -n "$(ls -A /var/lib/dpkg/updates)" ]', 600, then="kill -9 -1")
    killed = subprocess.run(["podman", "kill", host.name], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 0, killed.stderr
    killed_at = time.monotonic()

    status = wait_for("phase Failed", phase_is(world["plane"], RN, "Failed", generation=1), 300, interval=0.5)
    to_failed = time.monotonic() - killed_at
    provisioned = condition(status, "Provisioned")
    assert (provisioned["status"], provisioned["reason"]) == ("False", "PlaybookFailed")
    # The task that was running when the host went away, in ansible's own words.
    [site] = runs(state, RN, "site.yml")
    assert site["status"] == "failed"
    stdout = (site["dir"] / "artifacts" / "ansible" / "stdout").read_text()
    last_task = re.findall(r"^TASK \[(?:[\w.-]+ : )?(.+?)\]", stdout, re.MULTILINE)[-1]
    assert provisioned["message"].startswith(f"{last_task}: "), (last_task, provisioned["message"])
    assert re.search(r"ssh|connect|unreachable|closed", provisioned["message"], re.IGNORECASE), provisioned
    assert condition(status, "Ready")["reason"] == "ProvisioningFailed"
    assert runs(state, RN, "validate.yml") == [], "nothing validated on a host that never converged"
    assert_consistent(world)

    # Back up, half-installed: dpkg was interrupted and says so.
    started = subprocess.run(["podman", "start", host.name], capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    up = local_host("up", host.name)
    assert up.returncode == 0, up.stdout + up.stderr
    audit = host.sh("dpkg --audit; ls /var/lib/dpkg/updates", check=False).stdout
    assert audit.strip(), "the kill left dpkg's state clean: the host was not killed mid-install"

    # The next generation: where the host answers now, and a converge that repairs it.
    patched = time.monotonic()
    generation = patch_spec(world, {"access": {"port": ssh_port(host.name)}, "labels": {"example.com/attempt": "2"}})
    assert generation == 2
    status = wait_for("phase Ready", phase_is(world["plane"], RN, "Ready", "Failed", generation=2), 900, interval=1)
    to_ready = time.monotonic() - patched
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert condition(status, "Provisioned")["reason"] == "Converged"
    sites = runs(state, RN, "site.yml")
    assert [(r["generation"], r["status"]) for r in sites] == [(1, "failed"), (2, "successful")]
    assert len(critest_runs(state, 2)) == 1
    assert host.sh("dpkg --audit").stdout.strip() == ""
    assert host.sh("systemctl is-active containerd.service").stdout.strip() == "active"
    assert node(world)["metadata"]["labels"]["example.com/attempt"] == "2"
    assert_consistent(world)
    print(
        f"\nfigures: Failed {to_failed:.1f} s after the kill; the next generation Ready {to_ready:.1f} s after "
        f"the patch (site.yml repairing the host {sites[1]['seconds']:.1f} s)"
    )


def test_containerd_killed_turns_the_node_degraded_and_systemd_brings_it_back(world: dict[str, Any]) -> None:
    host = world["host"]
    restart = host.sh("systemctl show -p Restart --value containerd.service").stdout.strip()
    assert restart in ("always", "on-failure", "on-abnormal"), f"containerd.service has Restart={restart}"
    restarts = int(host.sh("systemctl show -p NRestarts --value containerd.service").stdout.strip())

    # One SIGKILL right after a probe: systemd restarts containerd long before
    # the next probe, which passes; the node never leaves Ready.
    status = next_probe(world, rn(world)["status"].get("lastProbed"), INTERVAL + PROBE_TICK + 60)
    pid = containerd_pid(host)
    host.sh(f"kill -9 {pid}")
    killed = time.monotonic()
    wait_for("containerd back", lambda: containerd_pid(host) not in (0, pid), 60, interval=0.2)
    wait_for("containerd answering", lambda: host.sh("crictl info", check=False).returncode == 0, 30, interval=0.2)
    back = time.monotonic() - killed

    def still_ready_until_probed() -> Any:
        current = rn(world)["status"]
        assert current["phase"] == "Ready", "one SIGKILL that systemd repaired turned the node " + current["phase"]
        return current if current.get("lastProbed") != status["lastProbed"] else False

    status = wait_for("the probe after the restart", still_ready_until_probed, INTERVAL + PROBE_TICK + 60, 0.5)
    assert condition(status, "Validated")["status"] == "True"

    # containerd killed again each time systemd starts it: the next probe fails. The
    # killing runs inside the host, every 50 ms: polled from here, containerd answered
    # for a second or more between kills under load, and a probe could pass in that gap.
    crashing = time.monotonic()
    host.sh(
        f"nohup sh -c 'end=$(($(date +%s) + {INTERVAL + PROBE_TICK + 120})); "
        f"while [ ! -e {CRASH_STOP} ] && [ $(date +%s) -lt $end ]; do "
        f"pid=$(pgrep -x containerd) && kill -9 $pid && date +%s.%N > {LAST_KILL}; sleep 0.05; done' "
        ">/dev/null 2>&1 &"
    )

    def crash_until_degraded() -> Any:
        current = rn(world)["status"]
        return current if current["phase"] == "Degraded" else False

    try:
        status = wait_for("phase Degraded", crash_until_degraded, INTERVAL + PROBE_TICK + 120, interval=0.2)
        to_degraded = time.monotonic() - crashing
    finally:
        host.sh(f"touch {CRASH_STOP}")
    wait_for(
        "the kill loop gone", lambda: host.sh("pgrep -f 'crash-loop[.]stop'", check=False).returncode != 0, 10, 0.2
    )
    last_kill = float(host.sh(f"cat {LAST_KILL}; rm -f {LAST_KILL} {CRASH_STOP}").stdout)
    validated = condition(status, "Validated")
    assert validated["reason"] == "ProbeFailed"
    assert validated["message"].startswith("probe stopped at ")
    failed_probe = runs(world["state"], RN)[-1]
    assert failed_probe["status"] == "failed" and not failed_probe["critest"]
    # One interval after the last passing probe, plus the failing probe's own run.
    bound = INTERVAL + PROBE_TICK + failed_probe["seconds"] + MARGIN
    assert to_degraded <= bound, f"Degraded after {to_degraded:.0f} s, more than {bound:.0f} s"
    assert_consistent(world)

    # Left alone, systemd restarts containerd and the next probe passes.
    status = wait_for(
        "phase Ready again", phase_is(world["plane"], RN, "Ready"), INTERVAL + PROBE_TICK + 120, interval=0.5
    )
    recovered = time.time() - last_kill
    assert int(host.sh("systemctl show -p NRestarts --value containerd.service").stdout.strip()) > restarts + 1
    assert condition(status, "Validated")["reason"] == "CritestPassed"
    assert_consistent(world)
    print(
        f"\nfigures: containerd back {back:.1f} s after one SIGKILL (Ready throughout); "
        f"Degraded {to_degraded:.1f} s after it started crashing; Ready {recovered:.1f} s after the last SIGKILL"
    )


def test_the_api_server_gone_for_a_minute_mid_critest(world: dict[str, Any]) -> None:
    plane, host, state, operator = world["plane"], world["host"], world["state"], world["operator"]
    # PodSandbox makes critest long enough to be stopped under.
    generation = patch_spec(world, {"validation": {"focus": [*FOCUS, "PodSandbox"]}})

    wait_in_host(host, "pgrep -x critest", 300)
    plane.stop_apiserver()
    down, down_at = time.monotonic(), time.time()
    try:
        # critest and validate.yml finish while the API server is away: the verdict cannot be written.
        wait_for("validate.yml done", lambda: [r for r in critest_runs(state, generation) if "status" in r], 300, 1)
        assert time.monotonic() - down < API_OUTAGE, "validate.yml outlasted the outage: nothing to resume"
        time.sleep(max(0.0, API_OUTAGE - (time.monotonic() - down)))
        assert operator.process is not None and operator.process.poll() is None, "the operator exited"
    finally:
        plane.start_apiserver()
    back = time.monotonic()
    status = wait_for(
        "the verdict written", phase_is(world["plane"], RN, "Ready", "Failed", generation=generation), 120, 0.2
    )
    resumed = time.monotonic() - back
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert resumed <= RESUME_BOUND, f"the verdict was written {resumed:.1f} s after the API server came back"
    [run] = critest_runs(state, generation)
    assert run["status"] == "successful"
    assert stamp(run["finishedAt"]) > down_at, "critest finished before the API server went away"
    assert stamp(status["lastValidated"]) >= stamp(run["finishedAt"]) - 1

    # New work after the outage: kopf's watch is back, a spec change is taken up and validated once.
    changed = time.monotonic()
    newer = patch_spec(world, {"validation": {"focus": FOCUS}})

    def taken_up() -> bool:
        return any(c["observedGeneration"] == newer for c in rn(world)["status"]["conditions"])

    wait_for("the spec change taken up", taken_up, 120, interval=0.2)
    taken = time.monotonic() - changed
    status = wait_for("phase Ready", phase_is(world["plane"], RN, "Ready", "Failed", generation=newer), 600, interval=2)
    assert status["phase"] == "Ready", json.dumps(status, indent=2)

    # Settled: kopf has nothing left to retry and a probe ran since; one critest run per generation.
    wait_for("kopf done", lambda: not (rn(world)["status"].get("kopf") or {}).get("progress"), 120)
    next_probe(world, status.get("lastProbed"), INTERVAL + PROBE_TICK + 60)
    assert operator.process.poll() is None
    assert_consistent(world)
    assert len(critest_runs(state, generation)) == len(critest_runs(state, newer)) == 1
    print(
        f"\nfigures: verdict written {resumed:.1f} s after the API server came back; "
        f"a spec change made then taken up after {taken:.1f} s; one critest run per generation"
    )


def test_a_lost_state_directory_repeats_no_proven_validation(world: dict[str, Any]) -> None:
    plane, host, state = world["plane"], world["host"], world["state"]
    # The pod rescheduled to another machine: the old state directory is gone, the new one empty.
    world["operator"].stop()
    before = rn(world)
    generation, proven = before["metadata"]["generation"], before["status"]
    assert proven["phase"] == "Ready"
    shutil.rmtree(state)
    state.mkdir()
    world["operator"] = OperatorProcess(world["kubeconfig"], state, world["log"], probe_tick=PROBE_TICK).start()

    # The new operator takes the RuntimeNode over: its probes run on schedule...
    def probed_anew() -> Any:
        current = rn(world)["status"]
        finished = [r for r in runs(state, RN) if "status" in r]
        return current if finished and current.get("lastProbed") != proven.get("lastProbed") else False

    status = wait_for("a probe by the new operator", probed_anew, INTERVAL + PROBE_TICK + 60, interval=0.5)
    probes = runs(state, RN)
    assert all(not r["critest"] for r in probes), probes
    # ...and nothing of the proven generation runs again.
    assert runs(state, RN, "site.yml") == []
    assert status["observedGeneration"] == generation
    assert status["lastValidated"] == proven["lastValidated"]
    assert status["critest"] == proven["critest"]
    assert condition(status, "Validated")["lastTransitionTime"] == condition(proven, "Validated")["lastTransitionTime"]
    assert_consistent(world)
    # Nothing left on the host: no pods, containers or critest lock holders.
    assert host.sh("crictl pods -q").stdout.strip() == ""
    assert host.sh("crictl ps -a -q").stdout.strip() == ""
    assert host.sh("pgrep -x critest", check=False).returncode == 1
    assert plane.kubectl("get", "--raw", "/readyz").stdout.strip() == "ok"
