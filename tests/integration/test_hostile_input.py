"""Hostile RuntimeNodes: every field that reaches Ansible, a shell, the Node or a
file, tried with code, against real parts (kube-apiserver with criops' CRD, the
operator under its own ServiceAccount, a podman test host over SSH, critest).

Each RuntimeNode is refused (by the API server's schema and CEL rules, or by
the operator before anything runs on the node) or proven inert: the value
arrives as the literal text, and the command it holds ran neither on the
controller (where the operator runs Ansible) nor on the node. The commands
would create files in a marker directory that is checked on both.

The cases run in file order on one host: refusals first, then one provisioning
and the inert validations, the permanent API error, the SSH keys and host keys,
two RuntimeNodes for one Node, and last the hostile sandbox image (it leaves
containerd with an image no pod can use).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import tomllib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from testworld.cluster import (
    NAMESPACE,
    SSH_SECRET,
    condition,
    create_ssh_secret,
    kubectl_json,
    node_labels,
    operator_world,
    runs,
    runtime_node,
    wait_for,
)
from testworld.control_plane import ControlPlane
from testworld.hosts import Node, node_state

pytestmark = pytest.mark.integration

REGISTRY = "http://10.0.2.2:5000"
# The local group_vars' mirrors, spelled out: extraVars replace the variable, and
# their values are data, so they cannot refer to other variables.
LOCAL_MIRRORS = [
    *({"prefix": p, "mirrors": [{"host": REGISTRY}]} for p in ("registry.k8s.io", "gcr.io", "k8s.gcr.io")),
    {"prefix": "10.0.2.2:5000", "server": REGISTRY, "mirrors": [{"host": REGISTRY}]},
]
# critest specs that need no image: a narrow, quick proof that critest ran.
QUICK = ["Runtime info"]


@pytest.fixture(scope="module")
def world(kubeconfig_with_crd: Path, control_plane: ControlPlane, test_host: Node, tmp_path_factory) -> Iterator[dict]:
    workdir = tmp_path_factory.mktemp("hostile")
    markers = workdir / "markers"
    markers.mkdir()
    with operator_world(control_plane, test_host, workdir) as world:
        yield {**world, "markers": markers}


def pipe(world: dict, case: str) -> str:
    """A Jinja expression that, if ever templated, creates a marker file for `case`."""
    return "{{ lookup('pipe', 'touch " + str(world["markers"] / case) + "') }}"


def shell(world: dict, case: str) -> str:
    """A shell command substitution that, if ever run by a shell, creates a marker file for `case`."""
    return f"$(touch {world['markers'] / case})"


def reached_ansible(world: dict, name: str, text: str) -> bool:
    """Whether `text` appears, literally, in what Ansible reported for the RuntimeNode's runs."""
    encoded = json.dumps(text)[1:-1]
    return any(encoded in event.read_text() for event in world["state"].glob(f"runs/{name}/*/artifacts/*/job_events/*"))


def assert_no_command_ran(world: dict) -> None:
    """No marker on the controller, none on the node."""
    assert sorted(p.name for p in world["markers"].iterdir()) == []
    found = world["host"].sh(f"ls -A {world['markers']} 2>/dev/null || true").stdout.split()
    assert found == []


def create(world: dict, manifest: dict[str, Any], *flags: str) -> Any:
    return world["plane"].kubectl("create", *flags, "-f", "-", stdin=json.dumps(manifest))


def status_of(world: dict, name: str) -> dict[str, Any]:
    return kubectl_json(world["plane"], "get", "runtimenode", name).get("status", {})


def settled(world: dict, name: str, *phases: str, timeout: float = 600) -> dict[str, Any]:
    """The status once the RuntimeNode reached one of `phases` for its generation 1."""

    def check() -> dict[str, Any] | None:
        status = status_of(world, name)
        if status.get("phase") in phases and status.get("observedGeneration") == 1:
            return status
        return None

    return wait_for(f"{name} in {'/'.join(phases)}", check, timeout, interval=2)


