"""What a user relies on after `site.yml` on a singularity-cri node."""

from __future__ import annotations

import json

ENDPOINT = "unix:///var/run/singularity.sock"
CRICTL = f"crictl-v1alpha2 --runtime-endpoint {ENDPOINT} --image-endpoint {ENDPOINT}"


def test_sycri_is_enabled_and_running(host):
    service = host.service("sycri")
    assert service.is_enabled
    assert service.is_running


def test_cri_socket_is_root_only(host):
    socket = host.file("/var/run/singularity.sock")
    assert socket.is_socket
    assert socket.user == "root"
    assert socket.mode & 0o007 == 0, f"socket is world-accessible: {oct(socket.mode)}"


def test_the_setuid_starter_kept_its_bit(host):
    starter = host.file("/usr/local/libexec/singularity/bin/starter-suid")
    assert starter.user == "root"
    assert starter.mode == 0o4755, oct(starter.mode)


def test_sycri_answers_cri_v1alpha2(host):
    version = host.check_output(f"{CRICTL} version")
    assert "RuntimeName:  singularity" in version
    assert "RuntimeVersion:  3.4.1" in version
    conditions = {
        c["type"]: c["status"] for c in json.loads(host.check_output(f"{CRICTL} info"))["status"]["conditions"]
    }
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}


def test_sycri_network_speaks_cni_0_4_0(host):
    conflist = json.loads(host.file("/etc/sycri/net.d/10-criops-sycri-bridge.conflist").content_string)
    assert conflist["cniVersion"] == "0.4.0"
    assert conflist["plugins"][0]["bridge"] == "sycri0"


def test_a_busybox_pod_runs_with_its_image_through_the_mirror(host):
    pod = {"metadata": {"name": "molecule-bb", "namespace": "default", "uid": "molecule-bb"}, "linux": {}}
    container = {
        "metadata": {"name": "bb"},
        "image": {"image": "busybox:1.28"},
        "command": ["sh", "-c", "echo molecule-pod-ok; exec sleep 600"],
        "linux": {},
    }
    host.check_output(
        f"mkdir -p /root/molecule-pod && echo '{json.dumps(pod)}' >/root/molecule-pod/pod.json"
        f" && echo '{json.dumps(container)}' >/root/molecule-pod/container.json"
    )
    host.check_output(f"{CRICTL} pull busybox:1.28")
    pod_id = host.check_output(f"{CRICTL} runp /root/molecule-pod/pod.json").strip()
    try:
        container_id = host.check_output(
            f"{CRICTL} create {pod_id} /root/molecule-pod/container.json /root/molecule-pod/pod.json"
        ).strip()
        host.check_output(f"{CRICTL} start {container_id}")
        state = json.loads(host.check_output(f"{CRICTL} inspect {container_id}"))["status"]["state"]
        assert state == "CONTAINER_RUNNING"
        assert host.check_output(f"{CRICTL} exec -s {container_id} busybox echo exec-ok").strip() == "exec-ok"
    finally:
        host.run(f"{CRICTL} stopp {pod_id}")
        host.run(f"{CRICTL} rmp {pod_id}")
