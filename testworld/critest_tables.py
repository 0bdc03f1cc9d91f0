#!/usr/bin/env python3
"""Print the critest tables of a report directory (validate.yml's output).

    python -m testworld.critest_tables [artifacts/critest]   (from the checkout's root)

One table per <host>/<handler>/summary.json, rendered by the same filter that
validate.yml prints with.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from testworld.filter_plugins import critest_report as report

ROOT = Path(__file__).resolve().parents[1]

reports = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "artifacts/critest")
summaries = sorted(reports.glob("*/*/summary.json"))
if not summaries:
    sys.exit(f"no */*/summary.json under {reports}")
for path in summaries:
    summary = json.loads(path.read_text())
    runtime = summary.get("runtime", {})
    print(f"## {path.parent.parent.name}: {runtime.get('name', '?')} {runtime.get('version', '?')}")
    print(report.critest_table(summary))
    print()
