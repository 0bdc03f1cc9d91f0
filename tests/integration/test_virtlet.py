"""virtlet (CRI v1alpha2, every pod a VM) and libvirt, its substrate, on one fresh
test host in the virtlet group, from the tarballs hack/legacy-runtimes.sh builds
(served by the loopback artifact server, verified by sha256) and the VM images
hack/vm-images.sh builds into the local registry: wrong inputs refused before
anything changes, check mode (node untouched), the install with a test VM booted
under libvirt to its end (KVM where it boots a guest, else TCG), a second run that
changes nothing, services stopped by hand brought back, a VM pod that boots, gets
its address from virtlet's DHCP and answers HTTP, then the operator on a real API
server: Unsupported under a kubelet v1.37 Node (probe only), a focused critest
v1.13 through validate.yml once the Node's kubelet speaks v1alpha2, and cleanup;
last a reset that removes what the roles added. Nothing is mocked.

docs/critest-results.md explains every critest failure; `make critest-virtlet`
runs the full suite.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml
from criops.core.untrusted import mark_unsafe

from testworld.cluster import kubectl_json, node_labels, phase_is, report_kubelet, runs, runtime_node, wait_for
from testworld.hosts import (
    ArtifactServer,
    Node,
    Tarball,
    assert_run_changes_nothing,
    crictl,
    critest_pods,
    flat,
    hack_script,
    machine_state,
    member_sha256,
    play_recap,
    run_playbook,
    write_inventory,
)

pytestmark = pytest.mark.integration

ENDPOINT = "unix:///run/virtlet.sock"
CACHE = os.environ.get("CRIOPS_CACHE") or os.path.expanduser("~/.cache/criops")
RN = "virtlet-node"
CRITEST_TIMEOUT = 1800
# What the virtlet role writes, hashed to see hand edits repaired.
VIRTLET_FILES = "/etc/virtlet/virtlet.env /etc/virtlet/images/criops.yaml /etc/libvirt/qemu.conf"
# The focused critest v1.13 run of make test: the specs that prove what the
# smoke pod does not (the full suite, `make critest-virtlet`, takes 11-15 min
# under TCG; docs/critest-results.md has its table).
# Ten specs in under a minute: sandboxes, a VM container's create and start,
# the pod network (a port served by the VM, two containers in one pod), the
# streaming server's port-forward into the VM, and the runtime's answers.
CRITEST_FOCUS = [
    r"should support running PodSandbox",
    r"should support stopping PodSandbox",
    r"should support removing PodSandbox",
    r"should support creating container \[Conformance\]",
    r"should support starting container \[Conformance\]",
    r"should support portforward \[Conformance\]",
    r"port mapping with only container port",
    r"multiple containers in a pod should support network",
    r"should return runtime conditions",
    r"should return version info",
]
CRITEST_FOCUSED_PASSED = len(CRITEST_FOCUS)

PACKAGES = ["libvirt-daemon-system", "libvirt-daemon-driver-qemu", "qemu-system-x86", "qemu-utils"]
MARKER = "/var/lib/criops/libvirt-packages"
DECISION = re.compile(r"libvirt VMs on (\S+) run as domain type (kvm|qemu)")
# What the test VM could leave behind: scratch directories, libvirt's logs and domains.
TRACES = "ls /tmp /var/log/libvirt/qemu 2>&1; virsh -q -c qemu:///system list --all 2>&1"


@pytest.fixture(scope="module")
def vm_images() -> None:
    """The guest images in the local registry (cached): virtlet downloads them from there."""
    hack_script("vm-images.sh", timeout=600)


@pytest.fixture(scope="module")
def virtlet_inventory(test_host: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test host in cri_nodes' child group virtlet, with inventory/local's group_vars."""
    return write_inventory(tmp_path_factory.mktemp("virtlet-inventory"), test_host, group="virtlet")


@pytest.fixture(scope="module")
def virtlet_vars(
    guest_kernel: str, legacy_artifacts: dict[str, Tarball], artifact_server: ArtifactServer, v1alpha2_tools_vars: dict
) -> dict:
    virtlet = legacy_artifacts["virtlet-1.5.1"]
    return {
        **v1alpha2_tools_vars,
        "libvirt_check_kernel": guest_kernel,
        "virtlet_tarball_url": artifact_server.url(virtlet.path),
        "virtlet_tarball_sha256": virtlet.sha256,
    }


