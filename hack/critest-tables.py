#!/usr/bin/env python3
"""Print the critest tables of a report directory (validate.yml's output).

    hack/critest-tables.py [artifacts/critest]

One table per <host>/<handler>/summary.json, rendered by the same filter that
validate.yml prints with.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location(
    "critest_report", ROOT / "roles/cri_validate/filter_plugins/critest_report.py"
)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

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
