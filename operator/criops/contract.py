"""The contract between the operator and criops' playbooks, stated once.

The operator runs two playbooks of the checkout it carries (Settings.project_dir),
through ansible-runner (criops.ansible_run), one node per run:

``site.yml`` (provisioning, when spec.provision.enabled)
    Extra variables: spec.provision.extraVars, as given (core.spec checked every
    key against the argument specs of the roles the runtime's row in
    core.runtimes lists). Nothing else: versions, mirrors and sources come from
    the inventory's group_vars (Settings.group_vars_dir).

``validate.yml`` (critest, or the light probe on the timer)
    Extra variables: ``validate_vars`` below — the node to limit the play to,
    the CRI endpoint, its CRI API (the catalog's: it picks the crictl/critest
    generation) and handler, whether critest runs and with which focus,
    skip, parallelism and timeout, the handler checks of the runtime's catalog
    row and whether validation stops a stopped pod's containers in the
    kubelet's place (the row's ``leaves_containers_of_stopped_pods``), where
    smoke pods and critest run (``cri_validate_instance``: ``throwaway`` for a
    containerd at the catalog's socket, core.runtimes.validation_instance;
    ``live`` otherwise, which needs a drained Node), image overrides, and
    ``cri_validate_report_dir`` (the run's own report directory, added by
    ansible_run).

Inventory (``inventory`` below)
    One host, named like its Node, in its runtime's group; that group is a
    child of ``cri_nodes`` (core.runtimes.CRI_NODES_GROUP), directly or through
    the row's parent group (kata under containerd), so the shared roles'
    group_vars apply. SSH hosts get ansible_host/port/user, the run's key
    file, the key's own directory of shared SSH connections and, where the
    Secret pins host keys, ssh_args that check them strictly (SshAccess below);
    ``connection: local`` hosts use the controller's Python;
    ``connection: pod`` hosts are reached from the on-node pod (criops.onnode)
    through ``community.general.chroot`` into the node's root, mounted at ``/host``.

Reports (written by roles/cri_validate on the controller; see its README.md)
    ``<report dir>/<node>/probe.json``: what the endpoint answered —
    ``reachable``, ``criV1``, ``runtime`` (name, version, criApiVersion).
    ``<report dir>/<node>/<handler or "default">/summary.json``: critest's
    JUnit report summarised — version, handler, total, passed, failed, skipped,
    durationSeconds, finishedAt, groups, failures (names, at most
    cri_validate_failures_listed) and failuresOmitted.
    core.status turns a summary into status.critest (``critest_status``) and
    the Validated verdict (``validation_verdict``).

Failures
    A run that fails is described by its first failed or unreachable task, as
    ``<task name>: <message>`` (``failures`` below): the message of a loop's
    first failed item, and a command's last line of stderr rather than
    Ansible's "non-zero return code".

Every string in the extra variables and the inventory is marked unsafe
(core.untrusted) before it is written: the playbooks receive RuntimeNode
values as data, never as templates.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .core.runtimes import CATALOG, CRI_NODES_GROUP, validation_instance
from .core.spec import CheckedSpec
from .core.untrusted import mark_unsafe

SITE_PLAYBOOK = "site.yml"
VALIDATE_PLAYBOOK = "validate.yml"
# The extra variable that tells cri_validate where the controller keeps this run's reports.
REPORT_DIR_VARIABLE = "cri_validate_report_dir"
PROBE_REPORT = "probe.json"
CRITEST_SUMMARY = "summary.json"
# The report folder of a run without a runtime handler (the runtime's default).
DEFAULT_HANDLER_DIR = "default"
# connection: pod — where the on-node pod mounts the node's root, and how Ansible gets in.
HOST_ROOT = "/host"
CHROOT_CONNECTION = "community.general.chroot"


def inventory(
    target: CheckedSpec, key_file: Path | None, ssh_control_dir: Path | None = None, ssh_args: str | None = None
) -> dict[str, Any]:
    """A one-node inventory: the node in its runtime's group under cri_nodes, reached as spec.access says.

    Every value from the spec is marked unsafe; the host name itself is a Node
    name (DNS subdomain syntax, checked), which cannot hold template syntax.
    SSH hosts keep their shared connections in `ssh_control_dir` (ssh_control_dir below);
    `ssh_args`, when given, replaces ansible.cfg's for the host (strict_host_key_args).
    """
    if target.access.connection == "pod":
        # Ansible in the on-node pod, in a chroot of the node's root mounted at HOST_ROOT
        # (criops.onnode): root already, the node's own python3 runs the modules.
        host: dict[str, Any] = {"ansible_connection": CHROOT_CONNECTION, "ansible_host": HOST_ROOT}
        group: dict[str, Any] = {target.group: {"hosts": {target.node: host}}}
        return _under_cri_nodes(target, group)
    host = mark_unsafe({"ansible_connection": target.access.connection, "ansible_user": target.access.user})
    if target.access.connection == "ssh":
        host.update(mark_unsafe({"ansible_host": target.access.host}), ansible_port=target.access.port)
        if key_file is not None:
            host["ansible_ssh_private_key_file"] = mark_unsafe(str(key_file))
        if ssh_control_dir is not None:
            host["ansible_control_path_dir"] = mark_unsafe(str(ssh_control_dir))
        if ssh_args is not None:
            host.update(ansible_host_key_checking=True, ansible_ssh_args=mark_unsafe(ssh_args))
    else:
        # criops' own template, not the spec's: the controller's Python runs local tasks.
        host["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
    return _under_cri_nodes(target, {target.group: {"hosts": {target.node: host}}})


@dataclass(frozen=True)
class SshAccess:
    """What a RuntimeNode's Secret holds for SSH: the private key (``ssh-privatekey``) and,
    when the Secret has them, the node's host keys (``known_hosts``: ssh-keyscan's lines)."""

    key: str
    known_hosts: str | None = None


def ssh_control_dir(state_dir: Path, ssh: SshAccess | None) -> Path:
    """Where a run keeps its SSH connection to share with the next runs (ControlPersist):
    one directory per key and host keys. Ansible names the socket after host, port and
    user only, so in one directory a run with another key (a rotated Secret, another
    RuntimeNode naming the same host) would ride on a connection this key opened, and be
    reported Ready with a key the node refuses; a run with host keys would ride on a
    connection whose host was never checked against them. The name is a digest, never
    the key."""
    if ssh is None:
        return state_dir / "ssh" / "no-key"
    digest = hashlib.sha256(json.dumps([ssh.key, ssh.known_hosts]).encode()).hexdigest()[:12]
    return state_dir / "ssh" / digest


def strict_host_key_args(ssh_args: str, known_hosts_file: Path) -> str:
    """ansible.cfg's ssh_args, then the options that check the node's host key against
    exactly `known_hosts_file`. ssh keeps an option's first value and ssh_args come first
    on its command line: a site's ansible_ssh_common_args that turns checking off (as a
    test inventory may) cannot undo them."""
    checked = (
        f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={shlex.quote(str(known_hosts_file))}"
        " -o GlobalKnownHostsFile=/dev/null"
    )
    return f"{ssh_args} {checked}".strip()


def _under_cri_nodes(target: CheckedSpec, group: dict[str, Any]) -> dict[str, Any]:
    """The runtime's group, under its parent group (if any), under cri_nodes."""
    if target.parent_group:
        group = {target.parent_group: {"children": group}}
    return {"all": {"children": {CRI_NODES_GROUP: {"children": group}}}}