def delete(world: dict, name: str) -> None:
    deleted = world["plane"].kubectl("delete", "runtimenode", name, "--timeout=90s", timeout=120)
    assert deleted.returncode == 0, deleted.stderr


def hostile(world: dict, name: str, **spec: Any) -> dict[str, Any]:
    return runtime_node(name, world["host"].name, ssh_port=world["port"], **spec)


# --- refused by the API server -------------------------------------------------------------
# (field path in the spec, value, words of the refusal). Each becomes one RuntimeNode.
ID = "{{ lookup('pipe', 'id') }}"
SCHEMA_REFUSALS: dict[str, tuple[tuple[str, ...], Any, str]] = {
    "node-name-shell": (("nodeName",), "$(touch /tmp/criops-pwned)", "spec.nodeName"),
    "node-name-template": (("nodeName",), ID, "spec.nodeName"),
    "node-name-path": (("nodeName",), "../../etc/passwd", "spec.nodeName"),
    "runtime-shell": (("runtime",), "containerd; id", "spec.runtime"),
    "endpoint-argument": (("criEndpoint",), "unix:///run/containerd/containerd.sock --debug", "spec.criEndpoint"),
    "endpoint-tcp": (("criEndpoint",), "tcp://127.0.0.1:2375", "spec.criEndpoint"),
    "handler-argument": (("runtimeHandler",), "runc --help", "spec.runtimeHandler"),
    "handler-template": (("runtimeHandler",), ID, "spec.runtimeHandler"),
    "host-ssh-option": (("access", "host"), "-oProxyCommand=touch", "spec.access.host"),
    "host-template": (("access", "host"), ID, "spec.access.host"),
    "user-ssh-option": (("access", "user"), "root -oProxyCommand=id", "spec.access.user"),
    "user-template": (("access", "user"), "{{x}}", "spec.access.user"),
    "secret-path": (("access", "sshKeySecretRef", "name"), "../kube-system/admin", "spec.access.sshKeySecretRef.name"),
    "secret-namespace": (("access", "sshKeySecretRef", "namespace"), "kube-system", "unknown field"),
    "interval-shell": (("validation", "interval"), "5m; reboot", "spec.validation.interval"),
    "parallel-argument": (("validation", "parallel"), "2 --ginkgo.dry-run", "spec.validation.parallel"),
    "label-hostname": (("labels", "kubernetes.io/hostname"), "other-node", "Kubernetes' own"),
    "label-control-plane": (("labels", "node-role.kubernetes.io/control-plane"), "", "Kubernetes' own"),
    "label-zone": (("labels", "topology.kubernetes.io/zone"), "zone-a", "Kubernetes' own"),
    "label-load-balancer": (
        ("labels", "node.kubernetes.io/exclude-from-external-load-balancers"),
        "true",
        "Kubernetes' own",
    ),
    "label-k8s-io": (("labels", "k8s.io/owner"), "me", "Kubernetes' own"),
    "label-criops": (("labels", "criops.dev/validated"), "true", "criops.dev/"),
    "label-value-spaces": (("labels", "example.com/ok"), "has spaces", "spec.labels"),
    "label-value-template": (("labels", "example.com/ok"), ID, "spec.labels"),
    "label-key-shell": (("labels", "example.com/$(id)"), "x", "label keys are [prefix/]name"),
}


