"""Data from a RuntimeNode reaches Ansible marked unsafe, at every depth."""

from __future__ import annotations

import pytest
from criops.core.untrusted import mark_unsafe, refused_key

HOSTILE = "{{ lookup('pipe', 'id') }}"


def test_every_string_at_every_depth_is_marked_and_nothing_else_changes():
    value = {"a": HOSTILE, "b": [HOSTILE, {"c": HOSTILE}], "n": 3, "t": True, "z": None, "tuple": ("x",)}
    assert mark_unsafe(value) == {
        "a": {"__ansible_unsafe": HOSTILE},
        "b": [{"__ansible_unsafe": HOSTILE}, {"c": {"__ansible_unsafe": HOSTILE}}],
        "n": 3,
        "t": True,
        "z": None,
        "tuple": [{"__ansible_unsafe": "x"}],
    }


@pytest.mark.parametrize("key", ["{{ x }}", "a{%b", "{# c #}", "__ansible_unsafe", "__ansible_vault"])
def test_keys_that_cannot_be_marked_are_refused_with_their_path(key):
    value = {"outer": [{"fine": 1}, {key: "v"}]}
    path, why = refused_key(value, "provision.extraVars")
    assert path == f"provision.extraVars.outer[1].{key}"
    assert why.startswith("keys ")
    with pytest.raises(ValueError, match="mapping key"):
        mark_unsafe(value)


def test_plain_keys_pass():
    assert refused_key({"docker.io": [{"host": "http://mirror"}]}, "p") is None
