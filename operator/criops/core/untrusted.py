"""Data from a RuntimeNode, made inert for Ansible.

ansible-core templates every trusted string it reads from an extra-vars file or
an inventory when the value is used, so a RuntimeNode field holding
`{{ lookup('pipe', ...) }}` would run a command on the controller. ansible-core's
JSON loaders turn `{"__ansible_unsafe": "<text>"}` into a string marked unsafe:
it is used as the literal text and never templated. Every string that leaves
the operator for Ansible is wrapped that way, at any depth.

Mapping keys cannot carry the mark, so keys that look like a template, or that
use ansible-core's own `__ansible*` markers, are refused instead (ansible-core
does not template keys today; criops does not rely on that).
"""

from __future__ import annotations

from typing import Any

UNSAFE_KEY = "__ansible_unsafe"
# The delimiters Jinja starts an expression, a statement or a comment with.
TEMPLATE_MARKERS = ("{{", "{%", "{#")


def looks_like_template(text: str) -> bool:
    return any(marker in text for marker in TEMPLATE_MARKERS)


def key_problem(key: str) -> str | None:
    """Why a mapping key cannot travel to Ansible as data, or None."""
    if looks_like_template(key):
        return f"keys may not hold template syntax ({' '.join(TEMPLATE_MARKERS)})"
    if key.startswith("__ansible"):
        # ansible-core's JSON loaders read these as instructions (unsafe, vault).
        return "keys starting with __ansible are ansible-core's own markers"
    return None


def refused_key(value: Any, path: str) -> tuple[str, str] | None:
    """(path, why) of the first mapping key at any depth of `value` that key_problem refuses, or None."""
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}"
            problem = key_problem(str(key))
            found = (where, problem) if problem else refused_key(item, where)
            if found:
                return found
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = refused_key(item, f"{path}[{index}]")
            if found:
                return found
    return None


def mark_unsafe(value: Any) -> Any:
    """`value` with every string wrapped in ansible-core's unsafe form; numbers, booleans and null as they are.

    A key that key_problem refuses raises ValueError: spec checks refuse those
    first, naming the field (refused_key).
    """
    if isinstance(value, str):
        return {UNSAFE_KEY: value}
    if isinstance(value, dict):
        marked = {}
        for key, item in value.items():
            problem = key_problem(str(key))
            if problem:
                raise ValueError(f"mapping key {key!r}: {problem}")
            marked[str(key)] = mark_unsafe(item)
        return marked
    if isinstance(value, list | tuple):
        return [mark_unsafe(item) for item in value]
    return value