def validate_vars(target: CheckedSpec, critest: bool, failures_listed: int) -> dict[str, Any]:
    """Extra variables for validate.yml on this node (passed as a JSON file, never through a shell).

    The report directory is the run's own: ansible_run adds it.
    """
    variables: dict[str, Any] = {
        "criops_validate_hosts": target.node,
        "cri_validate_endpoint": target.endpoint,
        # Picks crictl/critest: v1alpha2 endpoints are proven with cri-tools v1.13.
        "cri_validate_cri_api": CATALOG[target.runtime].cri_api,
        "cri_validate_handlers": [target.handler],
        "cri_validate_critest_enabled": critest,
        "cri_validate_critest_focus": list(target.validation.focus),
        "cri_validate_critest_skip": list(target.validation.skip),
        "cri_validate_critest_parallel": target.validation.parallel,
        "cri_validate_critest_timeout": target.validation.timeout_seconds,
        # Every failed name, so expectedFailures can be matched exactly.
        "cri_validate_failures_listed": failures_listed,
        # A kubelet's duty critest leaves undone (virtlet: its VMs would pile up).
        "cri_validate_stop_containers_of_stopped_pods": CATALOG[target.runtime].leaves_containers_of_stopped_pods,
        # Smoke pods and critest on a throwaway containerd where there is one: a live
        # Node's kubelet stops every pod sandbox it did not create.
        "cri_validate_instance": validation_instance(target.runtime, target.endpoint),
    }
    checks = CATALOG[target.runtime].handler_checks
    if checks:
        variables["cri_validate_handler_checks"] = {target.handler: [list(argv) for argv in checks]}
    if target.validation.test_images:
        variables["cri_validate_test_images_override"] = dict(target.validation.test_images)
    return variables


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def probe_report(report_dir: Path, node: str) -> dict[str, Any] | None:
    """probe.json of a validate.yml run, or None when the run wrote none."""
    return _read_json(report_dir / node / PROBE_REPORT)