def _with(spec: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    spec = json.loads(json.dumps(spec))
    place = spec
    for key in path[:-1]:
        place = place.setdefault(key, {})
    place[path[-1]] = value
    return spec


@pytest.mark.parametrize("case", SCHEMA_REFUSALS)
def test_the_api_server_refuses(world, case):
    path, value, words = SCHEMA_REFUSALS[case]
    manifest = hostile(world, f"refused-{case}")
    manifest["spec"] = _with(manifest["spec"], path, value)
    created = create(world, manifest)
    assert created.returncode != 0, f"{case} was accepted"
    assert words in created.stderr, created.stderr
    assert world["plane"].kubectl("get", "runtimenode", f"refused-{case}").returncode != 0


# --- accepted by the schema, refused by the operator before anything runs --------------------
def _operator_refusals(world: dict) -> dict[str, tuple[dict[str, Any], str, str]]:
    command = pipe(world, "extravars")
    return {
        "ssh-common-args": (
            {"ansible_ssh_common_args": f"-o ProxyCommand='{shell(world, 'proxy')}'"},
            "provision.extraVars.ansible_ssh_common_args",
            "not accepted",
        ),
        "become-exe": (
            {"ansible_become_exe": shell(world, "become")},
            "provision.extraVars.ansible_become_exe",
            "not accepted",
        ),
        "criops-plumbing": ({"criops_root": "/"}, "provision.extraVars.criops_root", "not accepted"),
        "unknown-variable": (
            {"containerd_registry_mirrors": []},
            "provision.extraVars.containerd_registry_mirrors",
            "did you mean containerd_registries_mirrors?",
        ),
        "template-name": ({command: "x"}, f"provision.extraVars.{command}", "role variable name"),
        "template-key": (
            {"containerd_registries_mirrors": [{"prefix": "docker.io", "mirrors": [], command: "x"}]},
            f"provision.extraVars.containerd_registries_mirrors[0].{command}",
            "template syntax",
        ),
        "unsafe-marker-key": (
            {"containerd_sandbox_image": {"__ansible_unsafe": "x"}},
            "provision.extraVars.containerd_sandbox_image.__ansible_unsafe",
            "ansible-core's own",
        ),
        "vault-marker-key": (
            {"containerd_sandbox_image": {"__ansible_vault": "$ANSIBLE_VAULT;1.1;AES256"}},
            "provision.extraVars.containerd_sandbox_image.__ansible_vault",
            "ansible-core's own",
        ),
    }


def test_the_operator_refuses_what_the_schema_lets_through(world):
    for case, (extra_vars, field, words) in _operator_refusals(world).items():
        name = f"refused-{case}"
        created = create(world, hostile(world, name, provision={"enabled": True, "extraVars": extra_vars}))
        assert created.returncode == 0, f"{case}: {created.stderr}"
        status = settled(world, name, "Failed", timeout=60)
        validated = condition(status, "Validated")
        assert validated["reason"] == "InvalidSpec", case
        assert validated["message"].startswith(f"spec.{field}: "), validated["message"]
        assert words in validated["message"], validated["message"]
        assert not (world["state"] / "runs" / name).exists(), f"{case}: a playbook ran"
        delete(world, name)
    assert_no_command_ran(world)


def test_a_wrong_type_stops_in_the_argument_specs_before_the_node_changes(world):
    before = node_state(world["host"])
    name = "refused-wrong-type"
    extra_vars = {"containerd_restrict_oom_score_adj": "maybe" + pipe(world, "wrong-type")}
    manifest = hostile(world, name, provision={"enabled": True, "extraVars": extra_vars})
    assert create(world, manifest).returncode == 0
    status = settled(world, name, "Failed", timeout=300)
    provisioned = condition(status, "Provisioned")
    assert provisioned["reason"] == "PlaybookFailed"
    assert "containerd_restrict_oom_score_adj" in provisioned["message"]
    assert_no_command_ran(world)
    assert node_state(world["host"]) == before
    delete(world, name)


# --- accepted, and inert: the text arrives literally, no command runs ------------------------
def test_hostile_mirrors_are_written_as_data(world):
    host = world["host"]
    server = f'https://hostile.example" {pipe(world, "server")}'
    mirror = 'http://hostile.example"]\n[plugins."x"]\nevil = "' + pipe(world, "mirror")
    mirrors = [*LOCAL_MIRRORS, {"prefix": "hostile.example", "server": server, "mirrors": [{"host": mirror}]}]
    name = "inert-mirrors"
    manifest = hostile(
        world,
        name,
        provision={"enabled": True, "extraVars": {"containerd_registries_mirrors": mirrors}},
        validation={"focus": QUICK},
    )
    assert create(world, manifest).returncode == 0
    status = settled(world, name, "Ready", "Failed", timeout=900)
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    written = tomllib.loads(host.sh("cat /etc/containerd/certs.d/hostile.example/hosts.toml").stdout)
    assert written["server"] == server
    assert list(written["host"]) == [mirror]
    assert "plugins" not in written
    assert_no_command_ran(world)
    delete(world, name)


def _inert_validations(world: dict) -> dict[str, dict[str, Any]]:
    return {
        "focus": {"focus": [*QUICK, pipe(world, "focus")]},
        "skip": {"focus": QUICK, "skip": [pipe(world, "skip"), shell(world, "skip-shell")]},
        "test-image": {"focus": QUICK, "testImages": {"defaultTestContainerImage": "busybox" + pipe(world, "image")}},
        "expected-failures": {"focus": QUICK, "expectedFailures": [pipe(world, "expected")]},
    }


@pytest.mark.parametrize("case", ["focus", "skip", "test-image", "expected-failures"])
def test_hostile_validation_fields_reach_critest_literally(world, case):
    name = f"inert-{case}"
    validation = _inert_validations(world)[case]
    assert create(world, hostile(world, name, validation=validation)).returncode == 0
    status = settled(world, name, "Ready", "Failed")
    assert status["phase"] == "Ready", json.dumps(status, indent=2)
    assert status["critest"]["passed"] >= 1
    assert len([r for r in runs(world["state"], name) if r.get("critest")]) == 1
    # critest's argv, as Ansible ran it, holds the patterns as they were written,
    # each a group of the flag's one alternation.
    for flag in ("focus", "skip"):
        patterns = validation.get(flag, [])
        if patterns:
            alternation = "|".join(f"(?:{pattern})" for pattern in patterns)
            assert reached_ansible(world, name, f"--ginkgo.{flag}={alternation}")
    # expectedFailures are the operator's to compare: they never reach Ansible.
    for failure in validation.get("expectedFailures", []):
        assert not reached_ansible(world, name, failure)
    assert_no_command_ran(world)
    delete(world, name)


def test_a_hostile_endpoint_is_used_as_a_path_and_fails_plainly(world):
    name = "inert-endpoint"
    # The schema allows no whitespace in an endpoint: ${IFS} stands in for the space.
    endpoint = "unix:///run/{{lookup('pipe','touch${IFS}" + str(world["markers"] / "endpoint") + "')}}.sock"
    manifest = hostile(world, name, criEndpoint=endpoint, validation={"critest": False})
    assert create(world, manifest).returncode == 0
    status = settled(world, name, "Failed")
    assert condition(status, "Validated")["reason"] == "ValidationFailed"
    assert_no_command_ran(world)
    delete(world, name)


# --- a permanent API error ends in Failed, with the server's words, once -------------------
POLICY = "criops-test-deny-validated"


def test_a_node_update_the_api_server_refuses_ends_in_failed_without_retrying_critest(world):
    plane, name = world["plane"], "refused-by-policy"
    message = "site policy: this node may not be marked validated"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["UPDATE"], "resources": ["nodes"]}
                ]
            },
            "validations": [
                {
                    "expression": "!has(object.metadata.labels) || !('criops.dev/validated' in object.metadata.labels)"
                    " || object.metadata.labels['criops.dev/validated'] != 'true'",
                    "message": message,
                    "reason": "Invalid",
                }
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY},
        "spec": {"policyName": POLICY, "validationActions": ["Deny"]},
    }
    for body in (policy, binding):
        applied = plane.kubectl("apply", "-f", "-", stdin=json.dumps(body))
        assert applied.returncode == 0, applied.stderr
    try:
        # The policy takes effect once the API server has loaded it.
        probe = {"metadata": {"labels": {"criops.dev/validated": "true"}}}
        wait_for("the policy in force", lambda: plane.kubectl(
            "patch", "node", world["host"].name, "--dry-run=server", "--type=merge", "-p", json.dumps(probe)
        ).returncode != 0, 60)  # fmt: skip
        assert create(world, hostile(world, name, validation={"focus": QUICK})).returncode == 0
        status = settled(world, name, "Failed")
        labeled = condition(status, "NodeLabeled")
        assert labeled["reason"] == "NodeUpdateRefused"
        assert message in labeled["message"]
        assert condition(status, "Validated")["reason"] == "CritestPassed"
        assert condition(status, "Ready")["reason"] == "NodeUpdateRefused"
        # Nothing is retried: four retry delays (5 s here) later critest still ran once.
        time.sleep(20)
        assert len([r for r in runs(world["state"], name) if r.get("critest")]) == 1
        assert status_of(world, name)["phase"] == "Failed"
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            plane.kubectl("delete", kind, POLICY, "--ignore-not-found")
    delete(world, name)