def _crictl(node: Node, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return crictl(node, ENDPOINT, args, check=check)


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
def machine_before(test_host: Node) -> dict[str, object]:
    """The machine's kernel settings and top-level cgroups before libvirt ran a VM here."""
    return machine_state()


@pytest.fixture(scope="module")
def fresh_packages(test_host: Node, machine_before: dict[str, object]) -> set[str]:
    return _packages(test_host)


@pytest.fixture(scope="module")
def check_run(
    virtlet_inventory: Path, virtlet_vars: dict, test_host: Node, fresh_packages: set[str]
) -> subprocess.CompletedProcess[str]:
    """site.yml --check --diff on the fresh node, before anything is installed."""
    before = _installed(test_host)
    run = run_playbook(virtlet_inventory, "playbooks/site.yml", virtlet_vars, ["--check", "--diff"])
    assert _installed(test_host) == before, "check mode changed the node"
    assert _packages(test_host) == fresh_packages, "check mode installed packages"
    return run


@pytest.fixture(scope="module")
def first_run(
    check_run: subprocess.CompletedProcess[str], virtlet_inventory: Path, virtlet_vars: dict, vm_images: None
) -> subprocess.CompletedProcess[str]:
    return run_playbook(virtlet_inventory, "playbooks/site.yml", virtlet_vars)


@pytest.mark.parametrize(
    ("wrong", "words"),
    [
        ({"libvirt_accel": "fast"}, "value of libvirt_accel must be one of: auto, kvm, tcg, got: fast"),
        ({"libvirt_check_kernel": "/nonexistent/vmlinuz"}, "libvirt_check_kernel must name a guest kernel file"),
        ({"libvirt_check": False}, "with libvirt_check false libvirt_accel must be kvm or tcg (got 'auto')"),
    ],
)
def test_wrong_inputs_are_refused_before_anything_changes(
    virtlet_inventory: Path, virtlet_vars: dict, test_host: Node, fresh_packages: set[str], wrong: dict, words: str
) -> None:
    before = _installed(test_host)
    run = run_playbook(virtlet_inventory, "playbooks/site.yml", {**virtlet_vars, **wrong})
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
    first_run: subprocess.CompletedProcess[str], virtlet_inventory: Path, virtlet_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    before = test_host.sh(TRACES, check=False).stdout
    again = assert_run_changes_nothing(virtlet_inventory, test_host, virtlet_vars)
    assert len(DECISION.findall(flat(again.stdout))) == 1, "the second run booted no test VM"
    assert test_host.sh(TRACES, check=False).stdout == before
    assert "criops-libvirt-check" not in before


def test_services_stopped_by_hand_are_brought_back(
    first_run: subprocess.CompletedProcess[str], virtlet_inventory: Path, virtlet_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    configured = test_host.sh(f"sha256sum {VIRTLET_FILES}").stdout
    test_host.sh("systemctl disable --now virtlogd.socket virtlogd.service && systemctl stop libvirtd virtlet")
    # Hand edits of what the virtlet role owns, found and repaired by the next run.
    test_host.sh(
        "sed -i 's/^VIRTLET_STREAM_PORT=.*/VIRTLET_STREAM_PORT=1/' /etc/virtlet/virtlet.env && "
        "sed -i '/criops roles\\/virtlet/,/criops roles\\/virtlet/d' /etc/libvirt/qemu.conf && "
        "echo 'translations: []' >/etc/virtlet/images/criops.yaml"
    )
    assert test_host.sh(f"sha256sum {VIRTLET_FILES}").stdout != configured
    run = run_playbook(virtlet_inventory, "playbooks/site.yml", virtlet_vars)
    assert run.returncode == 0, run.stdout[-6000:]
    assert play_recap(run.stdout)[test_host.name]["changed"] > 0
    assert test_host.sh("systemctl is-active libvirtd virtlogd virtlet").stdout.split() == ["active"] * 3
    assert "disabled" not in test_host.sh("systemctl is-enabled virtlogd", check=False).stdout
    assert test_host.sh(f"sha256sum {VIRTLET_FILES}").stdout == configured
    assert_run_changes_nothing(virtlet_inventory, test_host, virtlet_vars)


def test_virtlet_runs_the_tarballs_binaries(
    first_run: subprocess.CompletedProcess[str], test_host: Node, legacy_artifacts: dict[str, Tarball]
) -> None:
    assert first_run.returncode == 0
    running = test_host.sh('readlink "/proc/$(systemctl show -p MainPID --value virtlet)/exe"').stdout.strip()
    assert running == "/usr/local/bin/virtlet"
    installed = test_host.sh("sha256sum /usr/local/bin/virtlet /usr/local/bin/vmwrapper").stdout
    tarball = legacy_artifacts["virtlet-1.5.1"].path
    for member in ("usr/local/bin/virtlet", "usr/local/bin/vmwrapper"):
        assert f"{member_sha256(tarball, member)}  /{member}" in installed
    # libvirt's <emulator> is /vmwrapper: setuid root, as virtlet's image has it.
    assert test_host.sh("readlink /vmwrapper").stdout.strip() == "/usr/local/bin/vmwrapper"
    assert test_host.sh("stat -c '%a %U' /usr/local/bin/vmwrapper").stdout.split() == ["4755", "root"]


def test_virtlet_answers_cri_v1alpha2(first_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert first_run.returncode == 0
    version = _crictl(test_host, "version").stdout
    assert "RuntimeName:  virtlet" in version, version
    info = json.loads(_crictl(test_host, "info").stdout)
    conditions = {condition["type"]: condition["status"] for condition in info["status"]["conditions"]}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}, info
    # /etc/crictl.yaml points crictl at virtlet.
    assert "RuntimeName:  virtlet" in test_host.sh("crictl-v1alpha2 version").stdout


POD = {
    "metadata": {"name": "criops-vm", "namespace": "default", "uid": "criops-vm-uid", "attempt": 0},
    "log_directory": "/var/log/criops-pods/criops-vm",
    "linux": {},
}
# virtlet boots the image as the VM's disk; a container command means nothing to it.
CONTAINER = {"metadata": {"name": "vm"}, "image": {"image": "criops/vm-httpd"}, "log_path": "vm.log", "linux": {}}


def test_a_vm_pod_boots_gets_its_address_and_answers_http(
    first_run: subprocess.CompletedProcess[str], test_host: Node
) -> None:
    assert first_run.returncode == 0
    # A kubelet makes the pod's log directory: virtlet writes the console there.
    test_host.sh(
        f"mkdir -p /root/criops-vm {POD['log_directory']} && echo '{json.dumps(POD)}' >/root/criops-vm/pod.json && "
        f"echo '{json.dumps(CONTAINER)}' >/root/criops-vm/container.json"
    )
    pulled = _crictl(test_host, "pull criops/vm-httpd", check=False)
    assert pulled.returncode == 0, pulled.stderr
    pod = _crictl(test_host, "runp /root/criops-vm/pod.json", check=False)
    assert pod.returncode == 0, pod.stderr
    pod_id = pod.stdout.strip()
    try:
        created = _crictl(test_host, f"create {pod_id} /root/criops-vm/container.json /root/criops-vm/pod.json")
        container_id = created.stdout.strip()
        started = _crictl(test_host, f"start {container_id}", check=False)
        assert started.returncode == 0, started.stderr
        domains = test_host.sh("virsh -q -c qemu:///system list --name").stdout
        assert f"virtlet-{container_id[:13]}" in domains, domains
        ip = json.loads(_crictl(test_host, f"inspectp {pod_id}").stdout)["status"]["network"]["ip"]
        assert ip.startswith("10.87."), ip
        # The guest took that address from virtlet's DHCP server and serves HTTP on it.
        answer = test_host.sh(
            f"for i in $(seq 60); do curl -fsS -m 2 http://{ip}/ && exit 0; sleep 1; done; exit 1", check=False
        )
        assert answer.stdout.strip() == "criops vm-httpd", answer.stderr
        # The container log is the VM's serial console.
        log = test_host.sh(f"crictl-v1alpha2 logs {container_id} 2>&1").stdout
        assert "criops-vm: vm-httpd booted" in log and f"DHCP lease {ip}/" in log, log
    finally:
        # As a kubelet does: the pod's containers first (stopped, then
        # garbage-collected), then the pod. virtlet's rmp leaves them.
        for container in _crictl(test_host, f"ps -a -q -p {pod_id}", check=False).stdout.split():
            _crictl(test_host, f"stop {container}", check=False)
            _crictl(test_host, f"rm {container}", check=False)
        _crictl(test_host, f"stopp {pod_id}", check=False)
        _crictl(test_host, f"rmp {pod_id}", check=False)
    assert test_host.sh("virsh -q -c qemu:///system list --all --name").stdout.strip() == ""
    assert critest_pods(test_host, ENDPOINT) == [], "critest's pods outlived the validation"
    # vmwrapper remounted /sys in the VM holder's own mount namespace, not the node's.
    assert test_host.sh("findmnt -n -o FSTYPE /sys/fs/cgroup/memory", check=False).stdout.strip() == "cgroup"


@pytest.fixture(scope="module")
def world(first_run: subprocess.CompletedProcess[str], operator_on_test_host: dict) -> dict:
    """The operator, with the installed host registered as a Node (no kubelet behind it)."""
    assert first_run.returncode == 0
    return operator_on_test_host


def test_operator_reports_unsupported_under_a_kubelet_without_v1alpha2(world: dict) -> None:
    report_kubelet(world, "v1.37.2")
    manifest = runtime_node(
        RN,
        world["host"].name,
        runtime="virtlet",
        ssh_port=world["port"],
        validation={"focus": CRITEST_FOCUS, "timeoutSeconds": CRITEST_TIMEOUT},
    )
    applied = world["plane"].kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    status = wait_for("Unsupported", phase_is(world["plane"], RN, "Unsupported", "Ready", "Failed"), 300)
    assert status["phase"] == "Unsupported", status
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "CRIv1alpha2Only", validated
    assert "kubelet v1.37.2" in validated["message"] and "Run instead: KubeVirt" in validated["message"], validated
    # The probe ran through crictl v1.13 (what virtlet answers is in the status); critest did not.
    assert (status["runtime"]["name"], status["runtime"]["version"]) == ("virtlet", "0.1.0"), status
    assert [run["critest"] for run in runs(world["state"], RN)] == [False]
    assert "critest" not in status
    assert node_labels(world).get("criops.dev/validated") == "false"


def test_operator_proves_virtlet_with_a_focused_critest_under_a_kubelet_that_speaks_v1alpha2(
    world: dict, test_host: Node
) -> None:
    report_kubelet(world, "v1.25.16")
    # A spec change makes the operator look again (Unsupported is the generation's verdict).
    patched = world["plane"].kubectl(
        "patch", "runtimenode", RN, "--type=merge", "-p", json.dumps({"spec": {"labels": {"example.com/vm": "1"}}})
    )
    assert patched.returncode == 0, patched.stderr
    generation = kubectl_json(world["plane"], "get", "runtimenode", RN)["metadata"]["generation"]
    status = wait_for(
        "a critest verdict", phase_is(world["plane"], RN, "Ready", "Failed", generation=generation), CRITEST_TIMEOUT
    )
    critest = status["critest"]
    print(f"critest v1.13 (focused) through the operator: {critest['result']}, failed: {critest['failures']}")
    assert critest["version"] == "v1.13.0", critest
    assert critest["failed"] == 0 and critest["passed"] == CRITEST_FOCUSED_PASSED, critest
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert (status["phase"], validated["reason"]) == ("Ready", "CritestPassed"), status
    labels = node_labels(world)
    assert labels.get("criops.dev/validated") == "true" and labels.get("example.com/vm") == "1", labels
    # What validation did in the kubelet's place is kept beside the report; no VM is left.
    report = runs(world["state"], RN)[-1]["dir"] / "reports" / world["host"].name / "default"
    assert (report / "kubelet-duties.log").exists()
    assert test_host.sh("virsh -q -c qemu:///system list --all --name").stdout.strip() == ""
    assert critest_pods(test_host, ENDPOINT) == [], "critest's pods outlived the validation"


def test_deleting_the_runtime_node_cleans_the_node(world: dict) -> None:
    deleted = world["plane"].kubectl("delete", "runtimenode", RN, "--timeout=120s", timeout=150)
    assert deleted.returncode == 0, deleted.stderr
    left = [key for key in node_labels(world) if key.startswith("criops.dev/") or key == "example.com/vm"]
    assert left == [], node_labels(world)


def _vm_image_url(name: str) -> str:
    digest = (Path(CACHE) / "vm-images" / f"{name}.qcow2.sha256").read_text().split()[0]
    return f"http://10.0.2.2:5000/v2/criops/vm-images/{name}/blobs/sha256:{digest}"


def test_hostile_image_translations_are_written_as_data(
    first_run: subprocess.CompletedProcess[str], virtlet_inventory: Path, virtlet_vars: dict, test_host: Node
) -> None:
    """virtlet_image_translations may come from a RuntimeNode's extraVars: marked unsafe as the operator
    marks them, template syntax and YAML's own characters reach the file as the text they are.
    (Last before the reset: the translations it leaves serve only what it asserts.)"""
    assert first_run.returncode == 0
    witness = virtlet_inventory.parent / "templated"
    hostile = [
        {"name": "{{ lookup('pipe', 'touch " + str(witness) + "') }}", "url": "http://mirror.invalid/a.qcow2"},
        {"regexp": "^x: [y, {z}] # 'q' \"w\" &a *b !c", "url": "http://mirror.invalid/{{7*7}}.qcow2"},
        {"name": "criops/vm-httpd", "url": _vm_image_url("vm-httpd")},
        {"regexp": ".", "url": _vm_image_url("vm-busybox")},
    ]
    run = run_playbook(
        virtlet_inventory,
        "playbooks/site.yml",
        {**virtlet_vars, **mark_unsafe({"virtlet_image_translations": hostile})},
    )
    assert run.returncode == 0, run.stdout[-6000:]
    assert not witness.exists(), "a translation was templated on the controller"
    written = yaml.safe_load(test_host.sh("cat /etc/virtlet/images/criops.yaml").stdout)
    assert written == {"translations": hostile}, written


def test_reset_removes_what_the_role_added(
    first_run: subprocess.CompletedProcess[str],
    virtlet_inventory: Path,
    virtlet_vars: dict,
    test_host: Node,
    fresh_packages: set[str],
) -> None:
    assert first_run.returncode == 0
    recorded = set(test_host.sh(f"cat {MARKER}").stdout.split())
    reset = run_playbook(virtlet_inventory, "playbooks/reset.yml", virtlet_vars)
    assert reset.returncode == 0, reset.stdout[-6000:]
    # A second reset finds nothing to stop or remove and says so.
    assert_run_changes_nothing(virtlet_inventory, test_host, virtlet_vars, "playbooks/reset.yml")
    left = _packages(test_host)
    assert fresh_packages <= left, f"reset removed packages the node had: {fresh_packages - left}"
    assert not recorded & left, f"reset left packages the role installed: {recorded & left}"
    assert not [name for name in left - fresh_packages if re.search("libvirt|qemu", name)]
    assert test_host.sh(f"ls -d {MARKER} /var/lib/criops 2>/dev/null", check=False).stdout == ""
    for unit in ("libvirtd", "virtlogd", "virtlet", "virtlet-vms"):
        assert test_host.sh(f"systemctl is-active {unit}", check=False).stdout.strip() in {"inactive", "unknown"}
    virtlet_left = test_host.sh(
        "ls -d /usr/local/bin/virtlet /usr/local/bin/vmwrapper /usr/local/bin/virtletctl /vmwrapper /etc/virtlet "
        "/etc/systemd/system/virtlet.service /etc/systemd/system/virtlet-vms.service /run/virtlet.sock "
        "/usr/local/libexec/criops /usr/local/bin/crictl-v1alpha2 /usr/local/bin/critest-v1alpha2 "
        "/var/cache/criops/virtlet-* 2>/dev/null; ip link show virtlet0 2>/dev/null",
        check=False,
    ).stdout
    assert virtlet_left == "", f"reset left: {virtlet_left}"


def test_vms_left_the_machine_as_it_was(
    first_run: subprocess.CompletedProcess[str], machine_before: dict[str, object]
) -> None:
    """libvirt and vmwrapper place QEMU in cgroups of their own: inside the test host's,
    never at the top of the machine's hierarchies it shares a kernel with."""
    assert first_run.returncode == 0
    assert machine_state() == machine_before
