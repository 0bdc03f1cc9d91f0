#!/usr/bin/env bash
# Install everything criops' demo and tests need on a fresh Debian machine, and
# nothing by hand: Debian packages, the pinned Python toolchain, Go-built CRI
# tools and test control plane (etcd, kube-apiserver, kubectl), the test-host
# images, the local registry with its images, the containerd tarball the
# air-gapped install path is tested with, the guest kernel of the Kata host
# check, the legacy CRI v1alpha2 runtimes built from source archives and the
# guest images virtlet runs.
# Idempotent and cached under $CRIOPS_CACHE: a second run takes seconds.
. "$(dirname "$0")/lib.sh"

apt_packages=(podman slirp4netns runc debootstrap docker-registry skopeo jq curl bc openssh-client openssl)
# Build deps of the legacy runtimes built from source (hack/legacy-runtimes.sh).
apt_packages+=(build-essential patch pkg-config libssl-dev uuid-dev libgpgme-dev libseccomp-dev
  squashfs-tools cryptsetup-bin libvirt-dev libguestfs-dev)
# The virtlet guest images (hack/vm-images.sh): a syslinux-booted FAT disk,
# a busybox initramfs, qcow2; QEMU to boot one by hand (docs/legacy-builds.md).
apt_packages+=(syslinux syslinux-common mtools dosfstools fdisk cpio kmod qemu-utils qemu-system-x86)

missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  [[ $(id -u) == 0 ]] || die "installing packages needs root (missing: ${missing[*]})"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v go >/dev/null || die "Go is required to build the CRI tools (go not found on PATH)"

# The venv lives in the cache, keyed by the lock file, and .venv points at it.
venv="$CRIOPS_CACHE/venv-$(recipe_hash "$CRIOPS_ROOT/requirements.txt")"
if [[ ! -x $venv/bin/molecule ]]; then
  log "creating Python venv $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  # pip's download cache with criops' own, not in ~/.cache/pip.
  PIP_CACHE_DIR="$CRIOPS_CACHE/pip" "$venv/bin/pip" install -q --disable-pip-version-check -r "$CRIOPS_ROOT/requirements.txt"
fi
ln -sfn "$venv" "$CRIOPS_ROOT/.venv"

# The key Ansible and the operator use to reach test hosts over SSH.
if [[ ! -f $CRIOPS_CACHE/ssh/id_ed25519 ]]; then
  mkdir -p -m 700 "$CRIOPS_CACHE/ssh"
  ssh-keygen -q -t ed25519 -N '' -C criops-test-hosts -f "$CRIOPS_CACHE/ssh/id_ed25519"
fi

"$CRIOPS_ROOT/hack/go-tools.sh"
# Singularity, singularity-cri, virtlet and the v1alpha2 crictl/critest, from
# pinned source archives (docs/legacy-builds.md): minutes the first time, niced.
# The pins are sums of the source mirror's archives (hack/versions.env): with
# no mirror there is nothing they can be built from, and the tests that need
# them say so when they skip.
if [[ -n $(source_mirror) ]]; then
  legacy_artifacts=$(nice -n 10 "$CRIOPS_ROOT/hack/legacy-runtimes.sh")
  for artifact in $legacy_artifacts; do log "legacy runtime artifact: $artifact"; done
else
  log "no source mirror (CRIOPS_SOURCE_MIRROR, or shared/sources beside the checkout): legacy runtimes not built"
fi
"$CRIOPS_ROOT/hack/k8s-tools.sh"
"$CRIOPS_ROOT/hack/host-images.sh"
"$CRIOPS_ROOT/hack/slim-image.sh"
"$CRIOPS_ROOT/hack/test-images.sh"
"$CRIOPS_ROOT/hack/containerd-tarball.sh" >/dev/null
"$CRIOPS_ROOT/hack/guest-kernel.sh" >/dev/null
"$CRIOPS_ROOT/hack/vm-images.sh" >/dev/null
log "bootstrap complete"
