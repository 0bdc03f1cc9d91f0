"""The guest side of hack/vm-images.sh: the scripts that run inside virtlet's VMs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

GUEST = Path(__file__).resolve().parents[2] / "hack" / "vm-images"
# They run under busybox's ash in the guest; dash checks the same POSIX syntax.
SHELLS = [["busybox", "sh"]] if shutil.which("busybox") else []
SHELLS.append(["sh"])


@pytest.mark.parametrize("script", ["init", "udhcpc.script"])
@pytest.mark.parametrize("shell", SHELLS, ids=lambda s: s[0])
def test_the_guest_scripts_parse(script: str, shell: list[str]):
    result = subprocess.run([*shell, "-n", str(GUEST / script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_init_runs_under_busybox_and_never_returns():
    lines = (GUEST / "init").read_text().splitlines()
    assert lines[0] == "#!/bin/busybox sh"
    # The kernel panics when PID 1 exits.
    assert lines[-1].startswith("while :; do sleep")
