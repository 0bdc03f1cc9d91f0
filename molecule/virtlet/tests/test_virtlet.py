"""What a user relies on after `site.yml` on a virtlet node."""

from __future__ import annotations

import json

ENDPOINT = "unix:///run/virtlet.sock"
CRICTL = f"crictl-v1alpha2 --runtime-endpoint {ENDPOINT} --image-endpoint {ENDPOINT}"


def test_libvirt_and_virtlet_are_enabled_and_running(host):
    for name in ("libvirtd", "virtlogd", "virtlet-vms", "virtlet"):
        service = host.service(name)
        assert service.is_enabled, name
        assert service.is_running, name


def test_cri_socket_is_root_only(host):
    socket = host.file("/run/virtlet.sock")
    assert socket.is_socket
    assert socket.user == "root"
    # Connecting to a unix socket takes write permission on it.
    assert socket.mode & 0o022 == 0, f"others may connect to the socket: {oct(socket.mode)}"


def test_vmwrapper_is_the_setuid_emulator_libvirt_runs(host):
    assert host.file("/vmwrapper").linked_to == "/usr/local/bin/vmwrapper"
    wrapper = host.file("/usr/local/bin/vmwrapper")
    assert wrapper.user == "root"
    assert wrapper.mode == 0o4755, oct(wrapper.mode)


def test_virtlet_answers_cri_v1alpha2(host):
    assert "RuntimeName:  virtlet" in host.check_output(f"{CRICTL} version")
    conditions = {
        c["type"]: c["status"] for c in json.loads(host.check_output(f"{CRICTL} info"))["status"]["conditions"]
    }
    assert conditions == {"RuntimeReady": True, "NetworkReady": True}


def test_virtlet_network_speaks_cni_0_3_1(host):
    conflist = json.loads(host.file("/etc/virtlet/net.d/10-criops-virtlet-bridge.conflist").content_string)
    assert conflist["cniVersion"] == "0.3.1"
    assert conflist["plugins"][0]["bridge"] == "virtlet0"


def test_a_vm_pod_boots_and_answers_http(host):
    pod = {
        "metadata": {"name": "molecule-vm", "namespace": "default", "uid": "molecule-vm"},
        "log_directory": "/var/log/molecule-vm",
        "linux": {},
    }
    container = {"metadata": {"name": "vm"}, "image": {"image": "criops/vm-httpd"}, "log_path": "vm.log", "linux": {}}
    host.check_output(
        f"mkdir -p /root/molecule-vm /var/log/molecule-vm && echo '{json.dumps(pod)}' >/root/molecule-vm/pod.json"
        f" && echo '{json.dumps(container)}' >/root/molecule-vm/container.json"
    )
    host.check_output(f"{CRICTL} pull criops/vm-httpd")
    pod_id = host.check_output(f"{CRICTL} runp /root/molecule-vm/pod.json").strip()
    container_id = ""
    try:
        container_id = host.check_output(
            f"{CRICTL} create {pod_id} /root/molecule-vm/container.json /root/molecule-vm/pod.json"
        ).strip()
        host.check_output(f"{CRICTL} start {container_id}")
        ip = json.loads(host.check_output(f"{CRICTL} inspectp {pod_id}"))["status"]["network"]["ip"]
        answer = host.check_output(f"for i in $(seq 60); do curl -fsS -m 2 http://{ip}/ && exit 0; sleep 1; done")
        assert answer.strip() == "criops vm-httpd"
    finally:
        # The container first, as a kubelet does: virtlet's rmp leaves it.
        if container_id:
            host.run(f"{CRICTL} stop {container_id}")
            host.run(f"{CRICTL} rm {container_id}")
        host.run(f"{CRICTL} stopp {pod_id}")
        host.run(f"{CRICTL} rmp {pod_id}")
