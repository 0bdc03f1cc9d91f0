"""The operator's second look at a RuntimeNode spec, and the plans it makes from one."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from criops.ansible_run import inventory
from criops.core import conditions, runtimeclass
from criops.core.spec import SpecError, kubelet_speaks_only_v1, parse_duration, resolve, validate_vars
from criops.reconcile import probe_due, validated_generation

SPEC = {
    "nodeName": "worker-1",
    "runtime": "containerd",
    "access": {"host": "10.0.0.7", "sshKeySecretRef": {"name": "node-ssh"}},
}


def spec(**changes):
    result = copy.deepcopy(SPEC)
    result.update(changes)
    return result


def test_defaults_follow_the_runtime():
    target = resolve(spec())
    assert (target.endpoint, target.handler, target.group) == (
        "unix:///run/containerd/containerd.sock",
        "runc",
        "containerd",
    )
    assert (target.access.port, target.access.user, target.access.connection) == (22, "root", "ssh")
    assert target.validation.interval_seconds == 300
    assert resolve(spec(runtime="crun")).handler == "crun"
    assert resolve(spec(runtime="virtlet")).endpoint == "unix:///run/virtlet.sock"


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"nodeName": "Worker_1"}, "nodeName", "expected the name of a Node"),
        ({"runtime": "docker"}, "runtime", "expected one of containerd"),
        ({"criEndpoint": "tcp://10.0.0.7:2375"}, "criEndpoint", "unix:///"),
        ({"runtime": "virtlet", "runtimeHandler": "runc"}, "runtimeHandler", "no runtime handlers"),
        ({"runtime": "kata", "runtimeHandler": "runc"}, "runtimeHandler", "'kata'"),
        ({"access": {"host": "x; rm -rf /", "sshKeySecretRef": {"name": "k"}}}, "access.host", "DNS name or IP"),
        ({"access": {"host": "10.0.0.7"}}, "access.sshKeySecretRef.name", "name of a Secret"),
        ({"access": {"host": "h", "port": 0, "sshKeySecretRef": {"name": "k"}}}, "access.port", "1-65535"),
        ({"validation": {"interval": "10s"}}, "validation.interval", "between 30s and 24h"),
        ({"validation": {"interval": "5 minutes"}}, "validation.interval", "duration"),
        ({"validation": {"focus": ["ok", "(unclosed"]}}, "validation.focus[1]", "regular expression"),
        ({"validation": {"skip": ["[z-a]"]}}, "validation.skip[0]", "regular expression"),
        ({"provision": {"extraVars": {"ansible_host": "evil"}}}, "provision.extraVars.ansible_host", "not accepted"),
        ({"provision": {"extraVars": {"criops_root": "/"}}}, "provision.extraVars.criops_root", "not accepted"),
        ({"provision": {"extraVars": {"Bad-Name": 1}}}, "provision.extraVars.Bad-Name", "role variable name"),
        ({"labels": {"criops.dev/validated": "true"}}, "labels", "criops.dev/"),
    ],
)
def test_bad_fields_are_refused_by_name(changes, field, expected):
    with pytest.raises(SpecError) as refused:
        resolve(spec(**changes))
    assert refused.value.field == field
    assert str(refused.value).startswith(f"spec.{field}: ")
    assert expected in str(refused.value)


def test_variables_reach_ansible_as_data_not_as_shell_words():
    target = resolve(spec(validation={"focus": ["Pod$(reboot)"], "skip": ["a b"], "parallel": 2}))
    variables = validate_vars(target, critest=True, failures_listed=500)
    assert variables["cri_validate_critest_focus"] == ["Pod$(reboot)"]
    assert variables["cri_validate_critest_skip"] == ["a b"]
    assert variables["cri_validate_handlers"] == ["runc"]
    assert variables["criops_validate_hosts"] == "worker-1"
    assert "cri_validate_test_images_override" not in variables


def test_the_inventory_holds_one_node_in_its_runtime_group_with_every_string_marked_unsafe():
    target = resolve(spec(access={"host": "10.0.0.7", "port": 2222, "user": "admin", "sshKeySecretRef": {"name": "k"}}))
    hosts = inventory(target, key_file=Path("/run/key"))["all"]["children"]["containerd"]["hosts"]
    assert hosts == {
        "worker-1": {
            "ansible_connection": {"__ansible_unsafe": "ssh"},
            "ansible_user": {"__ansible_unsafe": "admin"},
            "ansible_host": {"__ansible_unsafe": "10.0.0.7"},
            "ansible_port": 2222,
            "ansible_ssh_private_key_file": {"__ansible_unsafe": "/run/key"},
        }
    }
    local = resolve(spec(access={"connection": "local"}))
    host = inventory(local, key_file=None)["all"]["children"]["containerd"]["hosts"]["worker-1"]
    # criops' own template, the one string that is meant to be rendered.
    assert host["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("24h", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("version", "v1_only"), [("v1.25.9", False), ("v1.26.0", True), ("v1.37.2", True), ("", True)])
def test_kubelet_dropped_v1alpha2_in_1_26(version, v1_only):
    assert kubelet_speaks_only_v1(version) is v1_only


def _status(reason: str, generation: int, last: str | None) -> dict:
    state = "Unknown" if reason == "Running" else ("False" if reason.endswith("Failed") else "True")
    conds = conditions.set_condition([], "Validated", state, reason, "", generation, "2026-11-26T00:00:00Z")
    return {"conditions": conds, **({"lastValidated": last} if last else {})}


def test_a_generation_counts_as_validated_only_once_its_run_finished():
    assert validated_generation(_status("Running", 3, None)) is None
    assert validated_generation(_status("Waiting", 3, None)) is None
    assert validated_generation(_status("CritestPassed", 3, None)) == 3
    assert validated_generation(_status("CritestFailed", 3, None)) == 3
    assert validated_generation({}) is None


def test_the_probe_runs_for_a_proven_generation_once_its_interval_passed():
    at = datetime(2026, 11, 26, 0, 10, tzinfo=UTC)
    assert probe_due(_status("CritestPassed", 2, "2026-11-26T00:04:00Z"), 2, 300, at)
    assert not probe_due(_status("CritestPassed", 2, "2026-11-26T00:06:00Z"), 2, 300, at)
    assert probe_due(_status("ProbeFailed", 2, "2026-11-26T00:04:00Z"), 2, 300, at)
    # A failed critest waits for a spec change; an older generation waits for its validation.
    assert not probe_due(_status("CritestFailed", 2, "2026-11-26T00:00:00Z"), 2, 300, at)
    assert not probe_due(_status("CritestPassed", 1, "2026-11-26T00:00:00Z"), 2, 300, at)


def test_kata_nodes_are_in_the_kata_group_under_containerd_and_run_kata_runtime_check():
    target = resolve(spec(runtime="kata"))
    children = inventory(target, key_file=None)["all"]["children"]
    assert list(children["containerd"]["children"]["kata"]["hosts"]) == ["worker-1"]
    variables = validate_vars(target, critest=True, failures_listed=1)
    assert variables["cri_validate_handlers"] == ["kata"]
    assert variables["cri_validate_handler_checks"]["kata"][0][1:] == ["check", "--no-network-checks"]


def test_only_kata_gets_a_runtime_class_and_it_selects_proven_nodes():
    assert runtimeclass.desired("containerd") is None
    kata = runtimeclass.desired("kata")
    assert kata["handler"] == "kata"
    assert kata["scheduling"]["nodeSelector"] == {"criops.dev/runtime": "kata", "criops.dev/validated": "true"}
    assert runtimeclass.managed(kata)


def test_the_runtime_class_goes_with_the_last_runtime_node_that_needs_it():
    def rn(name, runtime, deleting=False):
        meta = {"name": name, **({"deletionTimestamp": "2026-11-26T00:00:00Z"} if deleting else {})}
        return {"metadata": meta, "spec": {"runtime": runtime}}

    assert runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "kata")], leaving="a")
    assert not runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "containerd")], leaving="a")
    assert not runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "kata", deleting=True)], leaving="a")


def test_a_failed_run_is_explained_by_its_first_failed_task_in_its_own_words():
    from types import SimpleNamespace

    from criops.ansible_run import _failures

    loop = {"msg": "One or more items failed", "results": [
        {"failed": False, "msg": ""},
        {"failed": True, "msg": "[Errno 2] No such file or directory: b'/opt/kata/bin/kata-runtime'"},
    ]}  # fmt: skip
    command = {"msg": "non-zero return code", "stderr": "E1126 ...\nfailed to start shim: not found\n"}
    runner = SimpleNamespace(events=[
        {"event": "runner_on_ok", "event_data": {"task": "fine", "res": {}}},
        {"event": "runner_on_failed", "event_data": {"task": "ignored", "ignore_errors": True, "res": {"msg": "x"}}},
        {"event": "runner_on_failed", "event_data": {"task": "Run the handler's own checks (kata)", "res": loop}},
        {"event": "runner_on_failed", "event_data": {"task": "Run the pod sandbox", "res": command}},
    ])  # fmt: skip
    assert _failures(runner) == [
        "Run the handler's own checks (kata): [Errno 2] No such file or directory: b'/opt/kata/bin/kata-runtime'",
        "Run the pod sandbox: failed to start shim: not found",
    ]
