"""hack/check-argument-specs.py (run by `make lint`): the roles agree with their
argument specs, and each kind of disagreement is caught on a copy of the roles
broken on purpose."""

from __future__ import annotations

import copy
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]

_spec = importlib.util.spec_from_file_location("check_argument_specs", ROOT / "hack" / "check-argument-specs.py")
assert _spec is not None and _spec.loader is not None
check_argument_specs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check_argument_specs)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of what the check reads: roles, and the playbooks and molecule scenarios that include them."""
    for folder in ("roles", "playbooks", "molecule"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def _edit_yaml(path: Path, change: Callable[[Any], None]) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def _specs(tree: Path, role: str) -> Path:
    return tree / "roles" / role / "meta" / "argument_specs.yml"


def _options(data: Any, entry: str = "main") -> dict[str, Any]:
    return data["argument_specs"][entry]["options"]


def test_the_roles_agree_with_their_argument_specs() -> None:
    assert check_argument_specs.check(ROOT) == []


def test_an_unchanged_copy_passes(tree: Path) -> None:
    assert check_argument_specs.check(tree) == []


def _wrong_type(tree: Path) -> None:
    _edit_yaml(_specs(tree, "containerd"), lambda d: _options(d)["containerd_limit_nofile"].update(type="int"))


def _default_without_option(tree: Path) -> None:
    _edit_yaml(_specs(tree, "containerd"), lambda d: _options(d).pop("containerd_sandbox_image"))


def _spec_default_disagrees(tree: Path) -> None:
    _edit_yaml(_specs(tree, "kata"), lambda d: _options(d)["kata_host_check"].update(default=False))


def _default_outside_choices(tree: Path) -> None:
    _edit_yaml(
        _specs(tree, "containerd"), lambda d: _options(d)["containerd_runtime_handlers"].update(choices=["runc"])
    )


def _option_without_default(tree: Path) -> None:
    _edit_yaml(
        _specs(tree, "cni_plugins"),
        lambda d: _options(d).update(cni_plugins_mtu={"type": "int", "description": "MTU of the bridge."}),
    )


def _entry_point_without_spec(tree: Path) -> None:
    _edit_yaml(_specs(tree, "cni_plugins"), lambda d: d["argument_specs"].pop("reset"))


def _default_missing_a_required_suboption(tree: Path) -> None:
    defaults = tree / "roles" / "node_prereqs" / "defaults" / "main.yml"
    _edit_yaml(defaults, lambda d: d["node_prereqs_kernel_modules"][0].pop("proof"))


def _computed_fact_like_an_input(tree: Path) -> None:
    tasks = tree / "roles" / "kata" / "tasks" / "host-check.yml"
    text = tasks.read_text()
    assert "register: _kata_check_dir" in text
    tasks.write_text(text.replace("register: _kata_check_dir", "register: kata_check_dir"))


def _apart_from_main(entry: str) -> Callable[[Path], None]:
    def breakage(tree: Path) -> None:
        def change(data: Any) -> None:
            spec = data["argument_specs"][entry] = copy.deepcopy(data["argument_specs"][entry])
            spec["options"]["containerd_limit_nofile"]["description"] += " Checked differently."

        _edit_yaml(_specs(tree, "containerd"), change)

    return breakage


BREAKAGES: dict[str, tuple[Callable[[Path], None], str]] = {
    "wrong-type": (
        _wrong_type,
        "roles/containerd/meta/argument_specs.yml: main.containerd_limit_nofile: default 'infinity' is not of type int",
    ),
    "default-without-option": (
        _default_without_option,
        "roles/containerd/meta/argument_specs.yml: preflight: defaults/main.yml has containerd_sandbox_image, "
        "the spec does not",
    ),
    "spec-default-disagrees": (
        _spec_default_disagrees,
        "roles/kata/meta/argument_specs.yml: reset.kata_host_check: spec default False != defaults/main.yml True",
    ),
    "default-outside-choices": (
        _default_outside_choices,
        "main.containerd_runtime_handlers[1]: 'crun' is not one of the choices ['runc']",
    ),
    "option-without-default": (
        _option_without_default,
        "main.cni_plugins_mtu: no value in defaults/main.yml: make it required: true",
    ),
    "entry-point-without-spec": (
        _entry_point_without_spec,
        "roles/cni_plugins/meta/argument_specs.yml: no spec for the entry point 'reset' (tasks_from: reset)",
    ),
    "default-missing-a-required-suboption": (
        _default_missing_a_required_suboption,
        "main.node_prereqs_kernel_modules[0]: required sub-option 'proof' is missing",
    ),
    "preflight-apart-from-main": (
        _apart_from_main("preflight"),
        "roles/containerd/meta/argument_specs.yml: preflight does not take exactly the options of main",
    ),
    "apply-apart-from-main": (
        _apart_from_main("apply"),
        "roles/containerd/meta/argument_specs.yml: apply does not take exactly the options of main",
    ),
    "computed-fact-like-an-input": (
        _computed_fact_like_an_input,
        "roles/kata/tasks/host-check.yml: kata_check_dir is set by the role but is not one of its options",
    ),
}


@pytest.mark.parametrize("case", list(BREAKAGES))
def test_a_broken_spec_is_caught(tree: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    breakage, expected = BREAKAGES[case]
    breakage(tree)
    problems = check_argument_specs.check(tree)
    assert any(expected in problem for problem in problems), problems
    # make lint fails on it, naming the problem.
    assert check_argument_specs.main(["check-argument-specs.py", str(tree)]) == 1
    assert expected in capsys.readouterr().out
