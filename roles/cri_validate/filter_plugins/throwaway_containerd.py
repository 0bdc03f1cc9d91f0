"""The config of the throwaway containerd that validation runs smoke pods and
critest against on a live node: the node's own config, as containerd itself
merged it (`containerd config dump`: config.toml and its imports), with every
path, socket and port that would meet the node's containerd moved aside or off."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _quoted(key: str) -> str:
    # Other keys as JSON strings, which are TOML basic strings: none can break a header.
    return key if _BARE_KEY.match(key) else json.dumps(str(key))


def _value(value: Any) -> str:
    """A scalar or a list of scalars: JSON spells them as TOML does (strings, numbers, booleans, arrays)."""
    if isinstance(value, float) and value != value:
        raise ValueError("NaN has no TOML spelling containerd reads back")
    return json.dumps(value)


def toml_document(config: dict[str, Any]) -> str:
    """`config` as TOML: keys first, then sub-tables, lists of tables as arrays of tables."""
    out: list[str] = []

    def emit(table: dict[str, Any], path: list[str]) -> None:
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        arrays = {k: v for k, v in table.items() if isinstance(v, list) and v and all(isinstance(i, dict) for i in v)}
        for key, value in table.items():
            if key not in tables and key not in arrays:
                out.append(f"{_quoted(key)} = {_value(value)}")
        for key, value in tables.items():
            out.extend(["", f"[{'.'.join(_quoted(p) for p in [*path, key])}]"])
            emit(value, [*path, key])
        for key, items in arrays.items():
            for item in items:
                out.extend(["", f"[[{'.'.join(_quoted(p) for p in [*path, key])}]]"])
                emit(item, [*path, key])

    emit(config, [])
    return "\n".join(out).lstrip("\n") + "\n"


def _walk(table: Any) -> list[dict[str, Any]]:
    """Every table below `table`, itself included."""
    if isinstance(table, list):
        return [found for item in table for found in _walk(item)]
    if not isinstance(table, dict):
        return []
    return [table, *(found for value in table.values() for found in _walk(value))]


def throwaway_containerd_config(dump: str, root: str, state: str, address: str) -> str:
    """The throwaway instance's config.toml from `containerd config dump` of the node's config.

    Kept: runtime handlers, registry mirrors (certs.d), CNI, sandbox image, cgroup
    options — what is proven. Rewritten: root, state, the gRPC/ttrpc/debug sockets
    (under `state`), and anything else the two daemons would share or fight over.
    """
    config = tomllib.loads(dump)
    # The dump lists the files it merged; importing them again would put the node's paths back.
    config.pop("imports", None)
    config.update(root=root, state=state)
    config.setdefault("grpc", {}).update(address=address, tcp_address="")
    config["ttrpc"] = {**config.get("ttrpc", {}), "address": f"{address}.ttrpc"}
    debug = config.setdefault("debug", {})
    debug["address"] = f"{state}/debug.sock" if debug.get("address") else ""
    config["metrics"] = {**config.get("metrics", {}), "address": ""}
    # The node's containerd may move itself into a cgroup of its own; this one stays in its unit.
    config["cgroup"] = {**config.get("cgroup", {}), "path": ""}
    for table in _walk(config.get("plugins", {})):
        if "root_path" in table:
            table["root_path"] = ""  # a snapshotter's store: under this instance's root
        if "stream_server_port" in table:
            table["stream_server_port"] = "0"  # any free port, never the node's
        if "netns_mounts_under_state_dir" in table:
            table["netns_mounts_under_state_dir"] = True  # its pods' netns go with its state
        if "socket_path" in table and "disable" in table:
            table["disable"] = True  # NRI: one socket per node, the node's containerd owns it
    return toml_document(config)


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"throwaway_containerd_config": throwaway_containerd_config}
