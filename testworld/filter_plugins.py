"""The roles' filter plugins as Python modules, for unit tests.

Filter plugins live in the roles that use them and are not importable
packages; tests load them by path.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(role: str, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "roles" / role / "filter_plugins" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


critest_report = load("cri_validate", "critest_report")
containerd_config = load("containerd", "containerd_config")
kata_dropin = load("kata", "kata_dropin")
cri_pods = load("cri_tools", "cri_pods")
throwaway_containerd = load("cri_validate", "throwaway_containerd")
