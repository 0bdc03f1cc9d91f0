"""The operator's second look at a RuntimeNode spec, and the plans it makes from one."""

from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
from criops import role_variables
from criops.contract import SshAccess, failures, inventory, ssh_control_dir, strict_host_key_args, validate_vars
from criops.core import conditions, runtimeclass
from criops.core.spec import SpecError, kubelet_speaks_only_v1, parse_duration, resolve
from criops.core.verdicts import probe_due, validated_generation
from criops.kube.client import SecretError, ssh_access_from_secret

ROLE_VARIABLES = role_variables.load(Path(__file__).resolve().parents[2])

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
        ({"labels": {"criops.dev/validated": "true"}}, "labels.criops.dev/validated", "criops' own"),
        (
            {"provision": {"extraVars": {"containerd_registry_mirrors": []}}},
            "provision.extraVars.containerd_registry_mirrors",
            "did you mean containerd_registries_mirrors?",
        ),
        (
            {"provision": {"extraVars": {"kata_handler": "kata"}}},
            "provision.extraVars.kata_handler",
            "cri_tools, containerd)",
        ),
        (
            {"provision": {"extraVars": {"containerd_registries_mirrors": [{"{{ 7*7 }}": "x"}]}}},
            "provision.extraVars.containerd_registries_mirrors[0].{{ 7*7 }}",
            "template syntax",
        ),
        (
            {"provision": {"extraVars": {"containerd_sandbox_image": {"__ansible_unsafe": "x"}}}},
            "provision.extraVars.containerd_sandbox_image.__ansible_unsafe",
            "ansible-core's own markers",
        ),
        ({"validation": {"testImages": {"{{ x }}": "busybox"}}}, "validation.testImages.{{ x }}", "one of"),
    ],
)
def test_bad_fields_are_refused_by_name(changes, field, expected):
    with pytest.raises(SpecError) as refused:
        resolve(spec(**changes), ROLE_VARIABLES)
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


def test_the_endpoints_cri_api_picks_the_validation_tools():
    assert validate_vars(resolve(spec()), critest=True, failures_listed=1)["cri_validate_cri_api"] == "v1"
    sycri = resolve(spec(runtime="singularity-cri"))
    assert validate_vars(sycri, critest=True, failures_listed=1)["cri_validate_cri_api"] == "v1alpha2"


@pytest.mark.parametrize(
    ("runtime", "endpoint", "instance"),
    [
        ("containerd", None, "throwaway"),
        ("crun", None, "throwaway"),
        ("kata", None, "throwaway"),
        # Another socket may be another containerd, whose config the throwaway instance would not have.
        ("containerd", "unix:///run/other/containerd.sock", "live"),
        ("singularity-cri", None, "live"),
        ("virtlet", None, "live"),
    ],
)
def test_smoke_pods_and_critest_run_on_a_throwaway_containerd_where_there_is_one(
    runtime: str, endpoint: str | None, instance: str
):
    changes = {"runtime": runtime, **({"criEndpoint": endpoint} if endpoint else {})}
    variables = validate_vars(resolve(spec(**changes)), critest=True, failures_listed=1)
    assert variables["cri_validate_instance"] == instance


@pytest.mark.parametrize(("runtime", "duty"), [("containerd", False), ("singularity-cri", False), ("virtlet", True)])
def test_validation_stops_a_stopped_pods_containers_only_for_runtimes_that_leave_them(runtime: str, duty: bool):
    variables = validate_vars(resolve(spec(runtime=runtime)), critest=True, failures_listed=1)
    assert variables["cri_validate_stop_containers_of_stopped_pods"] is duty


@pytest.mark.parametrize(
    ("validation", "field", "expected"),
    [
        ({"parallel": 2}, "validation.parallel", "(CRI v1alpha2, critest v1.13) expected 1"),
        ({"testImages": {"webServerTestImage": "r.example/nginx:1"}}, "validation.testImages", "upstream names"),
    ],
)
def test_v1alpha2_runtimes_refuse_what_critest_v1_13_cannot_do(validation, field, expected):
    for runtime in ("singularity-cri", "virtlet"):
        with pytest.raises(SpecError) as refused:
            resolve(spec(runtime=runtime, validation=validation))
        assert refused.value.field == field
        assert expected in str(refused.value)
    # The same fields are fine for a CRI v1 runtime.
    assert resolve(spec(validation=validation)).validation


