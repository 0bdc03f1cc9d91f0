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
        (inventory_dir / "hosts.json").write_text(json.dumps(contract.inventory(target, key_file), indent=2))
        if self.settings.group_vars_dir is not None:
            (inventory_dir / "group_vars").symlink_to(self.settings.group_vars_dir.resolve())
        # Everything here is data: the spec's values and criops' own (paths, handler checks) alike.
        variables = mark_unsafe({**extravars, contract.REPORT_DIR_VARIABLE: str(run_dir / "reports")})
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
            result = RunResult(playbook, runner.status, runner.rc or 0, run_dir, 0.0, contract.failures(runner.events))
        finally:
            if key_file is not None:
                key_file.unlink(missing_ok=True)
        result.seconds = round(time.monotonic() - started, 2)
        record.update(status=result.status, seconds=result.seconds, finishedAt=datetime.now(UTC).isoformat())
        (run_dir / "run.json").write_text(json.dumps(record) + "\n")
        log.info("%s on %s: %s in %.1f s (%s)", playbook, target.node, result.status, result.seconds, run_dir)
        return result
