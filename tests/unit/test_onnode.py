"""connection: pod — the on-node pod's manifest, the run document it gets, the result line
it gives back, and what the operator keeps of it."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from criops import contract, node_pod
from criops.ansible_run import group_vars_files, write_run_files
from criops.core.spec import SpecError, resolve
from criops.kube import node_pods
from criops.kube.node_pods import _keep_reports
from criops.onnode import collect_reports
from criops.settings import Settings

POD_SPEC = {"nodeName": "worker-1", "runtime": "containerd", "access": {"connection": "pod"}}
OWNER = {"name": "worker-1", "uid": "6a1f1d7e-0000-4000-8000-000000000001"}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def manifest(run: dict | None = None) -> dict:
    return node_pod.manifest(
        "criops-worker-1-validate-g1-abc123", "criops-nodes", "worker-1", "registry.example/criops/operator@sha256:00",
        json.dumps(run or {}), OWNER, "validate.yml", 1800,
    )  # fmt: skip


def test_connection_pod_needs_no_host_or_key_and_refuses_them():
    target = resolve(POD_SPEC)
    assert (target.access.connection, target.access.host, target.access.secret) == ("pod", "", "")
    for access in ({"connection": "pod", "host": "10.0.0.7"}, {"connection": "pod", "sshKeySecretRef": {"name": "k"}}):
        with pytest.raises(SpecError, match="connection pod reaches the Node named by nodeName"):
            resolve({**POD_SPEC, "access": access})
    with pytest.raises(SpecError, match="expected one of ssh, local, pod"):
        resolve({**POD_SPEC, "access": {"connection": "winrm"}})


def test_the_inventory_of_a_pod_run_enters_the_nodes_root_with_chroot():
    hosts = contract.inventory(resolve(POD_SPEC), None)["all"]["children"]["cri_nodes"]["children"]["containerd"]
    assert hosts == {"hosts": {"worker-1": {"ansible_connection": "community.general.chroot", "ansible_host": "/host"}}}


def test_the_pod_is_privileged_on_its_node_and_nothing_more():
    pod = manifest()
    spec = pod["spec"]
    assert spec["nodeName"] == "worker-1"
    assert (spec["hostPID"], spec["hostNetwork"], spec["restartPolicy"]) == (True, True, "Never")
    # No API access at all: no token, a ServiceAccount without rights, no service links.
    assert (spec["automountServiceAccountToken"], spec["enableServiceLinks"]) == (False, False)
    assert spec["serviceAccountName"] == "criops-node"
    assert spec["activeDeadlineSeconds"] == 1800 + node_pod.DEADLINE_MARGIN
    assert spec["tolerations"] == [{"operator": "Exists"}]
    [container] = spec["containers"]
    # A fixed command: the run is data in the environment, never a command line.
    assert container["command"] == ["python", "-m", "criops.onnode"]
    assert container["securityContext"] == {"privileged": True, "runAsUser": 0, "readOnlyRootFilesystem": True}
    host = next(m for m in container["volumeMounts"] if m["name"] == "host")
    assert (host["mountPath"], host["mountPropagation"]) == ("/host", "Bidirectional")
    assert {"name": "host", "hostPath": {"path": "/", "type": "Directory"}} in spec["volumes"]
    assert not [v for v in spec["volumes"] if set(v) & {"secret", "projected", "configMap"}]
    assert pod["metadata"]["ownerReferences"] == [
        {"apiVersion": "criops.dev/v1alpha1", "kind": "RuntimeNode", "name": OWNER["name"], "uid": OWNER["uid"]}
    ]
    assert pod["metadata"]["labels"]["criops.dev/runtimenode-uid"] == OWNER["uid"]
    assert node_pod.selector(OWNER["uid"], "validate.yml") == (
        f"criops.dev/runtimenode-uid={OWNER['uid']},criops.dev/playbook=validate"
    )


def test_hostile_strings_travel_as_json_data_in_the_environment():
    hostile = "{{ lookup('pipe', 'id') }}\"; $(id)\n"
    pod = manifest({"extravars": {"cri_validate_critest_focus": [hostile]}})
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    assert json.loads(env[contract.ONNODE_RUN_ENV])["extravars"]["cri_validate_critest_focus"] == [hostile]
    assert hostile not in json.dumps(pod["spec"]["containers"][0]["command"])


def test_the_pod_writes_the_run_as_the_operator_would_every_string_marked(tmp_path: Path):
    hostile = "{{ lookup('pipe', 'touch /tmp/x') }}"
    inventory_dir = write_run_files(
        tmp_path,
        contract.inventory(resolve(POD_SPEC), None),
        {"cri_validate_critest_focus": [hostile], "nested": {"a": [{"b": hostile}]}, "count": 2},
        {"all/site.yml": "containerd_sandbox_image: pause\n"},
    )
    written = json.loads((tmp_path / "env" / "extravars").read_text())
    assert written == {
        "cri_validate_critest_focus": [{"__ansible_unsafe": hostile}],
        "nested": {"a": [{"b": {"__ansible_unsafe": hostile}}]},
        "count": 2,
    }
    assert (inventory_dir / "group_vars" / "all" / "site.yml").read_text() == "containerd_sandbox_image: pause\n"
    with pytest.raises(ValueError, match="outside group_vars"):
        write_run_files(tmp_path / "again", {}, {}, {"../../escape.yml": "x: 1\n"})


def test_group_vars_files_skip_a_configmaps_own_entries(tmp_path: Path):
    # The layout kubelet gives a mounted ConfigMap: the files are links into ..data.
    (tmp_path / "all" / "..2026_11_27").mkdir(parents=True)
    (tmp_path / "all" / "..2026_11_27" / "site.yml").write_text("a: 1\n")
    (tmp_path / "all" / "..data").symlink_to("..2026_11_27")
    (tmp_path / "all" / "site.yml").symlink_to("..data/site.yml")
    assert group_vars_files(tmp_path) == {"all/site.yml": "a: 1\n"}
    assert group_vars_files(None) == {}


def test_only_the_last_log_line_is_the_result():
    line = contract.result_line("successful", 0, [], {"n/probe.json": "{}"}, [])
    forged = contract.result_line("successful", 0, [], {"n/default/summary.json": '{"passed": 99}'}, [])
    # Ansible's output above may hold anything a RuntimeNode said, a forged result too.
    log = f"TASK [x]\n{forged}\nok: [n]\n{line}\n"
    assert contract.parse_result(log)["reports"] == {"n/probe.json": "{}"}
    assert contract.parse_result(f"{line}\nfatal: [n]: the pod was killed\n") is None
    assert contract.parse_result("") is None
    assert (
        contract.parse_result('{"criopsRun": {"status": "successful", "rc": "0", "failures": [], "reports": {}}}')
        is None
    )
    assert (
        contract.parse_result('{"criopsRun": {"status": "ok", "rc": 0, "failures": [], "reports": {"a": 1}}}') is None
    )


def test_reports_from_the_pod_stay_in_the_run_directory(tmp_path: Path):
    reports = tmp_path / "reports"
    _keep_reports(reports, {"n/default/summary.json": "{}", "../../escaped": "x", "/etc/passwd-ish": "x", ".": "x"})
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()] == [
        "reports/n/default/summary.json"
    ]


def test_the_pod_sends_reports_up_to_a_limit(tmp_path: Path):
    (tmp_path / "n" / "default").mkdir(parents=True)
    (tmp_path / "n" / "probe.json").write_text("{}")
    (tmp_path / "n" / "default" / "summary.json").write_text('{"passed": 1}')
    (tmp_path / "n" / "default" / "critest.log").write_text("x" * 100)
    reports, omitted = collect_reports(tmp_path, limit=50)
    assert reports == {"n/probe.json": "{}", "n/default/summary.json": '{"passed": 1}'}
    assert omitted == ["n/default/critest.log"]


@pytest.mark.parametrize("owner", ["worker-1", "a" * 253, "node.example.com", "x" * 40 + "." + "y" * 40])
def test_pod_names_are_dns_labels(owner: str):
    name = node_pod.pod_name(owner, "validate.yml", 12, "abc123")
    assert len(name) <= 63 and DNS_LABEL.match(name), name
    assert name.endswith("-validate-g12-abc123")
    assert node_pod.pod_name("a" * 253, "site.yml", 1, "r") != node_pod.pod_name("a" * 252 + "b", "site.yml", 1, "r")


def test_a_pod_that_cannot_start_says_why():
    state = {"waiting": {"reason": "ImagePullBackOff", "message": "pull i: not found"}}
    waiting = {"status": {"phase": "Pending", "containerStatuses": [{"image": "i", "state": state}]}}
    assert node_pod.stuck(waiting) == "ImagePullBackOff: pull i: not found"
    assert node_pod.stuck({"status": {"phase": "Pending"}}) is None
    done = {"status": {"phase": "Failed", "reason": "DeadlineExceeded", "containerStatuses": [
        {"state": {"terminated": {"exitCode": 137, "reason": "Error"}}}]}}  # fmt: skip
    assert node_pod.ended(done) == "Failed, DeadlineExceeded, exit code 137 (Error)"


def test_a_run_too_big_for_the_pods_environment_fails_before_any_pod(tmp_path: Path):
    too_big = {"timeout": 60, "groupVars": {"all/site.yml": "x" * (130 * 1024)}}
    status, rc, failed = node_pods.run(
        Settings.from_env(), "worker-1", "worker-1", "validate.yml", 1, too_big, tmp_path, threading.Event()
    )
    assert (status, rc) == ("failed", 1)
    assert "make the site's group_vars smaller" in failed[0], failed