def test_the_inventory_holds_one_node_in_its_runtime_group_with_every_string_marked_unsafe():
    target = resolve(spec(access={"host": "10.0.0.7", "port": 2222, "user": "admin", "sshKeySecretRef": {"name": "k"}}))
    hosts = inventory(target, key_file=Path("/run/key"))["all"]["children"]["cri_nodes"]["children"]["containerd"][
        "hosts"
    ]
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
    host = inventory(local, key_file=None)["all"]["children"]["cri_nodes"]["children"]["containerd"]["hosts"][
        "worker-1"
    ]
    # criops' own template, the one string that is meant to be rendered.
    assert host["ansible_python_interpreter"] == "{{ ansible_playbook_python }}"


def test_each_ssh_key_shares_connections_only_with_runs_of_the_same_key(tmp_path: Path):
    key = SshAccess("-----BEGIN KEY-----\nAAAA\n-----END KEY-----\n")
    other = SshAccess("-----BEGIN KEY-----\nBBBB\n-----END KEY-----\n")
    checked = SshAccess(key.key, "[10.0.0.7]:22 ssh-ed25519 AAAAC3Nz\n")
    assert ssh_control_dir(tmp_path, key) == ssh_control_dir(tmp_path, SshAccess(key.key))
    dirs = {ssh_control_dir(tmp_path, access) for access in (key, other, checked, None)}
    assert len(dirs) == 4
    assert {d.parent for d in dirs} == {tmp_path / "ssh"}
    assert not any("AAAA" in str(d) for d in dirs)
    # ssh's socket path limit is 104-108 bytes: the socket's name (10) and ssh's temporary suffix (17) fit.
    assert len(str(ssh_control_dir(Path("/var/lib/criops-operator"), key))) + 28 < 104
    target = resolve(spec(access={"host": "10.0.0.7", "sshKeySecretRef": {"name": "k"}}))
    host = inventory(target, Path("/run/key"), ssh_control_dir(tmp_path, key))["all"]["children"]["cri_nodes"][
        "children"
    ]["containerd"]["hosts"]["worker-1"]
    assert host["ansible_control_path_dir"] == {"__ansible_unsafe": str(ssh_control_dir(tmp_path, key))}
    assert "ansible_ssh_args" not in host


def test_host_keys_from_the_secret_are_checked_strictly_whatever_the_site_sets(tmp_path: Path):
    args = strict_host_key_args("-o ControlMaster=auto -o ControlPersist=60s", tmp_path / "a dir" / "known_hosts")
    assert args == (
        "-o ControlMaster=auto -o ControlPersist=60s -o StrictHostKeyChecking=yes"
        f" -o UserKnownHostsFile='{tmp_path}/a dir/known_hosts' -o GlobalKnownHostsFile=/dev/null"
    )
    target = resolve(spec(access={"host": "10.0.0.7", "sshKeySecretRef": {"name": "k"}}))
    host = inventory(target, Path("/run/key"), tmp_path, args)["all"]["children"]["cri_nodes"]["children"][
        "containerd"
    ]["hosts"]["worker-1"]
    assert host["ansible_host_key_checking"] is True
    assert host["ansible_ssh_args"] == {"__ansible_unsafe": args}


def test_the_secret_gives_a_key_and_maybe_host_keys_never_an_empty_list():
    def secret(**data: str) -> dict:
        return {"data": {k.replace("_", "-") if k != "known_hosts" else k: b64(v) for k, v in data.items()}}

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    assert ssh_access_from_secret("ns", "s", secret(ssh_privatekey="KEY")) == SshAccess("KEY", None)
    lines = "# node-1\n[10.0.0.7]:2222 ssh-ed25519 AAAAC3Nz\n"
    assert ssh_access_from_secret("ns", "s", secret(ssh_privatekey="KEY", known_hosts=lines)).known_hosts == lines
    with pytest.raises(SecretError, match="Secret ns/s has no key ssh-privatekey"):
        ssh_access_from_secret("ns", "s", secret(known_hosts=lines))
    with pytest.raises(SecretError, match="Secret ns/s has an empty known_hosts"):
        ssh_access_from_secret("ns", "s", secret(ssh_privatekey="KEY", known_hosts="# nothing\n\n"))