# --- Secrets: only the one named, only in the operator's namespace; the key stays secret ----
def test_a_runtime_node_cannot_make_the_operator_read_another_namespaces_secret(world):
    plane, name, other = world["plane"], "secret-elsewhere", "criops-hostile-other"
    assert plane.kubectl("create", "namespace", other).returncode in (0, 1)
    made = plane.kubectl("-n", other, "create", "secret", "generic", "stolen", "--from-literal=ssh-privatekey=x")
    assert made.returncode == 0 or "already exists" in made.stderr, made.stderr
    can = plane.kubectl(
        "auth", "can-i", "get", "secrets", "-n", other, f"--as=system:serviceaccount:{NAMESPACE}:criops-operator"
    )
    assert can.stdout.strip() == "no"
    # Without strict field validation the API server prunes the namespace the schema does not know.
    manifest = hostile(world, name, validation={"focus": QUICK})
    manifest["spec"]["access"]["sshKeySecretRef"] = {"name": "stolen", "namespace": other}
    created = create(world, manifest, "--validate=false")
    assert created.returncode == 0, created.stderr
    stored = kubectl_json(plane, "get", "runtimenode", name)["spec"]["access"]["sshKeySecretRef"]
    assert stored == {"name": "stolen"}

    def waiting() -> dict[str, Any] | None:
        found = condition(status_of(world, name), "Validated")
        return found if found.get("reason") == "Waiting" else None

    validated = wait_for("the Secret looked up in the operator's namespace", waiting, 60)
    assert validated["message"] == f"Secret {NAMESPACE}/stolen not found (spec.access.sshKeySecretRef.name)"
    assert runs(world["state"], name) == []
    delete(world, name)


