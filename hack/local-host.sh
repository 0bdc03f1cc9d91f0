#!/usr/bin/env bash
# Start (up) or remove (down) the local test host "criops-local": a Debian
# systemd container shaped like a fresh node, as the molecule scenarios use.
#   hack/local-host.sh up [suite]     suite: bookworm (default) or trixie
#   hack/local-host.sh down
# It answers SSH for root, with the key hack/bootstrap.sh made, on a loopback
# port: $CRIOPS_LOCAL_SSH_PORT, else 22022 for criops-local and a free port for
# others (`podman port <name> 22` tells). The kubelet port 10250 is published on
# a free loopback port too, for hosts that join a test cluster (testworld/kubelet.py).
. "$(dirname "$0")/lib.sh"

name=${CRIOPS_LOCAL_HOST:-criops-local}
default_port=$([[ $name == criops-local ]] && echo 22022 || echo "")
ssh_port=${CRIOPS_LOCAL_SSH_PORT:-$default_port}
key="$CRIOPS_CACHE/ssh/id_ed25519"
case "${1:-up}" in
  up)
    suite=${2:-bookworm}
    if podman container exists "$name"; then
      log "$name already exists"
    else
      log "starting $name from localhost/criops-test-host:$suite"
      # runc: this host may run hybrid cgroups, which crun refuses.
      # privileged + systemd: containerd and its shims run nested inside.
      # tmpfs for /var/lib/containerd: overlayfs cannot stack on podman's overlay root.
      # allow_host_loopback: the host's 127.0.0.1 (local registry) is 10.0.2.2 inside.
      # 10250: every host's slirp address is the same, so kube-apiserver reaches a
      # kubelet in it by this published port.
      podman run -d --name "$name" --hostname "$name" \
        --runtime runc --privileged --systemd=always --cgroupns private \
        --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
        --tmpfs /var/lib/containerd:rw,exec,size=4g \
        --network slirp4netns:allow_host_loopback=true \
        --publish "127.0.0.1:$ssh_port:22" --publish 127.0.0.1::10250 \
        --volume "$key.pub:/root/.ssh/authorized_keys:ro" \
        "localhost/criops-test-host:$suite" /usr/local/sbin/test-host-init >/dev/null
    fi
    ssh_port=$(podman port "$name" 22/tcp | head -1 | sed 's/.*://')
    for _ in $(seq 1 30); do
      state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
      if [[ $state == running || $state == degraded ]] &&
        ssh -q -i "$key" -p "$ssh_port" -o BatchMode=yes -o StrictHostKeyChecking=no \
          -o UserKnownHostsFile=/dev/null -o ConnectTimeout=2 root@127.0.0.1 true; then
        exit 0
      fi
      sleep 1
    done
    die "$name did not finish booting or answer SSH on 127.0.0.1:$ssh_port (systemd state: ${state:-unknown})"
    ;;
  down)
    # -t 0: kill; a disposable host has nothing to save, and a clean shutdown
    # only costs time.
    podman rm -f -t 0 "$name" >/dev/null 2>&1 || true
    ;;
  *) die "usage: $0 up [suite] | down" ;;
esac