def critest_summary(report_dir: Path, node: str, handler: str) -> dict[str, Any] | None:
    """summary.json of the critest run for `handler` ("" for the runtime's default), or None."""
    return _read_json(report_dir / node / (handler or DEFAULT_HANDLER_DIR) / CRITEST_SUMMARY)


def failures(events: Iterable[dict[str, Any]]) -> list[str]:
    """Each failed or unreachable task of ansible-runner's events as "<task>: <message>", in order."""
    found = []
    for event in events:
        if event.get("event") not in ("runner_on_failed", "runner_on_unreachable"):
            continue
        data = event.get("event_data", {})
        if data.get("ignore_errors"):
            continue
        res = data.get("res", {})
        # A loop's failure is in its first failed item.
        res = next((item for item in res.get("results", []) if item.get("failed")), res)
        message = res.get("msg") or "failed"
        if res.get("stderr") and message == "non-zero return code":
            # A command's own words say more than Ansible's summary of them.
            message = res["stderr"].strip().splitlines()[-1]
        found.append(f"{data.get('task', '?')}: {str(message).strip()}")
    return found


# connection: pod — the run travels to criops.onnode in the on-node pod as one JSON
# document in this environment variable, and comes back as the last line of the
# pod's log: a JSON object under RESULT_KEY.
ONNODE_RUN_ENV = "CRIOPS_ONNODE_RUN"
RESULT_KEY = "criopsRun"
# Where the on-node pod keeps the run (an emptyDir): inventory, extra vars, reports.
ONNODE_WORK_DIR = "/run/criops"
# What the result line may carry of the reports, all files together (bytes): the
# JSON reports the operator reads are a few kB; logs beyond this are left out.
ONNODE_REPORTS_LIMIT = 4 * 1024 * 1024


def result_line(status: str, rc: int, failures: list[str], reports: dict[str, str], omitted: list[str]) -> str:
    """The on-node pod's last log line: how the playbook ended and the report files it wrote."""
    body = {"status": status, "rc": rc, "failures": failures, "reports": reports, "omitted": omitted}
    return json.dumps({RESULT_KEY: body}, separators=(",", ":"))


def parse_result(log: str) -> dict[str, Any] | None:
    """The result of an on-node run from its pod's log: only the last line counts (Ansible's
    output above it may hold anything a RuntimeNode said), and only as criops writes it."""
    lines = log.rstrip("\n").rsplit("\n", 1)
    try:
        found = json.loads(lines[-1])
    except ValueError:
        return None
    body = found.get(RESULT_KEY) if isinstance(found, dict) else None
    if not isinstance(body, dict):
        return None
    status, rc, failed, reports = (body.get(k) for k in ("status", "rc", "failures", "reports"))
    if not (isinstance(status, str) and isinstance(rc, int) and isinstance(failed, list) and isinstance(reports, dict)):
        return None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in reports.items()):
        return None
    return body
