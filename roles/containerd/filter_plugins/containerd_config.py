"""Filters that let the containerd role rewrite config.toml without losing what
other tools put there."""

from __future__ import annotations

import json
import tomllib
from typing import Any

CRI_PLUGIN = "io.containerd.grpc.v1.cri"


def containerd_foreign_runtimes(config_text: str, managed: list[str]) -> dict[str, Any]:
    """Runtimes in an existing config.toml that criops does not manage.

    An unreadable or absent file has none; the template's validate step is what
    guards the file criops writes.
    """
    if not config_text.strip():
        return {}
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError:
        return {}
    runtimes = config.get("plugins", {}).get(CRI_PLUGIN, {}).get("containerd", {}).get("runtimes", {})
    return {name: spec for name, spec in runtimes.items() if name not in managed}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else json.dumps(key)


def to_toml_tables(table: dict[str, Any], prefix: str, indent: str = "") -> str:
    """Render a nested dict as TOML tables under the dotted table name `prefix`."""
    lines = [f"{indent}[{prefix}]"]
    nested = []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append((key, value))
        else:
            lines.append(f"{indent}  {_toml_key(key)} = {_toml_value(value)}")
    for key, value in nested:
        lines.append(to_toml_tables(value, f"{prefix}.{_toml_key(key)}", indent + "  "))
    return "\n".join(lines)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "containerd_foreign_runtimes": containerd_foreign_runtimes,
            "to_toml_tables": to_toml_tables,
        }
