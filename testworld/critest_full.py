#!/usr/bin/env python3
"""The full critest suite against a CRI v1alpha2 runtime on a fresh test host.

    python -m testworld.critest_full virtlet|singularity_cri   (make critest-virtlet)

A fresh Debian 12 test host joins the runtime's inventory group; site.yml
installs the runtime from the artifacts hack/ built (inventory/local's
group_vars), validate.yml runs critest v1.13 unfocused through the same role the
operator uses, and the table is printed as docs/critest-results.md shows it.
Reports stay under artifacts/critest-full/<group>/; the test host is removed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

from testworld.hosts import REPO, Node, local_host, run_playbook, write_inventory

GROUPS = ("virtlet", "singularity_cri")
# The whole suite under TCG takes 11-15 minutes for virtlet.
CRITEST_TIMEOUT = 3600


def say(message: str) -> None:
    print(f"[criops critest-full {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    group = sys.argv[1] if len(sys.argv) > 1 else ""
    if group not in GROUPS:
        sys.exit(f"usage: python -m testworld.critest_full {'|'.join(GROUPS)}")
    workdir = REPO / "artifacts" / "critest-full" / group
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    host = Node(f"criops-critest-{group.replace('_', '-')}")
    say(f"starting a fresh test host {host.name}")
    started = local_host("up", host.name)
    if started.returncode != 0:
        sys.exit(f"cannot start {host.name}: {started.stderr}")
    try:
        inventory = write_inventory(workdir / "inventory", host, group=group)
        say("site.yml")
        site = run_playbook(inventory, "playbooks/site.yml")
        if site.returncode != 0:
            print(site.stdout[-6000:])
            return 1
        say("validate.yml: the whole critest v1.13 suite")
        began = time.monotonic()
        validate = run_playbook(
            inventory,
            "playbooks/validate.yml",
            {"cri_validate_report_dir": str(workdir / "reports"), "cri_validate_critest_timeout": CRITEST_TIMEOUT},
            # critest's own limit, and the probe, smoke pods and report around it.
            timeout=CRITEST_TIMEOUT + 600,
        )
        say(f"validate.yml exited {validate.returncode} after {time.monotonic() - began:.0f} s")
        tables = subprocess.run(
            [sys.executable, "-m", "testworld.critest_tables", str(workdir / "reports")], cwd=REPO, check=False
        )
        return validate.returncode or tables.returncode
    finally:
        local_host("down", host.name)


if __name__ == "__main__":
    sys.exit(main())
