"""Test hosts that join the test control plane as real Nodes: a real kubelet,
built from the same Kubernetes release as kube-apiserver (hack/k8s-tools.sh),
run as a systemd unit on the containerd that site.yml left on the host.

This is the test world, not criops: criops runs beside the tools that join
nodes to a cluster (kubeadm, kubespray) and never joins one itself, so none of
this is a role or reachable from the operator.

A test host is a privileged container sharing the machine's kernel, so a
kubelet in it is fenced in from the machine:
- the kernel settings it would write (vm.overcommit_memory, kernel.panic,
  kernel.panic_on_oops) are read-only files inside the host, holding the values
  it wants, so it has nothing to write and could not;
- its cgroups live under a root of their own, `/<node>`, made in every
  hierarchy first, inside the host's own cgroups (hack/test-host-init keeps
  systemd's hierarchy namespaced too), so they name the node they belong to;
- `leave` removes its pods and that cgroup root before the host goes.
`testworld.hosts.machine_state` is what a test compares before and after.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time

from testworld.control_plane import ControlPlane, k8s_binary
from testworld.hosts import Node

KUBELET_PORT = 10250
# The kernel tunables kubelet sets on start (pkg/kubelet/cm, setupKernelTunables) and the
# values it wants. It writes only those that differ: each becomes a read-only file with
# that value, bind-mounted over the /proc/sys file inside the host.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1"}


def _kubelet_config(node: str, cgroup_driver: str) -> dict[str, object]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"},
        },
        "authorization": {"mode": "Webhook"},
        "port": KUBELET_PORT,
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        # kubelet 1.37 refuses cgroup v1 unless told; this machine's hosts are hybrid v1.
        "failCgroupV1": False,
        "cgroupDriver": cgroup_driver,
        "cgroupRoot": f"/{node}",
        # The test hosts share the machine's disks: never evict for their fill level (kind does the same).
        "evictionHard": {"nodefs.available": "0%", "nodefs.inodesFree": "0%", "imagefs.available": "0%"},
        "imageGCHighThresholdPercent": 100,
        "failSwapOn": False,
        "resolvConf": "/etc/resolv.conf",
    }


def _kubeconfig(plane: ControlPlane, node: str) -> str:
    """The kubelet's kubeconfig: kube-apiserver is the machine's loopback, 10.0.2.2 inside a
    test host; its certificate names localhost."""
    cluster = {
        "server": f"https://10.0.2.2:{plane.api_port}",
        "tls-server-name": "localhost",
        "certificate-authority": "/etc/kubernetes/pki/ca.crt",
    }
    user = {"client-certificate": "/etc/kubernetes/pki/kubelet.crt", "client-key": "/etc/kubernetes/pki/kubelet.key"}
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "test", "cluster": cluster}],
        "users": [{"name": f"system:node:{node}", "user": user}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": f"system:node:{node}"}}],
        "current-context": "test",
    })  # fmt: skip


UNIT = """[Unit]
Description=kubelet of the test world
After=containerd.service
Requires=containerd.service

[Service]
ExecStart=/usr/local/bin/kubelet --config=/var/lib/kubelet/config.yaml --kubeconfig=/etc/kubernetes/kubelet.conf
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""

# Inside the host: the read-only kernel settings, the cgroup root in every hierarchy it may write.
_FENCE = """set -e
mkdir -p /etc/kubernetes/sysctl
for name in {sysctls}; do
  value=${{name#*=}} name=${{name%%=*}} file=/etc/kubernetes/sysctl/$(echo "$name" | tr / .)
  echo "$value" >"$file"
  grep -q " /proc/sys/$name " /proc/self/mountinfo || mount --bind "$file" "/proc/sys/$name"
  mount -o remount,bind,ro "/proc/sys/$name"
done
# Hierarchies mounted read-only in the host (controllers the machine's systemd leaves alone) are not the kubelet's.
for hierarchy in /sys/fs/cgroup/*/; do
  [ -L "${{hierarchy%/}}" ] || [ ! -w "$hierarchy" ] || mkdir -p "${{hierarchy}}{node}"
done
"""


