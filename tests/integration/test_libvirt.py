"""libvirt, the VM substrate of virtlet, on a fresh test host in the virtlet group:
check mode first (node untouched), the install from Debian's packages with a test
VM booted under libvirt to its end (KVM where it boots a guest, else TCG), a
second run that changes nothing (the test VM leaves no trace), services stopped
by hand brought back, and a reset that removes exactly the packages the role
installed. Nothing is mocked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from testworld.hosts import REPO, Node, assert_run_changes_nothing, flat, play_recap, run_playbook, write_inventory

pytestmark = pytest.mark.integration

PACKAGES = ["libvirt-daemon-system", "libvirt-daemon-driver-qemu", "qemu-system-x86", "qemu-utils"]
MARKER = "/var/lib/criops/libvirt-packages"
DECISION = re.compile(r"libvirt VMs on (\S+) run as domain type (kvm|qemu)")
# What the test VM could leave behind: scratch directories, libvirt's logs and domains.
TRACES = "ls /tmp /var/log/libvirt/qemu 2>&1; virsh -q -c qemu:///system list --all 2>&1"


@pytest.fixture(scope="module")
def guest_kernel() -> str:
    built = subprocess.run([str(REPO / "hack" / "guest-kernel.sh")], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    return built.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def libvirt_inventory(test_host: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test host in cri_nodes' child group virtlet, with inventory/local's group_vars."""
    return write_inventory(tmp_path_factory.mktemp("libvirt-inventory"), test_host, group="virtlet")


@pytest.fixture(scope="module")
def libvirt_vars(guest_kernel: str) -> dict:
    return {"libvirt_check_kernel": guest_kernel}


def _packages(node: Node) -> set[str]:
    listed = node.sh("dpkg-query -W -f='${db:Status-Abbrev}${binary:Package}\\n'").stdout
    return {line.split()[1] for line in listed.splitlines() if line.startswith("ii ")}


def _installed(node: Node) -> str:
    return node.sh(
        f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(PACKAGES)} 2>&1; ls -d {MARKER} 2>&1; "
        "systemctl is-active libvirtd virtlogd 2>&1",
        check=False,
    ).stdout


@pytest.fixture(scope="module")
def fresh_packages(test_host: Node) -> set[str]:
    return _packages(test_host)


@pytest.fixture(scope="module")
def check_run(
    libvirt_inventory: Path, libvirt_vars: dict, test_host: Node, fresh_packages: set[str]
) -> subprocess.CompletedProcess[str]:
    """site.yml --check --diff on the fresh node, before anything is installed."""
    before = _installed(test_host)
    run = run_playbook(libvirt_inventory, "playbooks/site.yml", libvirt_vars, ["--check", "--diff"])
    assert _installed(test_host) == before, "check mode changed the node"
    assert _packages(test_host) == fresh_packages, "check mode installed packages"
    return run


@pytest.fixture(scope="module")
def first_run(
    check_run: subprocess.CompletedProcess[str], libvirt_inventory: Path, libvirt_vars: dict
) -> subprocess.CompletedProcess[str]:
    return run_playbook(libvirt_inventory, "playbooks/site.yml", libvirt_vars)


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        ({"libvirt_accel": "fast"}, "value of libvirt_accel must be one of: auto, kvm, tcg, got: fast"),
        ({"libvirt_check_kernel": "/nonexistent/vmlinuz"}, "libvirt_check_kernel must name a guest kernel file"),
        ({"libvirt_check": False}, "with libvirt_check false libvirt_accel must be kvm or tcg (got 'auto')"),
    ],
)
def test_wrong_inputs_are_refused_before_anything_changes(
    libvirt_inventory: Path, libvirt_vars: dict, test_host: Node, fresh_packages: set[str], wrong: dict, words: str
) -> None:
    before = _installed(test_host)
    run = run_playbook(libvirt_inventory, "playbooks/site.yml", {**libvirt_vars, **wrong})
    assert run.returncode != 0, run.stdout[-3000:]
    assert words in flat(run.stdout), run.stdout[-3000:]
    assert "Provision virtlet nodes" not in run.stdout
    assert _installed(test_host) == before
    assert _packages(test_host) == fresh_packages


