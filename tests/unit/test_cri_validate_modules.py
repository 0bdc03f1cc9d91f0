"""cri_validate's node-side modules and its report action: the logic they decide with, and the
handler checks run as Ansible runs the module (real commands, no CRI needed)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from types import ModuleType

import pytest

ROLE = Path(__file__).resolve().parents[2] / "roles/cri_validate"


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# The modules import their shared helpers as Ansible ships them to the node.
_load(ROLE / "module_utils/criops_cri.py", "ansible.module_utils.criops_cri")
probe = _load(ROLE / "library/criops_cri_probe.py", "criops_cri_probe")
smoke = _load(ROLE / "library/criops_smoke_pods.py", "criops_smoke_pods")
throwaway = _load(ROLE / "library/criops_throwaway_containerd.py", "criops_throwaway_containerd")
critest = _load(ROLE / "library/criops_critest.py", "criops_critest")
reports = _load(ROLE / "action_plugins/criops_report_files.py", "criops_report_files")

VERSION = "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  1.6.20~ds1\nRuntimeApiVersion:  v1\n"


def test_the_probe_records_what_the_endpoint_answered() -> None:
    info = {
        "status": {"conditions": [{"type": "RuntimeReady", "status": True}, {"type": "NetworkReady", "status": False}]},
        "config": {"containerd": {"runtimes": {"runc": {"options": {"SystemdCgroup": True}}, "crun": {}}}},
    }
    record, runtimes = probe.probe_record("v1", VERSION, info)
    assert record == {
        "reachable": True,
        "criV1": True,
        "runtime": {"name": "containerd", "version": "1.6.20~ds1", "criApiVersion": "v1"},
        "conditions": {"RuntimeReady": True, "NetworkReady": False},
        "handlers": ["runc", "crun"],
    }
    assert smoke.cgroup_parent(runtimes, "") == "criops-smoke.slice"
    assert smoke.cgroup_parent(runtimes, "crun") == ""
    # A runtime without containerd's config (sycri, virtlet) lists no handlers.
    record, runtimes = probe.probe_record("v1alpha2", VERSION, {"status": {}})
    assert record["handlers"] == [] and record["conditions"] == {} and record["criV1"] is False and runtimes == {}


def test_an_endpoint_of_another_cri_api_is_reachable_and_a_dead_one_is_not() -> None:
    other = 'rpc error: code = Unimplemented desc = unknown service runtime.v1.RuntimeService"\n'
    assert probe.unanswered_record("v1", other) == {
        "reachable": True,
        "criV1": False,
        "runtime": {},
        "error": other.strip(),
    }
    dead = probe.unanswered_record("v1", "dial unix /run/containerd/containerd.sock: connect: no such file\n")
    assert dead["reachable"] is False and dead["error"].endswith("no such file")


def test_the_smoke_pod_configs_are_data() -> None:
    hostile = "{{ lookup('pipe', 'id') }}; $(reboot)"
    pod, container = smoke.pod_configs("crun", "/tmp/x", hostile, "criops-smoke.slice")
    assert pod["metadata"]["name"] == "criops-smoke-crun" and pod["log_directory"] == "/tmp/x/logs"
    assert pod["linux"] == {"cgroup_parent": "criops-smoke.slice"}
    assert container["image"] == {"image": hostile}
    assert smoke.pod_configs("", "/tmp/x", "img", "")[0]["metadata"]["name"] == "criops-smoke-default"


def test_the_web_container_is_asked_until_it_answers() -> None:
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"criops web server OK\n")

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert smoke.ask(f"http://127.0.0.1:{server.server_port}/", 2) == (200, "criops web server OK\n")
    finally:
        server.shutdown()
    with pytest.raises(smoke.StepFailed, match=r"no answer from http://127.0.0.1:1/ after 2 tries"):
        smoke.ask("http://127.0.0.1:1/", 2, timeout=1)


def _run_smoke(tmp_path: Path, checks: dict) -> dict:
    args = tmp_path / "args.json"
    module_args = {
        "crictl": str(tmp_path / "no-crictl"),
        "endpoint": "unix:///nowhere.sock",
        "handlers": list(checks),
        "handler_checks": checks,
        "image": "img",
        "expected_body": "ok",
        "expected_log": "GET /",
    }
    args.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": module_args}))
    # The module run as a program, its shared helpers under the name Ansible gives them on the node.
    runner = (
        "import importlib.util, runpy, sys\n"
        "utils, module, sys.argv = sys.argv[1], sys.argv[2], sys.argv[2:]\n"
        "spec = importlib.util.spec_from_file_location('ansible.module_utils.criops_cri', utils)\n"
        "sys.modules[spec.name] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(sys.modules[spec.name])\n"
        "runpy.run_path(module, run_name='__main__')\n"
    )
    program = [sys.executable, "-c", runner, str(ROLE / "module_utils/criops_cri.py")]
    done = subprocess.run(
        [*program, str(ROLE / "library/criops_smoke_pods.py"), str(args)], capture_output=True, text=True
    )
    return json.loads(done.stdout)


def test_a_handler_check_that_fails_names_the_handler_and_why(tmp_path: Path) -> None:
    missing = _run_smoke(tmp_path, {"kata": [["/opt/kata/bin/kata-runtime", "check"]]})
    assert (
        missing["failed"]
        and missing["msg"] == "Run the handler's own checks (kata): /opt/kata/bin/kata-runtime: not installed"
    )
    failing = _run_smoke(
        tmp_path, {"crun": [["true"], ["sh", "-c", "echo first >&2; echo broken for a test >&2; exit 3"]]}
    )
    assert failing["msg"] == "Run the handler's own checks (crun): broken for a test"
    # Checks pass: the next step is the pull, through a crictl that is not there.
    passing = _run_smoke(tmp_path, {"runc": [["true"]]})
    assert passing["failed"] and passing["msg"].startswith("Pull the smoke image: "), passing


def test_critest_gets_one_alternation_per_list_and_its_own_flags_per_generation() -> None:
    params = {
        "critest": "critest",
        "crictl": "crictl",
        "endpoint": "unix:///run/x.sock",
        "v1alpha2": False,
        "handler": "crun",
        "parallel": 2,
        "focus": ["Runtime info", "PodSandbox"],
        "skip": ["a|b"],
        "timeout": 60,
        "lock": "/run/lock",
        "kubelet_duties": None,
    }
    assert critest.critest_argv(params, "/s") == [
        "flock", "--timeout", "60", "/run/lock",
        "critest", "--runtime-endpoint=unix:///run/x.sock", "--image-endpoint=unix:///run/x.sock",
        "--test-images-file=/s/test-images.yaml", "--ginkgo.junit-report=/s/junit.xml", "--ginkgo.no-color",
        "--runtime-handler=crun", "--parallel=2",
        "--ginkgo.focus=(?:Runtime info)|(?:PodSandbox)", "--ginkgo.skip=(?:a|b)",
    ]  # fmt: skip
    old = {**params, "v1alpha2": True, "handler": "", "parallel": 1, "focus": [], "skip": [], "kubelet_duties": "#"}
    assert critest.critest_argv(old, "/s") == [
        "flock", "--timeout", "60", "/run/lock",
        "python3", "/s/kubelet-duties.py", "crictl", "unix:///run/x.sock", "/s/kubelet-duties.log", "--",
        "critest", "--runtime-endpoint=unix:///run/x.sock", "--image-endpoint=unix:///run/x.sock",
        "--report-dir=/s", "--ginkgo.noColor",
    ]  # fmt: skip
    assert critest.release("critest version: v1.37.0\n") == "v1.37.0"
    assert critest.release("1.13.0") == "v1.13.0" and critest.release("") == "unknown"
    assert critest.why_no_report("ok\npanic: boom\nmore", "") == "panic: boom"
    assert critest.why_no_report("", "  \nflag provided but not defined: -x\n") == "flag provided but not defined: -x"
    assert critest.why_no_report("", "") == "no output"


def test_the_throwaway_instance_is_found_deepest_mount_first() -> None:
    mountinfo = "\n".join(
        [
            "22 1 0:20 / / rw - overlay overlay rw",
            "30 22 0:30 / /var/lib/criops-validate-containerd rw - tmpfs tmpfs rw",
            "31 30 0:31 / /var/lib/criops-validate-containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs rw - o o",
            "32 22 0:32 / /run/criops-validate-containerd/netns/cni-1 rw - nsfs nsfs rw",
            "33 22 0:33 / /run/criops-validate-containerd-other rw - tmpfs tmpfs rw",
            "34 22 0:34 / /var/lib/containerd rw - tmpfs tmpfs rw",
            r"35 22 0:35 / /run/criops-validate-containerd/a\040b rw - tmpfs tmpfs rw",
        ]
    )
    assert throwaway.mounts_below(
        mountinfo, ["/var/lib/criops-validate-containerd", "/run/criops-validate-containerd"]
    ) == [
        "/var/lib/criops-validate-containerd/io.containerd.runtime.v2.task/k8s.io/abc/rootfs",
        "/var/lib/criops-validate-containerd",
        "/run/criops-validate-containerd/netns/cni-1",
        "/run/criops-validate-containerd/a b",
    ]


def test_only_the_ip_allocations_of_its_sandboxes_are_its(tmp_path: Path) -> None:
    network = tmp_path / "containerd-net"
    network.mkdir()
    (network / "10.85.0.4").write_text("sandbox-a\neth0")
    (network / "10.85.0.5").write_text("sandbox-of-the-node\neth0")
    (network / "last_reserved_ip.0").write_text("10.85.0.5")
    (network / "lock").write_text("")
    assert throwaway.ipam_allocations(str(tmp_path), ["sandbox-a", "sandbox-b"]) == [str(network / "10.85.0.4")]
    assert throwaway.ipam_allocations(str(tmp_path), []) == []
    assert throwaway.ipam_allocations(str(tmp_path / "none"), ["sandbox-a"]) == []


def test_a_cri_plugin_that_did_not_load_is_explained_by_containerds_own_words() -> None:
    log = "\n".join(
        [
            'time="t" level=info msg="loading plugin \\"io.containerd.grpc.v1.cri\\"..." type=io.containerd.grpc.v1',
            'time="t" level=warning msg="failed to load plugin io.containerd.grpc.v1.cri" error="failed to create CRI'
            ' service: failed to create fsnotify watcher: too many open files"',
            'time="t" level=info msg=serving... address=/run/criops-validate-containerd/containerd.sock',
        ]
    )
    assert throwaway.cri_plugin_error(log) == (
        "failed to create CRI service: failed to create fsnotify watcher: too many open files;"
        " the node's inotify instances for root are used up (fs.inotify.max_user_instances):"
        " raise it (kind's known issues suggest 512)"
    )
    quoted = 'msg="failed to load plugin io.containerd.grpc.v1.cri" error="bad \\"x\\" value"'
    assert throwaway.cri_plugin_error(quoted) == 'bad "x" value'
    assert throwaway.cri_plugin_error("level=info msg=serving...") == ""


def test_readiness_is_every_condition_true() -> None:
    info = {
        "status": {"conditions": [{"type": "RuntimeReady", "status": True}, {"type": "NetworkReady", "status": False}]}
    }
    assert throwaway.not_ready(info) == ["NetworkReady"]
    assert throwaway.not_ready({"status": {"conditions": [{"type": "RuntimeReady", "status": True}]}}) == []


def test_reports_are_written_as_given_data_as_nice_json_and_only_below_their_directory(tmp_path: Path) -> None:
    written = reports.write_reports(
        str(tmp_path),
        {"probe.json": {"b": [1], "a": "é"}, "runc/critest.log": "out\nerr", "runc/kubelet-duties.log": None},
    )
    assert written == [str(tmp_path / "probe.json"), str(tmp_path / "runc/critest.log")]
    assert (tmp_path / "probe.json").read_text() == '{\n    "a": "é",\n    "b": [\n        1\n    ]\n}\n'
    assert (tmp_path / "runc/critest.log").read_text() == "out\nerr"
    assert not (tmp_path / "runc/kubelet-duties.log").exists()
    for outside in ("../escape.json", "/etc/escape.json", "runc/../../escape.json"):
        with pytest.raises(ValueError, match="is not a path below"):
            reports.write_reports(str(tmp_path / "reports"), {outside: "x"})
    assert not (tmp_path / "escape.json").exists()


class _RecordingCrictl:
    """crictl's answers as a runtime with one leftover critest pod and one pod of a user would give."""

    def __init__(self, rmp_rc: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.rmp_rc = rmp_rc

    def run(self, *args: str) -> tuple[int, str, str]:
        self.calls.append(args)
        if args[0] == "pods":
            items = [
                {"id": "p1", "metadata": {"namespace": "cri-test-namespace1a2b", "name": "NamespaceOption-PodSandbox"}},
                {"id": "p2", "metadata": {"namespace": "default", "name": "web"}},
            ]
            return 0, json.dumps({"items": items}), ""
        if args[0] == "ps":
            return 0, "c1\n", ""
        return (self.rmp_rc if args[0] == "rmp" else 0), "", ""


@pytest.mark.parametrize("v1alpha2", [True, False])
def test_only_critests_own_pods_are_removed_containers_first(v1alpha2: bool) -> None:
    crictl = _RecordingCrictl()
    left = critest.remove_critest_pods(crictl, v1alpha2)
    assert left == ["cri-test-namespace1a2b/NamespaceOption-PodSandbox: removed"]
    touched = [call for call in crictl.calls if call[0] != "pods"]
    stop_pod = [("stopp", "p1")] if v1alpha2 else []
    rmp = ("rmp", "p1") if v1alpha2 else ("rmp", "--force", "p1")
    assert touched == [("ps", "--all", "--quiet", "--pod", "p1"), ("stop", "c1"), ("rm", "c1"), *stop_pod, rmp]


def test_a_pod_that_would_not_go_is_reported_so() -> None:
    left = critest.remove_critest_pods(_RecordingCrictl(rmp_rc=1), True)
    assert left == ["cri-test-namespace1a2b/NamespaceOption-PodSandbox: NOT removed"]
