"""The on-node side of `connection: pod`: `python -m criops.onnode` in the pod the
operator places on a Node (criops.kube.node_pods).

The operator sends one run as a JSON document in $CRIOPS_ONNODE_RUN: the playbook,
the node to limit it to, the inventory (contract.inventory: the node reached with
community.general.chroot into its root, mounted at /host), the extra variables
and the site's group_vars files. This writes them into the pod's work directory
exactly as the operator writes a run directory (ansible_run.write_run_files:
every string of the extra vars marked unsafe), runs the playbook with
ansible-runner, Ansible's output going to the pod's log, and prints, as the
log's last line, how it ended and the report files validate.yml fetched
(contract.result_line). Nothing here reaches the Kubernetes API: the pod has no
ServiceAccount token; the operator reads the log.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from . import contract
from .ansible_run import run_playbook, write_run_files
from .settings import Settings

PLAYBOOKS = (contract.SITE_PLAYBOOK, contract.VALIDATE_PLAYBOOK)


def collect_reports(report_dir: Path, limit: int = contract.ONNODE_REPORTS_LIMIT) -> tuple[dict[str, str], list[str]]:
    """The report files as {path under report_dir: text}, smallest first until `limit`
    bytes; the names of those left out (too big, or not text)."""
    files = sorted((p for p in report_dir.rglob("*") if p.is_file()), key=lambda p: (p.stat().st_size, str(p)))
    reports: dict[str, str] = {}
    omitted: list[str] = []
    total = 0
    for path in files:
        relative = str(path.relative_to(report_dir))
        size = path.stat().st_size
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            omitted.append(relative)
            continue
        if total + size > limit:
            omitted.append(relative)
            continue
        reports[relative] = text
        total += size
    return reports, omitted


def main() -> int:
    run = json.loads(os.environ[contract.ONNODE_RUN_ENV])
    playbook = run["playbook"]
    if playbook not in PLAYBOOKS:
        raise SystemExit(f"criops.onnode runs {' or '.join(PLAYBOOKS)}, not {playbook!r}")
    work = Path(contract.ONNODE_WORK_DIR)
    report_dir = work / "reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    inventory_dir = write_run_files(work, run["inventory"], run["extravars"], run.get("groupVars") or {})
    status, rc, failures = run_playbook(
        work,
        Settings.from_env().project_dir,
        playbook,
        inventory_dir,
        run["limit"],
        int(run["timeout"]),
        lambda: False,
        quiet=False,
    )
    reports, omitted = collect_reports(report_dir)
    sys.stdout.flush()
    # The last line of the log, after everything Ansible printed.
    print("\n" + contract.result_line(status, rc, failures, reports, omitted), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