def test_the_ssh_key_never_appears_in_logs_events_status_or_run_directories(world):
    plane = world["plane"]
    secret = kubectl_json(plane, "-n", NAMESPACE, "get", "secret", SSH_SECRET)
    key = base64.b64decode(secret["data"]["ssh-privatekey"]).decode()
    # Any line of the key's body is enough to recognise it.
    body = [line for line in key.splitlines() if line and not line.startswith("-----")]
    assert body
    assert runs(world["state"], "inert-mirrors", "site.yml"), "the runs above used the key"
    places = {
        "operator log": world["operator"].log_path.read_text(errors="replace"),
        "events": plane.kubectl("get", "events", "-A", "-o", "json").stdout,
        "runtimenodes": plane.kubectl("get", "runtimenodes", "-o", "json").stdout,
    }
    for path in world["state"].rglob("*"):
        if path.is_file():
            places[str(path)] = path.read_bytes().decode(errors="replace")
    leaked = [where for where, text in places.items() if any(line in text for line in body)]
    assert leaked == []
    assert not list(world["state"].rglob("ssh-key")), "the key file outlived its run"


def test_another_key_never_rides_on_the_connection_the_first_key_opened(world, tmp_path):
    plane, name, secret = world["plane"], "rotated-key", "criops-unauthorized-key"
    create_ssh_secret(plane, secret, new_ed25519_key(tmp_path / "id_ed25519"))
    assert create(world, hostile(world, name, validation={"focus": QUICK})).returncode == 0
    settled(world, name, "Ready")
    # At once, while the first key's SSH connection persists (ControlPersist 60 s) and
    # ssh would name its socket the same (host, port, user): a key the node never saw.
    patch = {"spec": {"access": {"sshKeySecretRef": {"name": secret}}}}
    assert plane.kubectl("patch", "runtimenode", name, "--type=merge", "-p", json.dumps(patch)).returncode == 0

    def second() -> dict[str, Any] | None:
        status = status_of(world, name)
        return status if status.get("observedGeneration") == 2 and status.get("phase") in ("Ready", "Failed") else None

    status = wait_for(f"{name} generation 2 done", second, 300)
    assert status["phase"] == "Failed", condition(status, "Validated")
    assert "Permission denied" in condition(status, "Validated")["message"]
    assert node_labels(world).get("criops.dev/validated") != "true"
    delete(world, name)
    plane.kubectl("-n", NAMESPACE, "delete", "secret", secret)


