"""The air-gapped path: containerd from a release-shaped tarball on the site's own
HTTP mirror, verified by sha256, installed on a fresh node by site.yml.

The tarball is hack/containerd-tarball.sh's (Debian's containerd binaries in
upstream's layout); runc still comes from the Debian runc package. Then drift:
what a hand edits, removes or stops is put right by the next run. Last,
reset.yml: refused while a pod sandbox runs (the node untouched), predicted in check
mode (the node untouched), then forced, then again with nothing left to do.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from testworld.control_plane import versions
from testworld.hosts import (
    ArtifactServer,
    Node,
    Tarball,
    assert_run_changes_nothing,
    member_sha256,
    node_state,
    play_recap,
    run_playbook,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tarball_vars(containerd_tarball: Tarball, artifact_server: ArtifactServer) -> dict:
    return {
        "containerd_install_method": "tarball",
        "containerd_tarball_url": artifact_server.url(containerd_tarball.path),
        "containerd_tarball_sha256": containerd_tarball.sha256,
    }


@pytest.fixture(scope="module")
def first_run(inventory: Path, tarball_vars: dict) -> subprocess.CompletedProcess[str]:
    return run_playbook(inventory, "playbooks/site.yml", tarball_vars)


def test_site_installs_containerd_from_the_tarball(
    first_run: subprocess.CompletedProcess[str], test_host: Node
) -> None:
    assert first_run.returncode == 0, first_run.stdout[-6000:]
    assert play_recap(first_run.stdout)[test_host.name]["failed"] == 0


def test_containerd_runs_the_tarball_binaries(
    first_run: subprocess.CompletedProcess[str], test_host: Node, containerd_tarball: Tarball
) -> None:
    assert first_run.returncode == 0
    exec_start = test_host.sh("systemctl show -p ExecStart containerd").stdout
    assert "path=/usr/local/bin/containerd " in exec_start, exec_start
    running = test_host.sh('readlink "/proc/$(systemctl show -p MainPID --value containerd)/exe"').stdout.strip()
    assert running == "/usr/local/bin/containerd"
    # The very files of the tarball, not some other containerd.
    installed = test_host.sh("sha256sum /usr/local/bin/containerd /usr/local/bin/containerd-shim-runc-v2").stdout
    for binary in ("containerd", "containerd-shim-runc-v2"):
        assert f"{member_sha256(containerd_tarball.path, 'bin/' + binary)}  /usr/local/bin/{binary}" in installed
    # No distribution containerd underneath; runc comes from Debian's runc package.
    packages = test_host.sh("dpkg-query -W -f='${Package} ${db:Status-Abbrev}\\n' containerd runc", check=False).stdout
    assert "runc ii" in packages, packages
    assert "containerd ii" not in packages, packages


def test_crictl_talks_to_the_tarball_containerd(first_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert first_run.returncode == 0
    info = json.loads(test_host.sh("crictl info").stdout)
    runtimes = info["config"]["containerd"]["runtimes"]
    assert {"runc", "crun"} <= set(runtimes), sorted(runtimes)
    assert all(condition["status"] for condition in info["status"]["conditions"]), info["status"]
    version = test_host.sh("crictl version").stdout
    assert "RuntimeName:  containerd" in version, version


def test_second_run_changes_nothing(
    first_run: subprocess.CompletedProcess[str], inventory: Path, tarball_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    assert_run_changes_nothing(inventory, test_host, tarball_vars)


def changed_tasks(output: str) -> list[str]:
    """The names of the tasks (and handlers) that reported a change, in order."""
    names, current = [], ""
    for line in output.splitlines():
        if line.startswith(("TASK [", "RUNNING HANDLER [")):
            current = line.split("[", 1)[1].rsplit("]", 1)[0]
        elif line.startswith("changed:") and current not in names:
            names.append(current)
    return names


def test_drift_is_found_and_repaired_by_the_next_run(
    first_run: subprocess.CompletedProcess[str], inventory: Path, tarball_vars: dict, test_host: Node
) -> None:
    """A no-change run still looks at the node: hand edits, a removed mirror, a changed sysctl
    and a stopped containerd are each put right by the next site.yml (a mirror without
    restarting containerd), then nothing changes."""
    assert first_run.returncode == 0
    config = "/etc/containerd/config.toml"
    written = test_host.sh(f"cat {config} /etc/containerd/certs.d/gcr.io/hosts.toml").stdout
    test_host.sh(
        f"echo '[debug]' >>{config} && echo '  level = \"debug\"' >>{config}"
        " && rm /etc/containerd/certs.d/gcr.io/hosts.toml && sysctl -qw net.ipv4.ip_forward=0"
    )
    # A changed and a removed binary: only those two are sent again.
    tools = f"/opt/criops/cri-tools/{versions()['CRI_TOOLS_VERSION']}"
    binaries = test_host.sh(f"sha256sum {tools}/critest {tools}/ginkgo").stdout
    test_host.sh(f"echo tampered >>{tools}/critest && rm {tools}/ginkgo")
    repaired = run_playbook(inventory, "playbooks/site.yml", tarball_vars)
    assert repaired.returncode == 0, repaired.stdout[-6000:]
    changed = changed_tasks(repaired.stdout)
    for task in (
        "containerd : Write the configuration directories, the registry mirrors, config.toml and the service limits",
        "containerd : Have containerd restarted for its changed config.toml or service limits",
        "node_prereqs : Apply kernel parameters for pod networking",
        "containerd : Restart containerd",
        "cri_tools : Send the missing or changed binaries from the local source",
    ):
        assert task in changed, changed
    assert test_host.sh(f"sha256sum {tools}/critest {tools}/ginkgo").stdout == binaries
    assert test_host.sh(f"stat -c %a {tools}/critest {tools}/ginkgo").stdout.split() == ["755", "755"]
    assert test_host.sh(f"cat {config} /etc/containerd/certs.d/gcr.io/hosts.toml").stdout == written
    assert test_host.sh("sysctl -n net.ipv4.ip_forward").stdout.strip() == "1"

    # A mirror alone: written back without a restart (containerd reads certs.d on every pull).
    pid = test_host.sh("systemctl show -P MainPID containerd").stdout.strip()
    test_host.sh("rm /etc/containerd/certs.d/gcr.io/hosts.toml")
    mirrored = run_playbook(inventory, "playbooks/site.yml", tarball_vars)
    assert mirrored.returncode == 0, mirrored.stdout[-6000:]
    assert changed_tasks(mirrored.stdout) == [
        "containerd : Write the configuration directories, the registry mirrors, config.toml and the service limits"
    ]
    assert test_host.sh(f"cat {config} /etc/containerd/certs.d/gcr.io/hosts.toml").stdout == written
    assert test_host.sh("systemctl show -P MainPID containerd").stdout.strip() == pid

    # Alone, so no configuration change restarts it on the way.
    test_host.sh("systemctl stop containerd")
    started = run_playbook(inventory, "playbooks/site.yml", tarball_vars)
    assert started.returncode == 0, started.stdout[-6000:]
    assert changed_tasks(started.stdout) == ["containerd : Enable and start containerd"]
    assert test_host.sh("systemctl is-active containerd").stdout.strip() == "active"
    assert "RuntimeName:  containerd" in test_host.sh("crictl version").stdout

    assert_run_changes_nothing(inventory, test_host, tarball_vars)


GUARDED_POD = {"metadata": {"name": "still-serving", "namespace": "team-a", "uid": "guarded-1", "attempt": 0}}


def test_reset_refuses_while_a_pod_runs_and_removes_containerd_when_forced(
    first_run: subprocess.CompletedProcess[str], inventory: Path, tarball_vars: dict, test_host: Node
) -> None:
    """(Last: it removes the module's containerd.)"""
    assert first_run.returncode == 0
    test_host.sh(f"echo '{json.dumps(GUARDED_POD)}' >/root/guarded-pod.json")
    test_host.sh("crictl runp --runtime crun /root/guarded-pod.json")
    refused = run_playbook(inventory, "playbooks/reset.yml", tarball_vars)
    assert refused.returncode != 0
    assert "team-a/still-serving (handler crun)" in refused.stdout, refused.stdout[-3000:]
    assert "cri_tools_reset_force=true" in refused.stdout
    # Refused before anything changed: containerd, its binaries and the pod are all there.
    assert play_recap(refused.stdout)[test_host.name]["changed"] == 0
    assert test_host.sh("systemctl is-active containerd").stdout.strip() == "active"
    assert "still-serving" in test_host.sh("crictl pods --state ready --output json").stdout

    # Check mode predicts the removal and leaves the node as it is.
    forced_vars = {**tarball_vars, "cri_tools_reset_force": True}
    before = node_state(test_host)
    checked = run_playbook(inventory, "playbooks/reset.yml", forced_vars, options=["--check"])
    assert checked.returncode == 0, checked.stdout[-6000:]
    assert play_recap(checked.stdout)[test_host.name]["changed"] > 0, checked.stdout[-6000:]
    assert node_state(test_host) == before
    assert test_host.sh("systemctl is-active containerd").stdout.strip() == "active"
    assert "still-serving" in test_host.sh("crictl pods --state ready --output json").stdout

    forced = run_playbook(inventory, "playbooks/reset.yml", forced_vars)
    assert forced.returncode == 0, forced.stdout[-6000:]
    assert test_host.sh("systemctl is-active containerd", check=False).stdout.strip() != "active"
    gone = "/usr/local/bin/containerd /usr/local/bin/crictl /etc/containerd/config.toml"
    left = test_host.sh(f"ls {gone} 2>&1", check=False)
    assert left.stdout.count("No such file") == 3, left.stdout

    # A second reset finds nothing to stop or remove and says so.
    assert_run_changes_nothing(inventory, test_host, forced_vars, "playbooks/reset.yml")
