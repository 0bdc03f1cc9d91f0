#!/usr/bin/env bash
# Start (up) or remove (down) the local test host "criops-local": a Debian
# systemd container shaped like a fresh node, as the molecule scenarios use.
#   hack/local-host.sh up [suite]     suite: bookworm (default) or trixie
#   hack/local-host.sh down
. "$(dirname "$0")/lib.sh"

name=${CRIOPS_LOCAL_HOST:-criops-local}
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
      podman run -d --name "$name" --hostname "$name" \
        --runtime runc --privileged --systemd=always --cgroupns private \
        --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 \
        --tmpfs /var/lib/containerd:rw,exec,size=4g \
        --network slirp4netns:allow_host_loopback=true \
        "localhost/criops-test-host:$suite" /sbin/init >/dev/null
    fi
    for _ in $(seq 1 30); do
      state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
      [[ $state == running || $state == degraded ]] && exit 0
      sleep 1
    done
    die "$name did not finish booting (systemd state: ${state:-unknown})"
    ;;
  down)
    podman rm -f "$name" >/dev/null 2>&1 || true
    ;;
  *) die "usage: $0 up [suite] | down" ;;
esac
