"""Playbook runs through ansible-runner, in a pool that never blocks the event loop.

Each run gets its own directory (inventory, extra vars as a JSON file, the SSH
key for the length of the run, reports, ansible-runner's artifacts); the last
few per RuntimeNode are kept for inspection. What goes into a run and what comes
out is criops.contract; this module only runs it. Nothing from a RuntimeNode is
ever code: every string in the extra vars and the inventory is marked unsafe
(core.untrusted), so Ansible uses it as literal text and never templates it, and
Ansible starts its commands with argv lists, never through a shell.
"""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from . import contract
from .core.spec import CheckedSpec
from .core.untrusted import mark_unsafe
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    playbook: str
    status: str  # ansible-runner's: successful, failed, timeout, canceled
    rc: int
    run_dir: Path
    seconds: float
    # "<task>: <message>" of each failed or unreachable task, in order.
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "successful"

    @property
    def report_dir(self) -> Path:
        return self.run_dir / "reports"

    def reason(self) -> str:
        if self.failures:
            return self.failures[0]
        if self.status == "timeout":
            return f"{self.playbook} did not finish in time"
        return f"{self.playbook} ended {self.status} (rc {self.rc})"


class PlaybookPool:
    """At most `settings.concurrency` playbook runs at once; each in a worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Runs last minutes: their own threads, so API calls never queue behind them.
        self._threads = ThreadPoolExecutor(settings.concurrency, "criops-playbook")
        self.active = 0
        # The base of a host's own ssh_args when its host keys are pinned (ansible.cfg's).
        self._ssh_args = configured_ssh_args(settings.project_dir)

    def close(self) -> None:
        """Start no more runs; runs still going are stopped by their cancelled handlers."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    def _new_run_dir(self, owner: str, playbook: str, record: dict[str, Any]) -> Path:
        """A fresh run directory; older ones beyond runs_kept are removed (in the worker thread)."""
        runs = self.settings.state_dir / "runs" / owner
        run_dir = runs / f"{record['startedAt']}-{Path(playbook).stem}"
        (run_dir / "env").mkdir(parents=True, mode=0o700)
        (run_dir / "run.json").write_text(json.dumps(record) + "\n")
        kept = sorted(p for p in runs.iterdir() if p.is_dir())
        for old in kept[: -self.settings.runs_kept]:
            shutil.rmtree(old, ignore_errors=True)
        return run_dir

    async def run(
        self,
        owner: str,
        playbook: str,
        target: CheckedSpec,
        extravars: dict[str, Any],
        timeout: int,
        ssh: contract.SshAccess | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunResult:
        async with self._slots:
            self.active += 1
            cancelled = threading.Event()
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self._threads, self._run, owner, playbook, target, extravars, timeout, ssh, meta or {}, cancelled
            )
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                # Stop the playbook rather than leave it running unowned.
                cancelled.set()
                with contextlib.suppress(Exception):
                    await work
                raise
            finally:
                self.active -= 1

    def _run(
        self,
        owner: str,
        playbook: str,
        target: CheckedSpec,
        extravars: dict[str, Any],
        timeout: int,
        ssh: contract.SshAccess | None,
        meta: dict[str, Any],
        cancelled: threading.Event,
    ) -> RunResult:
        # Files and old runs are handled here, in the worker thread, never on the event loop.
        record = {"playbook": playbook, "startedAt": datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ"), **meta}
        run_dir = self._new_run_dir(owner, playbook, record)
        started = time.monotonic()
        key_file = None
        if ssh is not None:
            key_file = write_private(run_dir / "env" / "ssh-key", ssh.key)
        if target.access.connection == "pod":
            result = self._run_on_node(owner, playbook, target, extravars, timeout, meta, run_dir, cancelled)
        else:
            ssh_args = None
            if ssh is not None and ssh.known_hosts is not None:
                known_hosts = write_private(run_dir / "env" / "known_hosts", ssh.known_hosts)
                ssh_args = contract.strict_host_key_args(self._ssh_args, known_hosts)
            inventory = contract.inventory(
                target, key_file, contract.ssh_control_dir(self.settings.state_dir, ssh), ssh_args
            )
            result = self._run_here(playbook, target, extravars, timeout, inventory, key_file, run_dir, cancelled)
        result.seconds = round(time.monotonic() - started, 2)
        record.update(status=result.status, seconds=result.seconds, finishedAt=datetime.now(UTC).isoformat())
        (run_dir / "run.json").write_text(json.dumps(record) + "\n")
        log.info("%s on %s: %s in %.1f s (%s)", playbook, target.node, result.status, result.seconds, run_dir)
        return result

    def _run_here(
        self,
        playbook: str,
        target: CheckedSpec,
        extravars: dict[str, Any],
        timeout: int,
        inventory: dict[str, Any],
        key_file: Path | None,
        run_dir: Path,
        cancelled: threading.Event,
    ) -> RunResult:
        """ansible-runner in this process's worker thread (connection ssh or local)."""
        try:
            inventory_dir = write_run_files(
                run_dir,
                inventory,
                {**extravars, contract.REPORT_DIR_VARIABLE: str(run_dir / "reports")},
                self.settings.group_vars_dir,
            )
            status, rc, failures = run_playbook(
                run_dir, self.settings.project_dir, playbook, inventory_dir, target.node, timeout, cancelled.is_set
            )
        finally:
            if key_file is not None:
                key_file.unlink(missing_ok=True)
        return RunResult(playbook, status, rc, run_dir, 0.0, failures)

    def _run_on_node(
        self,
        owner: str,
        playbook: str,
        target: CheckedSpec,
        extravars: dict[str, Any],
        timeout: int,
        meta: dict[str, Any],
        run_dir: Path,
        cancelled: threading.Event,
    ) -> RunResult:
        """The same run, by criops.onnode in a pod on the node (connection pod)."""
        # Imported here: criops.onnode, in the pod, uses this module without a Kubernetes client.
        from .kube import node_pods

        run = {
            "playbook": playbook,
            "limit": target.node,
            "timeout": timeout,
            "inventory": contract.inventory(target, None),
            # Marked unsafe where the file is written, in the pod (write_run_files).
            "extravars": {**extravars, contract.REPORT_DIR_VARIABLE: f"{contract.ONNODE_WORK_DIR}/reports"},
            "groupVars": group_vars_files(self.settings.group_vars_dir),
        }
        (run_dir / "env" / "onnode-run.json").write_text(json.dumps(run, indent=2))
        status, rc, failures = node_pods.run(
            self.settings, owner, target.node, playbook, int(meta.get("generation", 0)), run, run_dir, cancelled
        )
        return RunResult(playbook, status, rc, run_dir, 0.0, failures)


def write_private(path: Path, text: str) -> Path:
    """A new file only its owner may read, ending with a newline (ssh needs one after a key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text if text.endswith("\n") else text + "\n")
    return path


# Ansible's own ssh_args, when ansible.cfg names none.
ANSIBLE_DEFAULT_SSH_ARGS = "-C -o ControlMaster=auto -o ControlPersist=60s"


def configured_ssh_args(project_dir: Path) -> str:
    """ssh_args of the project's ansible.cfg, the base a host's own ssh_args must keep."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(project_dir / "ansible.cfg")
    return parser.get("ssh_connection", "ssh_args", fallback=ANSIBLE_DEFAULT_SSH_ARGS)


def group_vars_files(directory: Path | None) -> dict[str, str]:
    """The site's group_vars as {relative path: text}, for a run elsewhere (the on-node pod).
    A mounted ConfigMap's own entries (`..data`, `..<timestamp>`) are skipped."""
    if directory is None:
        return {}
    found = {}
    for path in sorted(directory.resolve().rglob("*")):
        relative = path.relative_to(directory.resolve())
        if path.is_file() and not any(part.startswith("..") for part in relative.parts):
            found[str(relative)] = path.read_text()
    return found


def write_run_files(
    run_dir: Path, inventory: dict[str, Any], extravars: dict[str, Any], group_vars: Path | dict[str, str] | None
) -> Path:
    """A run's inventory (with the site's group_vars: a directory linked, or files written)
    and its extra vars file, every string of the extra vars marked unsafe; the inventory
    directory."""
    inventory_dir = run_dir / "inventory"
    inventory_dir.mkdir(parents=True)
    (inventory_dir / "hosts.json").write_text(json.dumps(inventory, indent=2))
    if isinstance(group_vars, Path):
        (inventory_dir / "group_vars").symlink_to(group_vars.resolve())
    elif group_vars:
        root = inventory_dir / "group_vars"
        for relative, text in group_vars.items():
            target = (root / relative).resolve()
            if not target.is_relative_to(root.resolve()):
                raise ValueError(f"group_vars file {relative!r} is outside group_vars")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    (run_dir / "env").mkdir(mode=0o700, exist_ok=True)
    extravars_file = run_dir / "env" / "extravars"
    extravars_file.write_text(json.dumps(mark_unsafe(extravars), indent=2))
    extravars_file.chmod(0o600)
    return inventory_dir


def run_playbook(
    private_dir: Path,
    project_dir: Path,
    playbook: str,
    inventory_dir: Path,
    limit: str,
    timeout: int,
    cancelled: Callable[[], bool],
    quiet: bool = True,
) -> tuple[str, int, list[str]]:
    """ansible-runner on a prepared run directory: (status, rc, failed tasks)."""
    runner = ansible_runner.run(
        private_data_dir=str(private_dir),
        project_dir=str(project_dir),
        playbook=str(project_dir / "playbooks" / playbook),
        inventory=str(inventory_dir),
        limit=limit,
        ident="ansible",
        envvars={"ANSIBLE_CONFIG": str(project_dir / "ansible.cfg"), "CRIOPS_ROOT": str(project_dir)},
        quiet=quiet,
        timeout=timeout,
        cancel_callback=cancelled,
        suppress_env_files=True,
    )
    return runner.status, runner.rc or 0, contract.failures(runner.events)
