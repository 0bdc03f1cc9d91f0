"""Shared by the unit and integration suites: the machine's home directory is left as found."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from testworld.control_plane import keep_tool_state_in_cache

# Where a tool run by the tests would leave state of its own outside the work dirs.
HOME_DIRS = (Path.home(), Path.home() / ".cache", Path.home() / ".config")


def pytest_configure(config: pytest.Config) -> None:
    keep_tool_state_in_cache()


def home_entries() -> set[str]:
    return {str(entry) for directory in HOME_DIRS if directory.is_dir() for entry in directory.iterdir()}


@pytest.fixture(scope="session", autouse=True)
def home_left_as_found() -> Iterator[None]:
    """The machine is left as found, its home directory included: nothing the tests run
    (Ansible, molecule, kubectl, podman, the builds) adds to it."""
    before = home_entries()
    yield
    added = sorted(home_entries() - before)
    assert not added, f"the tests left new entries in the home directory: {added}"
