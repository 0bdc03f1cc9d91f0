"""criops' marks on a Node: set what is ours, never touch what is not."""

from __future__ import annotations

import json

import pytest
from criops.core import node_labels as nl

OWNED = {nl.OWNED_ANNOTATION: json.dumps([nl.LABEL_RUNTIME, nl.LABEL_VALIDATED, "team"])}


def test_a_proven_node_gets_runtime_validated_and_extra_labels():
    desired = nl.desired_labels("containerd", True, {"team": "infra"})
    patch, conflicts = nl.label_patch({"kubernetes.io/hostname": "n1"}, {}, desired)
    assert conflicts == []
    assert patch["labels"] == {nl.LABEL_RUNTIME: "containerd", nl.LABEL_VALIDATED: "true", "team": "infra"}
    assert json.loads(patch["annotations"][nl.OWNED_ANNOTATION]) == [nl.LABEL_RUNTIME, nl.LABEL_VALIDATED, "team"]


def test_an_unproven_node_loses_its_extra_labels_and_says_false():
    current = {nl.LABEL_RUNTIME: "containerd", nl.LABEL_VALIDATED: "true", "team": "infra", "zone": "a"}
    patch, _ = nl.label_patch(current, OWNED, nl.desired_labels("containerd", False, {"team": "infra"}))
    assert patch["labels"] == {nl.LABEL_VALIDATED: "false", "team": None}
    assert json.loads(patch["annotations"][nl.OWNED_ANNOTATION]) == [nl.LABEL_RUNTIME, nl.LABEL_VALIDATED]


def test_nothing_to_patch_when_the_node_is_already_right():
    current = {nl.LABEL_RUNTIME: "containerd", nl.LABEL_VALIDATED: "true", "team": "infra"}
    patch, conflicts = nl.label_patch(current, OWNED, nl.desired_labels("containerd", True, {"team": "infra"}))
    assert patch == {}
    assert conflicts == []


def test_a_label_someone_else_set_is_never_overwritten():
    current = {"team": "storage"}
    patch, conflicts = nl.label_patch(current, {}, nl.desired_labels("containerd", True, {"team": "infra"}))
    assert conflicts == ["team"]
    assert "team" not in patch["labels"]
    assert "team" not in json.loads(patch["annotations"][nl.OWNED_ANNOTATION])


def test_cleanup_removes_exactly_the_owned_labels_and_the_record():
    current = {nl.LABEL_RUNTIME: "kata", nl.LABEL_VALIDATED: "true", "team": "infra", "zone": "a"}
    patch = nl.cleanup_patch(current, OWNED)
    assert patch == {
        "labels": {nl.LABEL_RUNTIME: None, nl.LABEL_VALIDATED: None, "team": None},
        "annotations": {nl.OWNED_ANNOTATION: None},
    }


def test_cleanup_of_a_node_criops_never_touched_is_empty():
    assert nl.cleanup_patch({"zone": "a"}, {}) == {}


@pytest.mark.parametrize(
    "record",
    [
        pytest.param("not json", id="not-json"),
        pytest.param("", id="empty"),
        pytest.param('"team"', id="a-string"),
        pytest.param('{"team": "infra"}', id="an-object"),
        pytest.param('["team", 7]', id="not-all-strings"),
    ],
)
def test_a_corrupt_ownership_record_is_reported_not_read_as_owning_nothing(record):
    annotations = {nl.OWNED_ANNOTATION: record}
    with pytest.raises(nl.CorruptOwnership, match=f"^annotation {nl.OWNED_ANNOTATION} is not a JSON list"):
        nl.owned_labels(annotations)
    # Neither patch may guess: "owns nothing" would leave validated=true on the Node for good.
    current = {nl.LABEL_RUNTIME: "containerd", nl.LABEL_VALIDATED: "true", "team": "infra"}
    with pytest.raises(nl.CorruptOwnership):
        nl.label_patch(current, annotations, nl.desired_labels("containerd", False, {"team": "infra"}))
    with pytest.raises(nl.CorruptOwnership):
        nl.cleanup_patch(current, annotations)


def test_without_a_readable_record_only_criops_own_labels_follow_the_verdict():
    current = {nl.LABEL_RUNTIME: "containerd", nl.LABEL_VALIDATED: "true", "team": "infra", "zone": "a"}
    withdrawn = nl.desired_labels("containerd", False, {"team": "infra"})
    assert nl.criops_label_patch(current, withdrawn) == {"labels": {nl.LABEL_VALIDATED: "false"}}
    proven = nl.desired_labels("kata", True, {"team": "storage", "new": "x"})
    assert nl.criops_label_patch(current, proven) == {"labels": {nl.LABEL_RUNTIME: "kata"}}
    assert nl.criops_label_patch(current, {nl.LABEL_RUNTIME: None, nl.LABEL_VALIDATED: None}) == {
        "labels": {nl.LABEL_RUNTIME: None, nl.LABEL_VALIDATED: None}
    }
    assert nl.criops_label_patch({"zone": "a"}, {nl.LABEL_RUNTIME: None, nl.LABEL_VALIDATED: None}) == {}


def test_taint_is_added_once_and_removed_without_touching_others():
    other = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    added = nl.taints([other], wanted=True)
    assert added == [other, {"key": nl.TAINT_KEY, "value": "true", "effect": "NoSchedule"}]
    assert nl.taints(added, wanted=True) is None
    assert nl.taints(added, wanted=False) == [other]
    assert nl.taints([other], wanted=False) is None


def test_node_condition_reports_the_verdict():
    cond = nl.node_condition(False, "ProbeFailed", "CRI Status: RuntimeReady false", "2026-11-26T00:00:00Z")
    assert cond["type"] == "CRIRuntimeValidated"
    assert cond["status"] == "False"
    assert cond["reason"] == "ProbeFailed"
