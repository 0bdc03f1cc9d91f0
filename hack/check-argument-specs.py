#!/usr/bin/env python3
"""Check every role's meta/argument_specs.yml against the role (run by `make lint`).

A role's argument specs are what Ansible checks a run's variables against, and
what the operator lets spec.provision.extraVars set; defaults/main.yml is what
a variable is when nobody sets it. The two must tell the same story:

- entry points: `main` when tasks/main.yml exists, and every `tasks_from:` that
  playbooks/, roles/ or molecule/ include the role with, has a spec; every spec
  has its tasks file.
- every variable of defaults/main.yml is an option of every entry point (the
  entry points share the defaults, and Ansible checks a variable only where the
  entry point's spec lists it).
- the entry points `preflight` and `apply` take exactly the options of `main`
  (`<name>_preflight` and `<name>_apply` those of `<name>`), spec for spec:
  site.yml validates the preflight's, then runs `apply` without validating.
- every option has a type and a description; one with a value in
  defaults/main.yml agrees with it: the value is of the option's type (and its
  elements' and sub-options'), within its choices, and equal to the spec's
  `default:` if the spec names one (Ansible never sets a variable from it).
  A templated value ("{{ ... }}") is only known at run time and not checked.
- an option without a value in defaults/main.yml is `required: true`, or its
  description starts with "Optional" and says what leaving it unset means.
- every name a role sets itself (register, set_fact, vars:, loop_var,
  vars/main.yml) is one of its options or starts with `_<role>_`, so a computed
  fact never looks like an input; include_role vars: may set the options of the
  role they include.

Usage: hack/check-argument-specs.py [ROOT]   (ROOT: the repository, default: this script's)
Exit status 1 and one line per problem when something disagrees.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

# Option types whose values YAML gives as these Python types.
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "path": (str,),
    "bytes": (str, int),
    "bits": (str, int),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "list": (list,),
    "dict": (dict,),
    "jsonarg": (str, list, dict),
    "json": (str, list, dict),
}
_INCLUDE_ROLE = ("include_role", "import_role", "ansible.builtin.include_role", "ansible.builtin.import_role")
_SET_FACT = ("set_fact", "ansible.builtin.set_fact")
# A safe loader: libyaml's when PyYAML has it.
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _load(path: Path) -> Any:
    return yaml.load(path.read_text(), Loader=_LOADER) if path.is_file() else None


def _templated(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _tasks(data: Any) -> Iterator[dict[str, Any]]:
    """Every task and block of a tasks file or playbook, nested ones included."""
    if not isinstance(data, list):
        return
    for item in data:
        if not isinstance(item, dict):
            continue
        yield item
        for key in ("block", "rescue", "always", "tasks", "pre_tasks", "post_tasks", "handlers"):
            yield from _tasks(item.get(key))


def _yaml_files(root: Path, *folders: str) -> Iterator[Path]:
    for folder in folders:
        for pattern in ("*.yml", "*.yaml"):
            yield from sorted((root / folder).rglob(pattern))


def _type_problems(where: str, spec: dict[str, Any], value: Any) -> list[str]:
    """Why `value` (a defaults/main.yml value) does not fit the option `spec`."""
    if _templated(value):
        return []
    kind = spec.get("type", "str")
    if kind == "raw" or value is None:
        return []
    expected = _TYPES.get(kind)
    if expected is None:
        return [f"{where}: unknown type {kind!r}"]
    # YAML's true/false are ints to Python: a bool is no int here.
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        return [f"{where}: default {value!r} is not of type {kind}"]
    problems: list[str] = []
    choices = spec.get("choices")
    if kind == "list":
        element = {"type": spec.get("elements", "raw"), "options": spec.get("options")}
        for index, item in enumerate(value):
            problems += _type_problems(f"{where}[{index}]", element, item)
            if choices is not None and not _templated(item) and item not in choices:
                problems.append(f"{where}[{index}]: {item!r} is not one of the choices {choices}")
        return problems
    if choices is not None and value not in choices:
        problems.append(f"{where}: default {value!r} is not one of the choices {choices}")
    suboptions = spec.get("options")
    if kind == "dict" and suboptions:
        for key in value:
            if key not in suboptions:
                problems.append(f"{where}: key {key!r} is not among the sub-options {sorted(suboptions)}")
        for name, sub in suboptions.items():
            if name in value:
                problems += _type_problems(f"{where}.{name}", sub or {}, value[name])
            elif (sub or {}).get("required"):
                problems.append(f"{where}: required sub-option {name!r} is missing")
    return problems


def _option_problems(where: str, name: str, spec: Any, defaults: dict[str, Any]) -> list[str]:
    if not isinstance(spec, dict):
        return [f"{where}: not a mapping"]
    problems = []
    if "type" not in spec:
        problems.append(f"{where}: no type")
    if not spec.get("description"):
        problems.append(f"{where}: no description")
    if name in defaults:
        value = defaults[name]
        if spec.get("required"):
            problems.append(f"{where}: required, but defaults/main.yml gives it {value!r}")
        if "default" in spec and spec["default"] != value:
            problems.append(f"{where}: spec default {spec['default']!r} != defaults/main.yml {value!r}")
        problems += _type_problems(where, spec, value)
    elif not spec.get("required"):
        if "default" in spec:
            problems.append(
                f"{where}: spec default {spec['default']!r} but no value in defaults/main.yml "
                "(Ansible does not set variables from argument specs)"
            )
        description = spec.get("description") or ""
        text = " ".join(description) if isinstance(description, list) else str(description)
        if not text.startswith("Optional"):
            problems.append(
                f"{where}: no value in defaults/main.yml: make it required: true, "
                "or start its description with 'Optional' and say what unset means"
            )
    return problems


def _tasks_from(root: Path) -> dict[str, set[str]]:
    """Role -> the tasks files playbooks/, roles/ and molecule/ include it with."""
    found: dict[str, set[str]] = {}
    for path in _yaml_files(root, "playbooks", "roles", "molecule"):
        data = _load(path)
        for play in data if isinstance(data, list) else []:
            for task in _tasks([play]):
                for key in _INCLUDE_ROLE:
                    args = task.get(key)
                    if isinstance(args, dict) and isinstance(args.get("name"), str):
                        found.setdefault(args["name"], set()).add(str(args.get("tasks_from", "main")))
    return found


def _names_set(role_dir: Path) -> Iterator[tuple[str, str, str | None]]:
    """(file, name, the role an include_role vars: name is for) of every name the role sets."""
    for path in sorted(role_dir.glob("tasks/*.yml")) + sorted(role_dir.glob("handlers/*.yml")):
        where = str(path.relative_to(role_dir.parent))
        for task in _tasks(_load(path)):
            included = next((task[key] for key in _INCLUDE_ROLE if isinstance(task.get(key), dict)), None)
            for_role = included.get("name") if included else None
            registered = task.get("register")
            if isinstance(registered, str):
                yield where, registered, None
            for key in _SET_FACT:
                if isinstance(task.get(key), dict):
                    yield from ((where, name, None) for name in task[key] if name != "cacheable")
            for name in task.get("vars") or {}:
                yield where, name, for_role
            loop_var = (task.get("loop_control") or {}).get("loop_var")
            if loop_var:
                yield where, loop_var, None
    for name in _load(role_dir / "vars" / "main.yml") or {}:
        yield str((role_dir / "vars" / "main.yml").relative_to(role_dir.parent)), name, None


def _options(specs: dict[str, Any]) -> set[str]:
    return {name for entry in specs.values() for name in ((entry or {}).get("options") or {})}


def check(root: Path) -> list[str]:
    """Every disagreement between the roles under `root` and their argument specs."""
    problems: list[str] = []
    included = _tasks_from(root)
    role_dirs = sorted(path for path in (root / "roles").iterdir() if (path / "tasks").is_dir())
    role_options: dict[str, set[str]] = {}
    for role_dir in role_dirs:
        specs = (_load(role_dir / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}
        role_options[role_dir.name] = _options(specs)
    for role_dir in role_dirs:
        role = role_dir.name
        spec_file = f"roles/{role}/meta/argument_specs.yml"
        specs = (_load(role_dir / "meta" / "argument_specs.yml") or {}).get("argument_specs") or {}
        defaults = _load(role_dir / "defaults" / "main.yml") or {}
        if not specs:
            problems.append(f"{spec_file}: missing or without argument_specs")
            continue
        entry_points = set(included.get(role, set()))
        if (role_dir / "tasks" / "main.yml").is_file():
            entry_points.add("main")
        for entry in sorted(entry_points - specs.keys()):
            problems.append(f"{spec_file}: no spec for the entry point {entry!r} (tasks_from: {entry})")
        for entry in sorted(specs):
            if not (role_dir / "tasks" / f"{entry}.yml").is_file():
                problems.append(f"{spec_file}: entry point {entry!r} has no tasks/{entry}.yml")
            options = (specs[entry] or {}).get("options") or {}
            for name in sorted(defaults.keys() - options.keys()):
                problems.append(f"{spec_file}: {entry}: defaults/main.yml has {name}, the spec does not")
            for name, spec in options.items():
                problems += _option_problems(f"{spec_file}: {entry}.{name}", name, spec, defaults)
        for entry in sorted(specs):
            stage = next((stage for stage in ("preflight", "apply") if entry.endswith(stage)), None)
            whole = "main" if entry == stage else entry.removesuffix(f"_{stage}")
            options = (specs[entry] or {}).get("options")
            if stage and whole in specs and options != (specs[whole] or {}).get("options"):
                problems.append(f"{spec_file}: {entry} does not take exactly the options of {whole}")
        prefix = f"_{role}_"
        for where, name, for_role in _names_set(role_dir):
            if name.startswith(prefix) or name in role_options[role]:
                continue
            if for_role is not None and name in role_options.get(for_role, set()):
                continue
            problems.append(
                f"roles/{where}: {name} is set by the role but is not one of its options: name it {prefix}..."
            )
    # The same option listed twice by the anchors of one file is one problem.
    return list(dict.fromkeys(problems))


def main(argv: list[str]) -> int:
    root = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1]
    problems = check(root)
    for problem in problems:
        print(problem)
    if problems:
        print(f"{len(problems)} problem(s) in the roles' argument specs", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