def test_extra_vars_may_set_the_variables_of_the_roles_that_run_for_the_runtime():
    mirrors = [{"prefix": "docker.io", "mirrors": [{"host": "http://10.0.2.2:5000"}]}]
    target = resolve(spec(provision={"extraVars": {"containerd_registries_mirrors": mirrors}}), ROLE_VARIABLES)
    assert target.provision_vars == {"containerd_registries_mirrors": mirrors}
    kata = resolve(spec(runtime="kata", provision={"extraVars": {"kata_handler": "kata"}}), ROLE_VARIABLES)
    assert kata.provision_vars == {"kata_handler": "kata"}
    # Without the roles' variables nothing is known, so nothing is let through.
    with pytest.raises(SpecError, match="not a variable"):
        resolve(spec(provision={"extraVars": {"containerd_sandbox_image": "pause"}}))


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("node-role.kubernetes.io/control-plane", "", "Kubernetes' own"),
        ("kubernetes.io/hostname", "other", "Kubernetes' own"),
        ("topology.kubernetes.io/zone", "a", "Kubernetes' own"),
        ("node.kubernetes.io/exclude-from-external-load-balancers", "true", "Kubernetes' own"),
        ("k8s.io/x", "y", "Kubernetes' own"),
        ("kubelet.k8s.io/x", "y", "Kubernetes' own"),
        ("sub.criops.dev/x", "y", "criops' own"),
        ("example.com/ok", "has spaces", "value 'has spaces'"),
        ("example.com/ok", "$(id)", "value '$(id)'"),
        ("example.com/ok", "x" * 64, "at most 63"),
        ("Example.com/ok", "y", "DNS subdomain"),
        ("/ok", "y", "DNS subdomain"),
        ("example.com/", "y", "the name must be"),
        ("example.com/{{x}}", "y", "the name must be"),
    ],
)
def test_labels_a_kubelet_may_not_set_or_the_api_would_refuse_are_refused(key, value, expected):
    with pytest.raises(SpecError) as refused:
        resolve(spec(labels={key: value}))
    assert refused.value.field == f"labels.{key}"
    assert expected in str(refused.value)


def test_labels_under_node_restriction_and_other_domains_are_allowed():
    labels = {"node-restriction.kubernetes.io/runtime-proven": "yes", "example.com/ready": "", "tier": "gpu"}
    assert resolve(spec(labels=labels)).labels == labels


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("24h", 86400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("version", "v1_only"),
    [("v1.25.9", False), ("v1.26.0", True), ("v1.37.2", True), ("", False), ("unreadable", True)],
)
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


def test_a_refused_node_update_waits_for_a_spec_change_not_the_probe():
    at = datetime(2026, 11, 26, 0, 10, tzinfo=UTC)
    proven = _status("CritestPassed", 2, "2026-11-26T00:00:00Z")
    refused = conditions.set_condition(proven["conditions"], "NodeLabeled", "False", "NodeUpdateRefused", "", 2, "")
    assert probe_due(proven, 2, 300, at)
    assert not probe_due({**proven, "conditions": refused}, 2, 300, at)


def test_api_errors_that_a_retry_cannot_fix_are_told_apart_in_the_servers_words():
    from criops.kube.client import permanent, server_message
    from kubernetes.client.exceptions import ApiException

    invalid = ApiException(status=422, reason="Unprocessable Entity")
    invalid.body = '{"kind": "Status", "message": "Node \\"w\\" is invalid: label value"}'
    assert permanent(invalid)
    assert server_message(invalid) == 'Node "w" is invalid: label value'
    busy = ApiException(status=503, reason="Service Unavailable")
    assert not permanent(busy) and not permanent(ApiException(status=409)) and not permanent(OSError())
    assert server_message(busy) == "503 Service Unavailable"


def test_kata_nodes_are_in_the_kata_group_under_containerd_and_run_kata_runtime_check():
    target = resolve(spec(runtime="kata"))
    children = inventory(target, key_file=None)["all"]["children"]["cri_nodes"]["children"]
    assert list(children["containerd"]["children"]["kata"]["hosts"]) == ["worker-1"]
    variables = validate_vars(target, critest=True, failures_listed=1)
    assert variables["cri_validate_handlers"] == ["kata"]
    assert variables["cri_validate_handler_checks"]["kata"][0][1:] == ["check", "--no-network-checks"]


def test_every_handler_but_the_default_gets_a_runtime_class_that_selects_proven_nodes():
    # runc serves pods without a RuntimeClass; the CRI v1alpha2 runtimes have no handler.
    for runtime in ("containerd", "virtlet", "singularity-cri"):
        assert runtimeclass.desired(runtime) is None
    for runtime in ("crun", "kata"):
        body = runtimeclass.desired(runtime)
        assert body["metadata"]["name"] == body["handler"] == runtime
        assert body["scheduling"]["nodeSelector"] == {
            "criops.dev/runtime": runtime, "criops.dev/validated": "true"}  # fmt: skip
        assert runtimeclass.managed(body)
    # crun's pods are host processes like runc's: no overhead, left out rather than empty.
    assert "overhead" not in runtimeclass.desired("crun")
    assert runtimeclass.desired("kata")["overhead"] == {"podFixed": {"cpu": "250m", "memory": "160Mi"}}


