"""Playbook runs through ansible-runner, in a pool that never blocks the event loop.

Each run gets its own directory (inventory, extra vars as a JSON file, the SSH
key for the length of the run, reports, ansible-runner's artifacts); the last
few per RuntimeNode are kept for inspection. Nothing from a RuntimeNode is ever
code: every string in the extra vars and the inventory is marked unsafe
(core.untrusted), so Ansible uses it as literal text and never templates it, and
Ansible starts its commands with argv lists, never through a shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ansible_runner

from .core.runtimes import CRI_NODES_GROUP
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

    def report(self, *parts: str) -> dict[str, Any] | None:
        """A JSON report the playbook wrote under reports/, or None."""
        path = self.report_dir.joinpath(*parts)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def reason(self) -> str:
        if self.failures:
            return self.failures[0]
        if self.status == "timeout":
            return f"{self.playbook} did not finish in time"
        return f"{self.playbook} ended {self.status} (rc {self.rc})"


def inventory(target: CheckedSpec, key_file: Path | None) -> dict[str, Any]:
    """A one-node inventory: the node in its runtime's group under cri_nodes, reached as spec.access says.

    Every value from the spec is marked unsafe; the host name itself is a Node
    name (DNS subdomain syntax, checked), which cannot hold template syntax.
    """
    host: dict[str, Any] = mark_unsafe(
        {"ansible_connection": target.access.connection, "ansible_user": target.access.user}
    )
    if target.access.connection == "ssh":
        host.update(mark_unsafe({"ansible_host": target.access.host}), ansible_port=target.access.port)
        if key_file is not None:
            host["ansible_ssh_private_key_file"] = mark_unsafe(str(key_file))
    else:
        # criops' own template, not the spec's: the controller's Python runs local tasks.
        host["ansible_python_interpreter"] = "{{ ansible_playbook_python }}"
    group: dict[str, Any] = {target.group: {"hosts": {target.node: host}}}
    if target.parent_group:
        group = {target.parent_group: {"children": group}}
    return {"all": {"children": {CRI_NODES_GROUP: {"children": group}}}}


def _failures(runner: Any) -> list[str]:
    found = []
    for event in runner.events:
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


class PlaybookPool:
    """At most `settings.concurrency` playbook runs at once; each in a worker thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Runs last minutes: their own threads, so API calls never queue behind them.
        self._threads = ThreadPoolExecutor(settings.concurrency, "criops-playbook")
        self.active = 0

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
        ssh_key: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> RunResult:
        async with self._slots:
            self.active += 1
            cancelled = threading.Event()
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(
                self._threads, self._run, owner, playbook, target, extravars, timeout, ssh_key, meta or {}, cancelled
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
        ssh_key: str | None,
        meta: dict[str, Any],
        cancelled: threading.Event,
    ) -> RunResult:
        # Files and old runs are handled here, in the worker thread, never on the event loop.
        record = {"playbook": playbook, "startedAt": datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ"), **meta}
        run_dir = self._new_run_dir(owner, playbook, record)
        started = time.monotonic()
        key_file = None
        if ssh_key is not None:
            key_file = run_dir / "env" / "ssh-key"
            fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(ssh_key if ssh_key.endswith("\n") else ssh_key + "\n")
        inventory_dir = run_dir / "inventory"
        inventory_dir.mkdir()
        (inventory_dir / "hosts.json").write_text(json.dumps(inventory(target, key_file), indent=2))
        if self.settings.group_vars_dir is not None:
            (inventory_dir / "group_vars").symlink_to(self.settings.group_vars_dir.resolve())
        # Everything here is data: the spec's values and criops' own (paths, handler checks) alike.
        variables = mark_unsafe({**extravars, "cri_validate_report_dir": str(run_dir / "reports")})
        extravars_file = run_dir / "env" / "extravars"
        extravars_file.write_text(json.dumps(variables, indent=2))
        extravars_file.chmod(0o600)
        project = self.settings.project_dir
        try:
            runner = ansible_runner.run(
                private_data_dir=str(run_dir),
                project_dir=str(project),
                playbook=str(project / "playbooks" / playbook),
                inventory=str(inventory_dir),
                limit=target.node,
                ident="ansible",
                envvars={"ANSIBLE_CONFIG": str(project / "ansible.cfg"), "CRIOPS_ROOT": str(project)},
                quiet=True,
                timeout=timeout,
                cancel_callback=cancelled.is_set,
                suppress_env_files=True,
            )
            result = RunResult(playbook, runner.status, runner.rc or 0, run_dir, 0.0, _failures(runner))
        finally:
            if key_file is not None:
                key_file.unlink(missing_ok=True)
        result.seconds = round(time.monotonic() - started, 2)
        record.update(status=result.status, seconds=result.seconds, finishedAt=datetime.now(UTC).isoformat())
        (run_dir / "run.json").write_text(json.dumps(record) + "\n")
        log.info("%s on %s: %s in %.1f s (%s)", playbook, target.node, result.status, result.seconds, run_dir)
        return result
