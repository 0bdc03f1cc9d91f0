"""singularity-cri (sycri on Singularity 3.4.1, CRI v1alpha2) on a fresh test host,
from the tarballs hack/legacy-runtimes.sh builds, served by the loopback artifact
server and verified by sha256: check mode first, then the install, a second run
that changes nothing, a busybox pod whose image comes from the local registry
under its upstream name (sycri's registry mirrors), then the operator on a real
API server: Unsupported under a kubelet v1.37 Node (probe only), critest v1.13
through validate.yml once the Node's kubelet is one that speaks v1alpha2, and
cleanup; last a reset that removes what the role added. Nothing is mocked.

docs/singularity-cri.md explains every critest failure listed in
CRITEST_EXPECTED_FAILURES.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from testworld.cluster import kubectl_json, node_labels, phase_is, report_kubelet, runs, runtime_node, wait_for
from testworld.hosts import (
    ArtifactServer,
    Node,
    Tarball,
    assert_run_changes_nothing,
    crictl,
    critest_pods,
    hack_script,
    member_sha256,
    play_recap,
    run_playbook,
    write_inventory,
)

pytestmark = pytest.mark.integration

ENDPOINT = "unix:///var/run/singularity.sock"
CRITEST_TIMEOUT = 2400
RN = "sycri-node"

# critest v1.13 specs that fail against sycri here, each explained in
# docs/singularity-cri.md (a spec outside this list failing, or fewer passes
# than CRITEST_MIN_PASSED, fails the test).
CRITEST_EXPECTED_FAILURES: dict[str, str] = {
    "[k8s.io] Image Manager public image with digest should be pulled and removed [Conformance]": (
        "gcr.io/cri-tools/test-image-digest is pinned by the digest of upstream's image, which no rebuild "
        "reproduces: the local registry cannot serve that manifest"
    ),
    "[k8s.io] Image Manager listImage should get exactly 3 repoTags in the result image [Conformance]": (
        "sycri names an image by the sha256 of the SIF file `singularity build` makes, and every build of "
        "the same docker image gives a different SIF: three tags of one image become three images"
    ),
}
# sycri's start race (docs/singularity-cri.md), recognised by the failure's own
# message; only a few may occur per run: StartContainer waits for one state
# report of the container it started, and a container that exits within
# milliseconds is reported exited, or already gone, first (NoNewPrivs,
# ReadOnlyRootfs, ...). The exec-with-tty and attach races are fixed by
# criops' patches 0006 and 0007: a failure of those specs is unexplained.
SYCRI_START_RACE = re.compile(
    r"could not start container: (unexpected container state: exited"
    r"|could not update container state: could not get container state: could not query state: "
    r".*no container found with name)"
)
RACES_TOLERATED = 3
# 66 of 72 specs run (6 skipped); all but the two expected failures pass, except
# specs lost to sycri's start race in an unlucky run.
CRITEST_MIN_PASSED = 64


@pytest.fixture(scope="module")
def test_images() -> None:
    """critest v1.13's images in the local registry under their upstream paths (cached)."""
    hack_script("test-images.sh")


