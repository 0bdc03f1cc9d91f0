#!/usr/bin/env bash
# Build a containerd release-shaped tarball (bin/containerd,
# bin/containerd-shim-runc-v2, bin/ctr: the layout of upstream's
# containerd-<version>-linux-<arch>.tar.gz) from the binaries of the Debian
# containerd package, and print its path. A <tarball>.sha256 file sits beside it.
#
# Why: the containerd role's air-gapped path (containerd_install_method:
# tarball) installs from a tarball at a URL the site controls, verified by
# sha256. No upstream release download is reachable from here, so the tests
# serve a tarball the project makes itself from Debian's own binaries.
#
# Cached under $CRIOPS_CACHE/artifacts per Debian package version: a no-op when
# that tarball exists. The archive is deterministic (sorted members, fixed
# times, owners and modes, gzip without a timestamp), so its sha256 is stable.
. "$(dirname "$0")/lib.sh"

arch=$(dpkg --print-architecture)
artifacts="$CRIOPS_CACHE/artifacts"
mkdir -p "$artifacts"

candidate() { apt-cache policy containerd 2>/dev/null | awk '/Candidate:/ { print $2 }'; }
version=$(candidate)
if [[ -z $version || $version == "(none)" ]]; then
  log "no containerd candidate in the package lists; running apt-get update"
  apt-get update -qq >/dev/null 2>&1 || die "apt-get update failed"
  version=$(candidate)
  [[ -n $version && $version != "(none)" ]] || die "no containerd package in the configured Debian sources"
fi

tarball="$artifacts/containerd-$version-linux-$arch.tar.gz"
if [[ -s $tarball && -s $tarball.sha256 ]]; then
  log "containerd tarball is current: $tarball"
  echo "$tarball"
  exit 0
fi

work=$(mktemp -d "$CRIOPS_CACHE/containerd-tarball.XXXX")
trap 'rm -rf "$work"' EXIT

apt_download() { (cd "$work" && apt-get download -q -o APT::Sandbox::User=root "containerd=$version") >"$work/apt.log" 2>&1; }
if ! apt_download; then
  log "apt-get download containerd=$version failed; running apt-get update"
  if ! { apt-get update -q >>"$work/apt.log" 2>&1 && apt_download; }; then
    cat "$work/apt.log" >&2
    die "cannot download containerd=$version"
  fi
fi
dpkg-deb -x "$work"/containerd_*.deb "$work/deb"

mkdir -p "$work/root/bin"
for binary in containerd containerd-shim-runc-v2 ctr; do
  install -m 0755 "$work/deb/usr/bin/$binary" "$work/root/bin/$binary"
done
chmod 0755 "$work/root/bin"

tar -C "$work/root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
  --format=gnu -cf - bin | gzip -n -9 >"$work/out.tar.gz"
# Written next to the cache path first, then renamed: a reader never sees half a file.
mv "$work/out.tar.gz" "$tarball"
(cd "$artifacts" && sha256sum "$(basename "$tarball")") >"$work/out.sha256"
mv "$work/out.sha256" "$tarball.sha256"
log "containerd $version tarball: $tarball ($(cut -c1-16 "$tarball.sha256")…)"
echo "$tarball"
