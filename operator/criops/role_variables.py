"""The variables each role declares in its argument specs: what spec.provision.extraVars may set.

Read once from the criops checkout the operator carries (Settings.project_dir),
the same files Ansible checks a run's variables against.
"""

from __future__ import annotations

from pathlib import Path

import yaml


def load(project_dir: Path) -> dict[str, frozenset[str]]:
    """Role name -> the option names of every entry point in roles/<role>/meta/argument_specs.yml."""
    found: dict[str, frozenset[str]] = {}
    for path in sorted(project_dir.glob("roles/*/meta/argument_specs.yml")):
        entry_points = (yaml.safe_load(path.read_text()) or {}).get("argument_specs") or {}
        names: set[str] = set()
        for entry_point in entry_points.values():
            names.update((entry_point or {}).get("options") or {})
        found[path.parents[1].name] = frozenset(names)
    return found
