#!/usr/bin/env bash
# Build the Debian systemd test-host images with debootstrap and import them into
# podman as localhost/criops-test-host:<suite>. An image is rebuilt only when this
# recipe changes (its hash is stored as an image label).
. "$(dirname "$0")/lib.sh"

recipe=$(recipe_hash "$0" "$CRIOPS_ROOT/hack/lib.sh" "$CRIOPS_ROOT/hack/test-host-init")
# What a freshly installed cloud node has, plus python3-apt so Ansible's apt
# module need not install it on every test run.
packages=systemd,systemd-sysv,dbus,python3,python3-apt,ca-certificates,iproute2,procps,kmod,openssh-server,sudo

build_one() {
  local suite=$1 image="localhost/criops-test-host:$1" root
  if image_is_current "$image" "$recipe"; then
    log "$image is current"
    return
  fi
  root=$(debootstrap_rootfs "$suite" "$suite" --include="$packages")
  # A container has no consoles or hardware clocks to wait for.
  chroot "$root" systemctl mask getty.target console-getty.service systemd-remount-fs.service \
    systemd-firstboot.service systemd-timesyncd.service >/dev/null 2>&1 || true
  # Ship no package lists, as cloud images do, and date the empty list
  # directory in the past so apt's cache_valid_time sees it as stale.
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
  touch -d '2000-01-01' "$root/var/lib/apt/lists"
  : >"$root/etc/machine-id"
  install -m 0755 "$CRIOPS_ROOT/hack/test-host-init" "$root/usr/local/sbin/test-host-init"
  import_rootfs "$root" "$image" "$recipe" --change 'CMD ["/usr/local/sbin/test-host-init"]' --change 'STOPSIGNAL SIGRTMIN+3'
}

for suite in $TEST_HOST_SUITES; do build_one "$suite"; done
