"""Turn critest's JUnit report into the per-spec-group summary criops reports.

critest names every spec "[k8s.io] <Group> <context…> <spec>"; ginkgo's JUnit
report joins those texts with spaces, so the group is recovered by matching the
group names critest declares (longest first), falling back to the first word.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

# Top-level Describe texts of critest's validation suite (cri-tools v1.37),
# longest first so that "Image Manager" wins over "Image".
SPEC_GROUPS = sorted(
    [
        "AppArmor",
        "Container",
        "Container Mount Propagation",
        "Container Mount Readonly",
        "Container OOM",
        "Idempotence",
        "Image",
        "Image Consistency",
        "Image Identifier Consistency",
        "Image Manager",
        "Image Volume",
        "Multiple Containers",
        "NRI",
        "Networking",
        "PodSandbox",
        "Runtime info",
        "SELinux",
        "Security Context",
        "Streaming",
    ],
    key=len,
    reverse=True,
)
SUITE_NODES = (
    "[BeforeSuite]",
    "[AfterSuite]",
    "[SynchronizedBeforeSuite]",
    "[SynchronizedAfterSuite]",
    "[ReportAfterSuite]",
)


def spec_group(name: str) -> str:
    """The critest spec group of a JUnit test case name."""
    text = name.removeprefix("[It] ").strip()
    text = text.removeprefix("[k8s.io] ")
    for group in SPEC_GROUPS:
        if text == group or text.startswith(group + " "):
            return group
    return text.split(" ", 1)[0] if text else "(unnamed)"


def _outcome(case: ET.Element) -> str:
    status = case.get("status", "")
    if (
        case.find("failure") is not None
        or case.find("error") is not None
        or status in ("failed", "panicked", "timedout", "aborted", "interrupted")
    ):
        return "failed"
    if case.find("skipped") is not None or status in ("skipped", "pending"):
        return "skipped"
    return "passed"


def _finished_at(started_at: str, duration: float) -> str:
    """End of the run: ginkgo stamps the suite's start (node-local time, UTC on criops hosts)."""
    try:
        start = datetime.fromisoformat(started_at).replace(tzinfo=UTC)
    except ValueError:
        return ""
    return (start + timedelta(seconds=duration)).strftime("%Y-%m-%dT%H:%M:%SZ")


def critest_summary(
    junit_xml: str,
    version: str = "unknown",
    handler: str = "default",
    failures_listed: int = 20,
    fetched_at: str = "",
) -> dict[str, Any]:
    """Counts overall and per group, the first failures, and the run's timing.

    ginkgo v1's report (critest v1.13) stamps no start time: the run then
    finished when the controller fetched the report (`fetched_at`).
    """
    root = ET.fromstring(junit_xml)
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    groups: dict[str, dict[str, int]] = {}
    failures: list[str] = []
    duration = 0.0
    started_at = ""
    for suite in suites:
        duration += float(suite.get("time", "0") or 0)
        started_at = started_at or suite.get("timestamp", "")
        for case in suite.findall("testcase"):
            name = case.get("name", "")
            outcome = _outcome(case)
            # Suite setup nodes are not specs, but a failing one is why specs did not run.
            if name.startswith(SUITE_NODES):
                if outcome == "failed":
                    failures.append(name)
                continue
            counts = groups.setdefault(spec_group(name), {"total": 0, "passed": 0, "failed": 0, "skipped": 0})
            counts["total"] += 1
            counts[outcome] += 1
            if outcome == "failed":
                failures.append(name.removeprefix("[It] "))
    totals = {key: sum(g[key] for g in groups.values()) for key in ("total", "passed", "failed", "skipped")}
    return {
        "version": version,
        "handler": handler,
        **totals,
        "durationSeconds": round(duration, 1),
        "finishedAt": _finished_at(started_at, duration) if started_at else fetched_at,
        "groups": [{"name": name, **counts} for name, counts in sorted(groups.items())],
        "failures": failures[:failures_listed],
        "failuresOmitted": max(0, len(failures) - failures_listed),
    }


def critest_table(summary: dict[str, Any]) -> str:
    """A Markdown table of the summary: one row per spec group, then overall."""
    rows = [(g["name"], g["total"], g["passed"], g["failed"], g["skipped"]) for g in summary["groups"]]
    rows.append(("**overall**", summary["total"], summary["passed"], summary["failed"], summary["skipped"]))
    width = max([len("Test Spec Group")] + [len(r[0]) for r in rows])
    lines = [
        f"critest {summary['version']}, handler {summary['handler']}: "
        f"{summary['passed']}/{summary['total'] - summary['skipped']} passed in {summary['durationSeconds']} s",
        f"| {'Test Spec Group'.ljust(width)} | Overall | Passed | Failed | Skipped |",
        f"| {'-' * width} | ------: | -----: | -----: | ------: |",
    ]
    lines += [f"| {r[0].ljust(width)} | {r[1]:7} | {r[2]:6} | {r[3]:6} | {r[4]:7} |" for r in rows]
    if summary["failures"]:
        lines.append("Failed specs:")
        lines += [f"- {name}" for name in summary["failures"]]
        if summary.get("failuresOmitted"):
            lines.append(f"- … and {summary['failuresOmitted']} more")
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"critest_summary": critest_summary, "critest_table": critest_table}