def test_check_mode_on_a_fresh_node(check_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert check_run.returncode == 0, check_run.stdout[-6000:]
    assert "Provision virtlet nodes" in check_run.stdout
    assert "a real run boots the test VM" in flat(check_run.stdout)


def test_site_installs_libvirt_and_boots_a_vm(first_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert first_run.returncode == 0, first_run.stdout[-6000:]
    assert play_recap(first_run.stdout)[test_host.name]["changed"] > 0
    decided = DECISION.findall(flat(first_run.stdout))
    assert [host for host, _ in decided] == [test_host.name], first_run.stdout[-4000:]
    domain_type = decided[0][1]
    # Independently of the run: libvirtd and virtlogd run, enabled, and libvirt offers that domain type.
    assert test_host.sh("systemctl is-active libvirtd virtlogd").stdout.split() == ["active", "active"]
    assert "disabled" not in test_host.sh("systemctl is-enabled libvirtd virtlogd", check=False).stdout
    capabilities = test_host.sh("virsh -c qemu:///system capabilities").stdout
    assert f"<domain type='{domain_type}'" in capabilities
    # KVM only where a guest really booted under it; this machine's KVM may not.
    if domain_type == "qemu":
        assert "domain type kvm" in flat(first_run.stdout) or "/dev/kvm" not in test_host.sh("ls /dev").stdout


def test_the_role_records_the_packages_it_installed(
    first_run: subprocess.CompletedProcess[str], test_host: Node, fresh_packages: set[str]
) -> None:
    assert first_run.returncode == 0
    recorded = set(test_host.sh(f"cat {MARKER}").stdout.split())
    assert set(PACKAGES) <= {name.split(":")[0] for name in recorded}, recorded
    assert not recorded & fresh_packages
    assert recorded <= _packages(test_host)


def test_second_run_changes_nothing_and_the_test_vm_leaves_no_trace(
    first_run: subprocess.CompletedProcess[str], libvirt_inventory: Path, libvirt_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    before = test_host.sh(TRACES, check=False).stdout
    again = assert_run_changes_nothing(libvirt_inventory, test_host, libvirt_vars)
    assert len(DECISION.findall(flat(again.stdout))) == 1, "the second run booted no test VM"
    assert test_host.sh(TRACES, check=False).stdout == before
    assert "criops-libvirt-check" not in before


def test_services_stopped_by_hand_are_brought_back(
    first_run: subprocess.CompletedProcess[str], libvirt_inventory: Path, libvirt_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    test_host.sh("systemctl disable --now virtlogd.socket virtlogd.service && systemctl stop libvirtd")
    run = run_playbook(libvirt_inventory, "playbooks/site.yml", libvirt_vars)
    assert run.returncode == 0, run.stdout[-6000:]
    assert play_recap(run.stdout)[test_host.name]["changed"] > 0
    assert test_host.sh("systemctl is-active libvirtd virtlogd").stdout.split() == ["active", "active"]
    assert "disabled" not in test_host.sh("systemctl is-enabled virtlogd", check=False).stdout
    assert_run_changes_nothing(libvirt_inventory, test_host, libvirt_vars)


def test_reset_removes_what_the_role_added(
    first_run: subprocess.CompletedProcess[str],
    libvirt_inventory: Path,
    libvirt_vars: dict,
    test_host: Node,
    fresh_packages: set[str],
) -> None:
    assert first_run.returncode == 0
    recorded = set(test_host.sh(f"cat {MARKER}").stdout.split())
    reset = run_playbook(libvirt_inventory, "playbooks/reset.yml", libvirt_vars)
    assert reset.returncode == 0, reset.stdout[-6000:]
    left = _packages(test_host)
    assert fresh_packages <= left, f"reset removed packages the node had: {fresh_packages - left}"
    assert not recorded & left, f"reset left packages the role installed: {recorded & left}"
    assert not [name for name in left - fresh_packages if re.search("libvirt|qemu", name)]
    assert test_host.sh(f"ls -d {MARKER} /var/lib/criops 2>/dev/null", check=False).stdout == ""
    for unit in ("libvirtd", "virtlogd"):
        assert test_host.sh(f"systemctl is-active {unit}", check=False).stdout.strip() in {"inactive", "unknown"}
