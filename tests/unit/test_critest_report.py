"""The critest report filters, on real JUnit reports of critest v1.37.0 (ginkgo v2) and v1.13.0 (ginkgo v1)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from testworld.filter_plugins import critest_report as report

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests/fixtures/critest"


REAL = (FIXTURES / "containerd-1.6-debian12-runc.xml").read_text()


def _junit_counts(xml: str) -> dict[str, int]:
    cases = [c for c in ET.fromstring(xml).iter("testcase") if c.get("name", "").startswith("[It] ")]
    return {
        "total": len(cases),
        "failed": sum(1 for c in cases if c.find("failure") is not None),
        "skipped": sum(1 for c in cases if c.find("skipped") is not None),
    }


def test_totals_equal_the_junit_counts():
    summary = report.critest_summary(REAL, version="v1.37.0", handler="runc")
    counts = _junit_counts(REAL)
    assert summary["total"] == counts["total"] == 142
    assert summary["failed"] == counts["failed"]
    assert summary["skipped"] == counts["skipped"]
    assert summary["passed"] == counts["total"] - counts["failed"] - counts["skipped"]
    assert summary["durationSeconds"] == pytest.approx(112.9, abs=0.1)
    # The suite started at 00:49:51 and ran 112.9 s.
    assert summary["finishedAt"] == "2026-11-26T00:51:43Z"


def test_groups_add_up_to_the_totals():
    summary = report.critest_summary(REAL)
    for key in ("total", "passed", "failed", "skipped"):
        assert sum(g[key] for g in summary["groups"]) == summary[key]
    names = {g["name"] for g in summary["groups"]}
    # The groups critest declares, not fragments of spec names.
    assert {"Container", "Image Manager", "Networking", "PodSandbox", "Runtime info", "Security Context"} <= names
    assert names <= set(report.SPEC_GROUPS)


def test_failures_are_listed_up_to_the_limit():
    summary = report.critest_summary(REAL, failures_listed=3)
    assert len(summary["failures"]) == 3
    assert summary["failuresOmitted"] == summary["failed"] - 3
    assert all(not name.startswith("[It]") for name in summary["failures"])


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("[It] [k8s.io] Image Manager public image with tag should be pulled", "Image Manager"),
        ("[It] [k8s.io] Image Identifier Consistency should return", "Image Identifier Consistency"),
        ("[It] [k8s.io] Image basic", "Image"),
        ("[It] [k8s.io] Container Mount Propagation mount with 'rprivate'", "Container Mount Propagation"),
        ("[It] [k8s.io] Multiple Containers [Conformance] when running", "Multiple Containers"),
        ("[It] [k8s.io] Frobnicator new group in a later critest", "Frobnicator"),
    ],
)
def test_spec_group_matches_the_longest_declared_group(name, group):
    assert report.spec_group(name) == group


def test_a_failing_suite_setup_is_reported_but_not_counted_as_a_spec():
    xml = """<testsuites><testsuite name="CRI validation" time="1.5" timestamp="2026-11-26T00:00:00">
      <testcase name="[BeforeSuite]" status="failed"><failure message="no CRI socket"/></testcase>
      <testcase name="[It] [k8s.io] Runtime info runtime should support returning runtime info" status="skipped">
        <skipped/></testcase>
    </testsuite></testsuites>"""
    summary = report.critest_summary(xml)
    assert summary["total"] == 1
    assert summary["skipped"] == 1
    assert summary["failures"] == ["[BeforeSuite]"]


def test_a_critest_v1_13_report_is_summarised_like_the_others():
    # sycri through critest v1.13: ginkgo v1 names specs without "[It]" and stamps no start time.
    xml = (FIXTURES / "singularity-cri-1.0.0-beta.7-debian12-critest-v1.13.xml").read_text()
    summary = report.critest_summary(xml, version="v1.13.0", fetched_at="2026-11-26T20:44:57Z")
    assert (summary["total"], summary["passed"], summary["failed"], summary["skipped"]) == (72, 64, 2, 6)
    assert summary["finishedAt"] == "2026-11-26T20:44:57Z"
    assert summary["failures"] == [
        "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]",
        "[k8s.io] Image Manager listImage should get exactly 3 repoTags in the result image [Conformance]",
    ]
    groups = {group["name"]: group["total"] for group in summary["groups"]}
    assert groups["Security Context"] == 29 and groups["Image Manager"] == 6
    assert sum(groups.values()) == 72


def test_table_has_a_row_per_group_and_the_overall_row():
    summary = report.critest_summary(REAL, version="v1.37.0", handler="crun")
    table = report.critest_table(summary).splitlines()
    assert table[0].startswith("critest v1.37.0, handler crun: 80/95 passed")
    rows = [line for line in table if line.startswith("| ")]
    assert len(rows) == 1 + len(summary["groups"]) + 1 + 1  # header, groups, overall (+ separator)
    assert rows[-1].split("|")[1].strip() == "**overall**"
    assert [int(x) for x in rows[-1].split("|")[2:6]] == [142, 80, 15, 47]
