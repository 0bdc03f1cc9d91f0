"""Filters that let the containerd role rewrite config.toml without losing what
other tools put there."""

from __future__ import annotations

import json
import tomllib
from typing import Any

CRI_PLUGIN = "io.containerd.grpc.v1.cri"


class UnusableConfig(ValueError):
    """config.toml text that criops cannot build on without losing what is in it."""


def parse_config(config_text: str, source: str, consequence: str) -> dict[str, Any]:
    """config.toml's text as a dict; text that is not TOML is refused, naming `source` and why it matters."""
    try:
        return tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as error:
        raise UnusableConfig(f"{source} is not valid TOML ({error}): {consequence}") from None


def cri_runtimes(config: dict[str, Any]) -> dict[str, Any]:
    """The runtime handlers of the CRI plugin section of a parsed config.toml."""
    table: Any = config
    for key in ("plugins", CRI_PLUGIN, "containerd", "runtimes"):
        table = table.get(key, {}) if isinstance(table, dict) else {}
    return table if isinstance(table, dict) else {}


def containerd_foreign_runtimes(config_text: str, managed: list[str], source: str = "config.toml") -> dict[str, Any]:
    """Runtimes in an existing config.toml that criops does not manage.

    An absent or empty file has none. A file that is not TOML is refused: read
    as "none", the rewrite would drop what other tools added without a word.
    """
    if not config_text.strip():
        return {}
    config = parse_config(
        config_text,
        source,
        "criops rewrites this file and would drop the runtimes other tools added to it; fix it and run again",
    )
    return {name: spec for name, spec in cri_runtimes(config).items() if name not in managed}


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