def new_ed25519_key(path: Path) -> Path:
    """A new ed25519 key pair at `path` (private) and `path`.pub; the private key's path."""
    made = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], capture_output=True)
    assert made.returncode == 0, made.stderr
    return path


def test_host_keys_in_the_secret_are_checked_even_where_the_site_turns_checking_off(world, tmp_path):
    # The test world's group_vars turn host key checking off (its hosts get new keys
    # each time); a Secret's known_hosts must still be checked, exactly.
    plane, port = world["plane"], world["port"]
    secret = kubectl_json(plane, "-n", NAMESPACE, "get", "secret", SSH_SECRET)
    key = tmp_path / "id_ed25519"
    key.write_bytes(base64.b64decode(secret["data"]["ssh-privatekey"]))
    scanned = subprocess.run(
        ["ssh-keyscan", "-t", "ed25519", "-p", str(port), "127.0.0.1"], capture_output=True, text=True, timeout=30
    )
    assert scanned.returncode == 0 and scanned.stdout.strip(), scanned.stderr
    impostor = new_ed25519_key(tmp_path / "impostor")
    wrong = f"[127.0.0.1]:{port} " + " ".join(impostor.with_suffix(".pub").read_text().split()[:2]) + "\n"
    for name, lines in (("criops-pinned-right", scanned.stdout), ("criops-pinned-wrong", wrong)):
        (tmp_path / name).write_text(lines)
        create_ssh_secret(plane, name, key, known_hosts=tmp_path / name)

    for name, secret_name in (("pinned-wrong", "criops-pinned-wrong"), ("pinned-right", "criops-pinned-right")):
        manifest = hostile(world, name, validation={"focus": QUICK})
        manifest["spec"]["access"]["sshKeySecretRef"] = {"name": secret_name}
        assert create(world, manifest).returncode == 0
    failed = settled(world, "pinned-wrong", "Ready", "Failed")
    assert failed["phase"] == "Failed", condition(failed, "Validated")
    message = condition(failed, "Validated")["message"]
    assert "Host key verification failed" in message or "REMOTE HOST IDENTIFICATION HAS CHANGED" in message, message
    ready = settled(world, "pinned-right", "Ready", "Failed")
    assert ready["phase"] == "Ready", condition(ready, "Validated")
    # The Ready run was checked: its inventory asked for it, against the Secret's lines.
    run = runs(world["state"], "pinned-right")[-1]["dir"]
    host = json.loads((run / "inventory" / "hosts.json").read_text())["all"]["children"]["cri_nodes"]["children"][
        "containerd"
    ]["hosts"][world["host"].name]
    assert "StrictHostKeyChecking=yes" in host["ansible_ssh_args"]["__ansible_unsafe"]
    assert (run / "env" / "known_hosts").read_text() == scanned.stdout
    for name in ("pinned-wrong", "pinned-right"):
        delete(world, name)
    for name in ("criops-pinned-right", "criops-pinned-wrong"):
        plane.kubectl("-n", NAMESPACE, "delete", "secret", name)