def _cgroup_driver(node: Node) -> str:
    """containerd's cgroup driver for runc (systemd or cgroupfs): the kubelet must use the same."""
    info = json.loads(node.sh("crictl info -o json").stdout)
    runc = info["config"]["containerd"]["runtimes"]["runc"].get("options") or {}
    return "systemd" if runc.get("SystemdCgroup") else "cgroupfs"


def join(plane: ControlPlane, node: Node, timeout: float = 120) -> None:
    """Start a kubelet on `node` (containerd already there) and wait until its Node is Ready."""
    name = node.name
    crt, key = plane.issue_cert(f"kubelet-{name}", f"system:node:{name}", "system:nodes")
    ca = plane.workdir / "pki" / "ca.crt"
    node.sh("mkdir -p /etc/kubernetes/pki /var/lib/kubelet")
    for source, target in (
        (k8s_binary("kubelet"), "/usr/local/bin/kubelet"),
        (ca, "/etc/kubernetes/pki/ca.crt"),
        (crt, "/etc/kubernetes/pki/kubelet.crt"),
        (key, "/etc/kubernetes/pki/kubelet.key"),
    ):
        subprocess.run(["podman", "cp", str(source), f"{name}:{target}"], check=True, capture_output=True, timeout=120)
    files = {
        "/etc/kubernetes/kubelet.conf": _kubeconfig(plane, name),
        "/var/lib/kubelet/config.yaml": json.dumps(_kubelet_config(name, _cgroup_driver(node))),
        "/etc/systemd/system/kubelet.service": UNIT,
    }
    node.sh("\n".join(f"printf %s {shlex.quote(body)} >{path}" for path, body in files.items()))
    sysctls = " ".join(f"{key}={value}" for key, value in KUBELET_SYSCTLS.items())
    node.sh(_FENCE.format(sysctls=sysctls, node=name))
    # The root a systemd host has: shared (podman gives its containers a private one; kind's
    # node entrypoint makes it shared the same way). Pods that mount host paths with
    # propagation (criops' on-node pods) need it; within the host's own mount namespace,
    # so nothing reaches the machine's mounts.
    node.sh("mount --make-rshared /")
    node.sh("systemctl daemon-reload && systemctl enable --now kubelet.service")
    wait_node_ready(plane, node, timeout)


def node_ready(plane: ControlPlane, name: str) -> bool:
    """Whether the Node exists and its kubelet reports Ready."""
    found = plane.kubectl("get", "node", name, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
    return found.returncode == 0 and found.stdout.strip() == "True"


def wait_node_ready(plane: ControlPlane, node: Node, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not node_ready(plane, node.name):
        if time.monotonic() > deadline:
            journal = node.sh("journalctl -u kubelet --no-pager -p warning | tail -40", check=False).stdout
            raise AssertionError(f"Node {node.name} not Ready within {timeout:.0f} s; the kubelet said:\n{journal}")
        time.sleep(0.5)


def leave(plane: ControlPlane, node: Node) -> None:
    """Stop the kubelet, remove every pod it left and its cgroup root, the kernel
    setting files' mounts, and the Node."""
    node.sh(
        "systemctl disable --now kubelet.service; "
        "crictl rmp -fa >/dev/null 2>&1; "
        # Deepest first: a cgroup directory goes only once it has no children.
        f'for hierarchy in /sys/fs/cgroup/*/; do [ -d "${{hierarchy}}{node.name}" ] && '
        f'find "${{hierarchy}}{node.name}" -depth -type d -exec rmdir {{}} +; done; '
        f'for name in {" ".join(KUBELET_SYSCTLS)}; do umount "/proc/sys/$name"; done; true',
        check=False,
    )
    deadline = time.monotonic() + 30
    while plane.kubectl("delete", "node", node.name, "--ignore-not-found").returncode != 0:
        if time.monotonic() > deadline:
            break
        time.sleep(1)