@pytest.fixture(scope="module")
def sycri_inventory(test_host: Node, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test host in cri_nodes' child group singularity_cri, with inventory/local's group_vars."""
    return write_inventory(tmp_path_factory.mktemp("sycri-inventory"), test_host, group="singularity_cri")


@pytest.fixture(scope="module")
def sycri_vars(
    legacy_artifacts: dict[str, Tarball], artifact_server: ArtifactServer, v1alpha2_tools_vars: dict
) -> dict:
    singularity = legacy_artifacts["singularity-3.4.1"]
    sycri = legacy_artifacts["singularity-cri-1.0.0-beta.7"]
    return {
        **v1alpha2_tools_vars,
        "singularity_cri_singularity_tarball_url": artifact_server.url(singularity.path),
        "singularity_cri_singularity_tarball_sha256": singularity.sha256,
        "singularity_cri_tarball_url": artifact_server.url(sycri.path),
        "singularity_cri_tarball_sha256": sycri.sha256,
    }


def _installed(node: Node) -> str:
    return node.sh(
        "ls -d /usr/local/bin/sycri /usr/local/bin/singularity /usr/local/libexec/singularity "
        "/etc/systemd/system/sycri.service /usr/local/etc/sycri/sycri.yaml /etc/sycri/net.d "
        "/usr/local/bin/crictl-v1alpha2 /usr/local/bin/critest-v1alpha2 2>/dev/null; "
        "systemctl is-active sycri 2>&1",
        check=False,
    ).stdout


@pytest.fixture(scope="module")
def check_run(sycri_inventory: Path, sycri_vars: dict, test_host: Node) -> subprocess.CompletedProcess[str]:
    """site.yml --check --diff on the fresh node, before anything is installed."""
    before = _installed(test_host)
    run = run_playbook(sycri_inventory, "playbooks/site.yml", sycri_vars, ["--check", "--diff"])
    assert _installed(test_host) == before, "check mode changed the node"
    return run


@pytest.fixture(scope="module")
def first_run(
    check_run: subprocess.CompletedProcess[str], sycri_inventory: Path, sycri_vars: dict, test_images: None
) -> subprocess.CompletedProcess[str]:
    return run_playbook(sycri_inventory, "playbooks/site.yml", sycri_vars)


def _crictl(node: Node, args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return crictl(node, ENDPOINT, args, check=check)


def test_check_mode_on_a_fresh_node(check_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert check_run.returncode == 0, check_run.stdout[-6000:]
    assert play_recap(check_run.stdout)[test_host.name]["failed"] == 0
    # It predicts the files it would write.
    assert "/usr/local/etc/sycri/sycri.yaml" in check_run.stdout
    assert "sycri.service" in check_run.stdout


def test_site_installs_singularity_and_sycri(first_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert first_run.returncode == 0, first_run.stdout[-6000:]
    assert play_recap(first_run.stdout)[test_host.name]["failed"] == 0


def test_the_node_runs_the_tarballs_binaries(
    first_run: subprocess.CompletedProcess[str], test_host: Node, legacy_artifacts: dict[str, Tarball]
) -> None:
    assert first_run.returncode == 0
    running = test_host.sh('readlink "/proc/$(systemctl show -p MainPID --value sycri)/exe"').stdout.strip()
    assert running == "/usr/local/bin/sycri"
    installed = test_host.sh(
        "sha256sum /usr/local/bin/sycri /usr/local/bin/singularity /usr/local/libexec/singularity/bin/starter-suid"
    ).stdout
    sycri = legacy_artifacts["singularity-cri-1.0.0-beta.7"].path
    singularity = legacy_artifacts["singularity-3.4.1"].path
    assert f"{member_sha256(sycri, 'usr/local/bin/sycri')}  /usr/local/bin/sycri" in installed
    for member in ("usr/local/bin/singularity", "usr/local/libexec/singularity/bin/starter-suid"):
        assert f"{member_sha256(singularity, member)}  /{member}" in installed
    # The setuid starter kept its bit, owned by root.
    mode = test_host.sh("stat -c '%a %U' /usr/local/libexec/singularity/bin/starter-suid").stdout.split()
    assert mode == ["4755", "root"], mode


def test_sycri_answers_cri_v1alpha2(first_run: subprocess.CompletedProcess[str], test_host: Node) -> None:
    assert first_run.returncode == 0
    version = _crictl(test_host, "version").stdout
    assert "RuntimeName:  singularity" in version, version
    assert "RuntimeVersion:  3.4.1" in version, version
    info = json.loads(_crictl(test_host, "info").stdout)
    conditions = {condition["type"]: condition["status"] for condition in info["status"]["conditions"]}
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}, info
    # /etc/crictl.yaml points both crictl versions at sycri.
    assert "RuntimeName:  singularity" in test_host.sh("crictl-v1alpha2 version").stdout


def test_second_run_changes_nothing(
    first_run: subprocess.CompletedProcess[str], sycri_inventory: Path, sycri_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    assert_run_changes_nothing(sycri_inventory, test_host, sycri_vars)


POD = {
    "metadata": {"name": "criops-busybox", "namespace": "default", "uid": "criops-busybox-uid", "attempt": 0},
    "log_directory": "/var/log/criops-pods/criops-busybox",
    "linux": {},
}
CONTAINER = {
    "metadata": {"name": "busybox"},
    # The upstream name: docker.io/library/busybox:1.28 through sycri's registry mirror.
    "image": {"image": "busybox:1.28"},
    "command": ["sh", "-c", "echo criops-busybox-pod-ok; exec sleep 3600"],
    "log_path": "busybox.log",
    "linux": {},
}


def test_a_busybox_pod_runs_with_its_image_from_the_local_registry(
    first_run: subprocess.CompletedProcess[str], test_host: Node
) -> None:
    assert first_run.returncode == 0
    test_host.sh(
        f"mkdir -p /root/criops-pod && echo '{json.dumps(POD)}' >/root/criops-pod/pod.json && "
        f"echo '{json.dumps(CONTAINER)}' >/root/criops-pod/container.json"
    )
    pulled = _crictl(test_host, "pull busybox:1.28", check=False)
    assert pulled.returncode == 0, pulled.stderr
    # Pulled by sycri's `singularity build` over plain HTTP from the mirror, the
    # same content the registry serves as library/busybox:1.28.
    images = _crictl(test_host, "images").stdout
    assert re.search(r"^busybox\s+1\.28\s", images, re.MULTILINE), images
    pod = _crictl(test_host, "runp /root/criops-pod/pod.json", check=False)
    assert pod.returncode == 0, pod.stderr
    pod_id = pod.stdout.strip()
    try:
        created = _crictl(
            test_host, f"create {pod_id} /root/criops-pod/container.json /root/criops-pod/pod.json", check=False
        )
        assert created.returncode == 0, created.stderr
        container_id = created.stdout.strip()
        started = _crictl(test_host, f"start {container_id}", check=False)
        assert started.returncode == 0, started.stderr + _crictl(test_host, f"logs {container_id}", check=False).stderr
        state = json.loads(_crictl(test_host, f"inspect {container_id}").stdout)["status"]["state"]
        assert state == "CONTAINER_RUNNING", state
        logs = test_host.sh(f"sleep 1; crictl-v1alpha2 logs {container_id} 2>&1").stdout
        assert "criops-busybox-pod-ok" in logs, logs
        # The container runs busybox from the image, in the pod's network.
        assert _crictl(test_host, f"exec -s {container_id} busybox echo exec-ok").stdout.strip() == "exec-ok"
        ip = json.loads(_crictl(test_host, f"inspectp {pod_id}").stdout)["status"]["network"]["ip"]
        assert ip.startswith("10.86."), ip
    finally:
        _crictl(test_host, f"stopp {pod_id}", check=False)
        _crictl(test_host, f"rmp {pod_id}", check=False)


# One failure's report in ginkgo v1's output: from its bullet to the next separator.
_FAILURE_REPORT = re.compile(r"^• Failure.*?(?=^-{30})", re.MULTILINE | re.DOTALL)


def lost_to_a_race(failure: str, output: str) -> bool:
    """Whether the failed spec's report in critest's output shows sycri's start race (SYCRI_START_RACE).

    The JUnit name joins the spec's texts with spaces; its last words are the
    spec's own (It) text, which its report in the output shows on one line.
    """
    tail = " ".join(re.sub(r"(\s*\[[^\]]*\])+$", "", failure).split()[-4:])
    return any(
        tail in report and SYCRI_START_RACE.search(report) is not None for report in _FAILURE_REPORT.findall(output)
    )


@pytest.fixture(scope="module")
def world(first_run: subprocess.CompletedProcess[str], operator_on_test_host: dict) -> dict:
    """The operator, with the installed host registered as a Node (no kubelet behind it)."""
    assert first_run.returncode == 0
    return operator_on_test_host


def _rn(world: dict) -> dict:
    return kubectl_json(world["plane"], "get", "runtimenode", RN)


def test_operator_reports_unsupported_under_a_kubelet_without_v1alpha2(world: dict) -> None:
    report_kubelet(world, "v1.37.2")
    manifest = runtime_node(
        RN,
        world["host"].name,
        runtime="singularity-cri",
        ssh_port=world["port"],
        validation={"expectedFailures": sorted(CRITEST_EXPECTED_FAILURES), "timeoutSeconds": CRITEST_TIMEOUT},
    )
    applied = world["plane"].kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert applied.returncode == 0, applied.stderr
    status = wait_for("Unsupported", phase_is(world["plane"], RN, "Unsupported", "Ready", "Failed"), 300)
    assert status["phase"] == "Unsupported", status
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    assert validated["reason"] == "CRIv1alpha2Only", validated
    assert (
        "kubelet v1.37.2" in validated["message"] and "Run instead: runtime containerd or crun" in validated["message"]
    ), validated
    # The probe ran through crictl v1.13 (what sycri answers is in the status); critest did not.
    assert status["runtime"]["name"] == "singularity", status
    assert status["runtime"]["version"] == "3.4.1", status
    assert [run["critest"] for run in runs(world["state"], RN)] == [False]
    assert "critest" not in status
    assert node_labels(world).get("criops.dev/validated") == "false"


def _leave_a_critest_pod(node: Node) -> str:
    """A pod and its running container in a namespace of critest's, as a spec that failed
    before its own cleanup leaves them; the pod's `namespace/name`."""
    left = {**POD, "metadata": {**POD["metadata"], "namespace": "cri-test-namespace-left", "uid": "left-uid"}}
    node.sh(f"echo '{json.dumps(left)}' >/root/criops-pod/left-pod.json")
    pod_id = _crictl(node, "runp /root/criops-pod/left-pod.json").stdout.strip()
    container_id = _crictl(
        node, f"create {pod_id} /root/criops-pod/container.json /root/criops-pod/left-pod.json"
    ).stdout.strip()
    _crictl(node, f"start {container_id}")
    return "cri-test-namespace-left/criops-busybox"


def test_operator_proves_sycri_with_critest_v1_13_under_a_kubelet_that_speaks_v1alpha2(world: dict) -> None:
    left = _leave_a_critest_pod(world["host"])
    report_kubelet(world, "v1.25.16")
    # A spec change makes the operator look again (Unsupported is the generation's verdict).
    patched = world["plane"].kubectl(
        "patch",
        "runtimenode",
        RN,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"labels": {"example.com/sycri-test": "1"}}}),
    )
    assert patched.returncode == 0, patched.stderr
    generation = _rn(world)["metadata"]["generation"]
    status = wait_for(
        "a critest verdict", phase_is(world["plane"], RN, "Ready", "Failed", generation=generation), CRITEST_TIMEOUT
    )
    critest = status["critest"]
    assert critest["version"] == "v1.13.0", critest
    assert critest["total"] == 72 and critest["skipped"] == 6, critest
    report = runs(world["state"], RN)[-1]["dir"] / "reports" / world["host"].name / "default"
    log = (report / "critest.log").read_text()
    print(f"critest v1.13 through the operator: {critest['result']}, failed: {critest['failures']}")
    races = [f for f in critest["failures"] if f not in CRITEST_EXPECTED_FAILURES and lost_to_a_race(f, log)]
    unexplained = [f for f in critest["failures"] if f not in CRITEST_EXPECTED_FAILURES and f not in races]
    assert not unexplained, f"failures not explained in docs/singularity-cri.md: {unexplained}"
    assert len(races) <= RACES_TOLERATED, f"{len(races)} specs lost to sycri's start race: {races}"
    assert critest["passed"] + len(races) >= CRITEST_MIN_PASSED, critest
    # A spec lost to the race can fail before its own cleanup: validation removes what
    # critest left (here also one left before the run), containers first, and says so.
    assert critest_pods(world["host"], ENDPOINT) == [], "critest's pods outlived the validation"
    assert _crictl(world["host"], "ps --all --quiet").stdout.strip() == ""
    assert f"{left}: removed" in (report / "left-by-critest.log").read_text().splitlines()
    validated = next(c for c in status["conditions"] if c["type"] == "Validated")
    if races:
        # An unlucky run is reported as what it is: failures outside expectedFailures.
        assert (status["phase"], validated["reason"]) == ("Failed", "CritestFailed"), status
        assert node_labels(world).get("criops.dev/validated") == "false"
    else:
        assert (status["phase"], validated["reason"]) == ("Ready", "CritestPassed"), status
        assert "critest v1.13.0: " in validated["message"] and "2 expected failure(s)" in validated["message"]
        labels = node_labels(world)
        assert labels.get("criops.dev/validated") == "true" and labels.get("example.com/sycri-test") == "1", labels