# --- two RuntimeNodes for one Node (a handler each) take turns on it ------------------------
def test_two_runtime_nodes_for_one_node_take_turns(world):
    names = {"turns-runc": "runc", "turns-crun": "crun"}
    for name, handler in names.items():
        assert create(world, hostile(world, name, runtimeHandler=handler, validation={"focus": QUICK})).returncode == 0
    for name in names:
        status = settled(world, name, "Ready", "Failed")
        assert status["phase"] == "Ready", condition(status, "Validated")
    # Validation's throwaway containerd is one per node: the runs did not overlap.
    first, second = sorted((runs(world["state"], name)[0] for name in names), key=lambda r: r["startedAt"])
    started = datetime.strptime(second["startedAt"], "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=UTC)
    assert datetime.fromisoformat(first["finishedAt"]) <= started, (first, second)
    for name in names:
        delete(world, name)


# --- a corrupt record of criops' labels on the Node: reported, never guessed at -----------
def test_a_corrupt_ownership_record_is_reported_and_other_labels_are_left_alone(world):
    plane, node, name = world["plane"], world["host"].name, "corrupt-record"
    # Someone wrote criops' record by hand; a label of theirs sits under a key the spec asks for.
    corrupt = {"metadata": {"annotations": {"criops.dev/owned-labels": "[not json"},
                            "labels": {"example.com/team": "storage"}}}  # fmt: skip
    assert plane.kubectl("patch", "node", node, "--type=merge", "-p", json.dumps(corrupt)).returncode == 0
    try:
        manifest = hostile(world, name, validation={"focus": QUICK}, labels={"example.com/team": "runtime"})
        assert create(world, manifest).returncode == 0
        status = settled(world, name, "Pending", "Ready", "Failed")
        labeled = condition(status, "NodeLabeled")
        assert labeled["reason"] == "OwnedLabelsUnreadable", labeled
        assert "kubectl annotate node" in labeled["message"]
        assert condition(status, "Ready")["status"] == "False"
        assert condition(status, "Validated")["reason"] == "CritestPassed"
        current = kubectl_json(plane, "get", "node", node)["metadata"]
        assert current["labels"]["example.com/team"] == "storage"
        assert current["labels"]["criops.dev/validated"] == "true"
        assert current["annotations"]["criops.dev/owned-labels"] == "[not json"
        events = kubectl_json(plane, "-n", NAMESPACE, "get", "events")["items"]
        assert [e for e in events if e["reason"] == "OwnedLabelsUnreadable" and e["involvedObject"]["name"] == name]
        delete(world, name)
        # Only criops' own labels went with the RuntimeNode; the record is left for a person.
        current = kubectl_json(plane, "get", "node", node)["metadata"]
        assert "criops.dev/validated" not in current["labels"]
        assert current["labels"]["example.com/team"] == "storage"
    finally:
        clean = {"metadata": {"annotations": {"criops.dev/owned-labels": None}, "labels": {"example.com/team": None}}}
        plane.kubectl("patch", "node", node, "--type=merge", "-p", json.dumps(clean))


# --- last: a sandbox image that tries to add TOML keys and run a command ---------------------
def test_a_hostile_sandbox_image_reaches_config_toml_byte_for_byte(world):
    host, name = world["host"], "inert-sandbox-image"
    image = 'registry.k8s.io/pause:3.10"\n[plugins."x"]\nevil = "' + pipe(world, "sandbox")
    manifest = hostile(
        world,
        name,
        provision={"enabled": True, "extraVars": {"containerd_sandbox_image": image}},
        validation={"critest": False},
    )
    assert create(world, manifest).returncode == 0

    def provisioned() -> dict[str, Any] | None:
        found = condition(status_of(world, name), "Provisioned")
        return found if found.get("status") in ("True", "False") else None

    assert wait_for("site.yml finished", provisioned, 600, interval=2)["status"] == "True"
    config = tomllib.loads(host.sh("cat /etc/containerd/config.toml").stdout)
    assert config["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"] == image
    assert "x" not in config["plugins"]
    assert host.sh("systemctl is-active containerd").stdout.strip() == "active"
    assert_no_command_ran(world)
    delete(world, name)
