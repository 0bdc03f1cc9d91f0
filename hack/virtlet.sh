#!/usr/bin/env bash
# Build virtlet $VIRTLET_VERSION, Mirantis' CRI v1alpha2 runtime that runs
# pods as VMs through libvirt, from the pinned source archive (a whole GOPATH:
# virtlet and its glide.lock dependencies) with criops' patches in
# hack/patches/, packed as
#   $CRIOPS_CACHE/artifacts/virtlet-<version>-linux-<arch>.tar.gz
# (+ .sha256): usr/local/bin/{virtlet,vmwrapper,virtletctl}, a tree rooted at /
# (vmwrapper setuid root).
# Built as upstream's build/cmd.sh does: GOPATH mode, cgo against libvirt-dev
# and libguestfs-dev (nodes need libvirt0 and libguestfs0), the version
# stamped into pkg/version.
# Prints the tarball path. Cached by a hash of this script, the patches, the
# archive's pinned sha256 and the Go version: a no-op when that is unchanged.
. "$(dirname "$0")/lib.sh"

version=$VIRTLET_VERSION
arch=$(go env GOARCH)
patches=("$CRIOPS_ROOT/hack/patches/virtlet-$version"/*.patch)
tarball="$CRIOPS_CACHE/artifacts/virtlet-$version-linux-$arch.tar.gz"
binaries=(virtlet vmwrapper virtletctl)
key=$(recipe_hash "${BASH_SOURCE[0]}" "${patches[@]}" <(echo "$VIRTLET_SHA256 $(go env GOVERSION)"))

if build_is_current "virtlet-$version" "$key" "$tarball.sha256"; then
  log "virtlet $version tarball is current: $tarball"
  echo "$tarball"
  exit 0
fi

pkg-config --exists libvirt libguestfs || die "building virtlet needs libvirt-dev and libguestfs-dev (run hack/bootstrap.sh)"
archive=$(fetch_source VIRTLET)
work="$CRIOPS_CACHE/build/virtlet-$version"
rm -rf "$work"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# The archive's top directory is the GOPATH (src/ inside).
unpack_source "$archive" "$work/gopath" "${patches[@]}"
src="$work/gopath/src/github.com/Mirantis/virtlet"
# The archive's own first entry carries the time it was assembled; virtlet's
# files carry its commit's time, the one stamped as build date and tar mtime.
epoch=$(stat -c %Y "$src/LICENSE")

export GOPATH="$work/gopath" GO111MODULE=off GOFLAGS='' GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
umask 022
# What upstream's build/cmd.sh stamps from `git describe`; "dirty": patched.
v=github.com/Mirantis/virtlet/pkg/version
ldflags="-X $v.gitVersion=$VIRTLET_GIT_VERSION -X $v.gitCommit=$VIRTLET_COMMIT -X $v.gitTreeState=dirty"
ldflags+=" -X $v.gitMajor=${version%%.*} -X $v.gitMinor=$(cut -d. -f2 <<<"$version")"
ldflags+=" -X $v.buildDate=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)"
log "building virtlet $version ($VIRTLET_GIT_VERSION, GOPATH mode)"
mkdir -p "$work/root/usr/local/bin"
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$work/root/usr/local/bin/" \
  "${binaries[@]/#/./cmd/}")

version_out=$("$work/root/usr/local/bin/virtlet" --version --version-format short)
[[ $version_out == "$VIRTLET_GIT_VERSION" ]] ||
  die "the built virtlet says version '$version_out', not $VIRTLET_GIT_VERSION"
# vmwrapper is setuid root, as in virtlet's image: libvirt runs the emulator
# as its QEMU user, and vmwrapper joins the VM's namespaces before it drops to
# that user and execs QEMU.
chmod 4755 "$work/root/usr/local/bin/vmwrapper"
mkdir -p "$(dirname "$tarball")"
# No entries for usr/ or usr/local/bin/: unpacked at / they would reset those
# directories' modes and times, or replace a directory symlink by a directory.
release_tarball "$work/root" "$tarball" "$epoch" "${binaries[@]/#/usr/local/bin/}"
record_build "virtlet-$version" "$key"
log "virtlet $version built in ${SECONDS}s: $tarball"
echo "$tarball"