def test_deleting_the_runtime_node_cleans_the_node(world: dict) -> None:
    deleted = world["plane"].kubectl("delete", "runtimenode", RN, "--timeout=120s", timeout=150)
    assert deleted.returncode == 0, deleted.stderr
    left = [key for key in node_labels(world) if key.startswith("criops.dev/") or key == "example.com/sycri-test"]
    assert left == [], node_labels(world)


def test_reset_removes_what_the_role_added(
    first_run: subprocess.CompletedProcess[str], sycri_inventory: Path, sycri_vars: dict, test_host: Node
) -> None:
    assert first_run.returncode == 0
    reset = run_playbook(sycri_inventory, "playbooks/reset.yml", sycri_vars)
    assert reset.returncode == 0, reset.stdout[-6000:]
    # A second reset finds nothing to stop or remove and says so.
    assert_run_changes_nothing(sycri_inventory, test_host, sycri_vars, "playbooks/reset.yml")
    left = test_host.sh(
        "ls -d /usr/local/bin/sycri /usr/local/bin/singularity /usr/local/bin/run-singularity "
        "/usr/local/etc/singularity /usr/local/etc/sycri /usr/local/libexec/singularity /var/lib/singularity "
        "/etc/systemd/system/sycri.service /etc/sycri /var/run/singularity /var/run/singularity.sock "
        "/usr/local/bin/crictl-v1alpha2 /usr/local/bin/critest-v1alpha2 /opt/criops/cri-tools/v1.13.0 "
        "/var/cache/criops/singularity-* /var/cache/criops/crictl-v1.13.0-* 2>/dev/null",
        check=False,
    ).stdout
    assert left == "", f"reset left: {left}"
    assert test_host.sh("systemctl is-active sycri", check=False).stdout.strip() in {"inactive", "unknown"}
    assert test_host.sh("pgrep -fa '^Singularity OCI '", check=False).stdout == ""
    assert "squashfs" not in test_host.sh("findmnt -n -o FSTYPE -R /var", check=False).stdout