def test_every_handler_criops_validates_other_than_runc_has_a_runtime_class():
    from criops.core.runtimes import CATALOG

    handlers = {r.handler for r in CATALOG.values() if r.has_handlers} - {"runc"}
    assert handlers == {r.runtime_class.handler for r in CATALOG.values() if r.runtime_class}


def test_the_runtime_class_goes_with_the_last_runtime_node_that_needs_it():
    def rn(name, runtime, deleting=False):
        meta = {"name": name, **({"deletionTimestamp": "2026-11-26T00:00:00Z"} if deleting else {})}
        return {"metadata": meta, "spec": {"runtime": runtime}}

    assert runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "kata")], leaving="a")
    assert not runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "containerd")], leaving="a")
    assert not runtimeclass.still_needed("kata", [rn("a", "kata"), rn("b", "kata", deleting=True)], leaving="a")


def test_a_runtime_class_is_not_removed_while_unfinished_pods_ask_for_it():
    def pod(name, runtime_class, phase="Running", node="worker-1"):
        spec = {"runtimeClassName": runtime_class, **({"nodeName": node} if node else {})}
        return {"metadata": {"namespace": "shop", "name": name}, "spec": spec, "status": {"phase": phase}}

    pods = [
        pod("web", "crun"),
        pod("queued", "crun", phase="Pending", node=None),
        pod("done", "crun", phase="Succeeded"),
        pod("broken", "crun", phase="Failed"),
        pod("vm", "kata"),
        {"metadata": {"namespace": "shop", "name": "plain"}, "spec": {}, "status": {"phase": "Running"}},
    ]
    assert runtimeclass.pods_using(pods, "crun") == ["shop/queued on no node yet", "shop/web on worker-1"]
    assert runtimeclass.pods_using(pods, "absent") == []
    assert runtimeclass.forced({"criops.dev/force-delete": "true"})
    assert not runtimeclass.forced({"criops.dev/force-delete": "yes"})
    assert not runtimeclass.forced(None)


def test_a_failed_run_is_explained_by_its_first_failed_task_in_its_own_words():
    loop = {"msg": "One or more items failed", "results": [
        {"failed": False, "msg": ""},
        {"failed": True, "msg": "[Errno 2] No such file or directory: b'/opt/kata/bin/kata-runtime'"},
    ]}  # fmt: skip
    command = {"msg": "non-zero return code", "stderr": "E1126 ...\nfailed to start shim: not found\n"}
    events = [
        {"event": "runner_on_ok", "event_data": {"task": "fine", "res": {}}},
        {"event": "runner_on_failed", "event_data": {"task": "ignored", "ignore_errors": True, "res": {"msg": "x"}}},
        {"event": "runner_on_failed", "event_data": {"task": "Run the handler's own checks (kata)", "res": loop}},
        {"event": "runner_on_failed", "event_data": {"task": "Run the pod sandbox", "res": command}},
    ]  # fmt: skip
    assert failures(events) == [
        "Run the handler's own checks (kata): [Errno 2] No such file or directory: b'/opt/kata/bin/kata-runtime'",
        "Run the pod sandbox: failed to start shim: not found",
    ]


def test_reports_are_read_where_cri_validate_writes_them_and_absent_or_broken_ones_are_none(tmp_path):
    from criops.contract import critest_summary, probe_report

    (tmp_path / "worker-1" / "default").mkdir(parents=True)
    (tmp_path / "worker-1" / "kata").mkdir()
    (tmp_path / "worker-1" / "probe.json").write_text('{"reachable": true, "criV1": true}')
    (tmp_path / "worker-1" / "default" / "summary.json").write_text('{"total": 3}')
    (tmp_path / "worker-1" / "kata" / "summary.json").write_text('{"total": ')
    assert probe_report(tmp_path, "worker-1") == {"reachable": True, "criV1": True}
    assert critest_summary(tmp_path, "worker-1", "") == {"total": 3}
    assert critest_summary(tmp_path, "worker-1", "kata") is None  # cut short: not a report
    assert critest_summary(tmp_path, "worker-1", "crun") is None
    assert probe_report(tmp_path, "worker-2") is None
