#!/usr/bin/env bash
# Build Singularity $SINGULARITY_VERSION from the pinned source archive with
# criops' patches in hack/patches/, installed for a node under
#   prefix /usr/local (binaries, libexec/singularity with the setuid starter,
#   etc/singularity configuration) and localstatedir /var/lib
#   (/var/lib/singularity/mnt/session, its mount points),
# packed as $CRIOPS_CACHE/artifacts/singularity-<version>-linux-<arch>.tar.gz
# (+ .sha256): a tree rooted at /, unpacked on a node with `tar -C / -xzf`.
# Build deps (Debian, installed by hack/bootstrap.sh): build-essential
# libssl-dev uuid-dev libgpgme-dev libseccomp-dev pkg-config squashfs-tools
# cryptsetup-bin.
# Prints the tarball path. Cached by a hash of this script, the patches, the
# archive's pinned sha256 and the Go version: a no-op when that is unchanged.
. "$(dirname "$0")/lib.sh"

version=$SINGULARITY_VERSION
arch=$(go env GOARCH)
patches=("$CRIOPS_ROOT/hack/patches/singularity-$version"/*.patch)
tarball="$CRIOPS_CACHE/artifacts/singularity-$version-linux-$arch.tar.gz"
key=$(recipe_hash "${BASH_SOURCE[0]}" "${patches[@]}" <(echo "$SINGULARITY_SHA256 $(go env GOVERSION)"))

if build_is_current "singularity-$version" "$key" "$tarball.sha256"; then
  log "singularity $version tarball is current: $tarball"
  echo "$tarball"
  exit 0
fi

for cmd in gcc make pkg-config mksquashfs; do
  command -v "$cmd" >/dev/null || die "building singularity needs $cmd (run hack/bootstrap.sh)"
done
archive=$(fetch_source SINGULARITY)
# A fixed build path (not mktemp): the paths compiled into the binaries are
# then the same on every build.
work="$CRIOPS_CACHE/build/singularity-$version"
rm -rf "$work"
# The build runs the new singularity, which makes itself a .singularity in the
# home directory of the passwd entry (not $HOME): taken away again when the
# build made it.
user_conf="$(getent passwd "$(id -u)" | cut -d: -f6)/.singularity"
made_user_conf=true
[[ ! -e $user_conf ]] || made_user_conf=false
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"; ! $made_user_conf || rm -rf "$user_conf"' EXIT
unpack_source "$archive" "$work/src" "${patches[@]}"

# Modules mode from vendor/ only: nothing is fetched. Its own Go cache: the
# Makefile runs `go clean -cache`, which would empty the shared one.
export GOPATH="$work/gopath" GOCACHE="$work/gocache" GO111MODULE=on GOFLAGS=-mod=vendor \
  GOPROXY=off GOTOOLCHAIN=local
# Serial make: its Makefile cleans the Go cache in a target that a parallel
# make runs beside the builds. Drop a jobserver inherited from `make -j`.
unset MAKEFLAGS MFLAGS MAKELEVEL
umask 022
log "building singularity $version (serial make: minutes)"
(
  cd "$work/src"
  ./mconfig -V "$version" -b builddir --prefix=/usr/local --localstatedir=/var/lib
  make -j1 -C builddir
  make -j1 -C builddir install DESTDIR="$work/root"
) >"$work/build.log" 2>&1 || {
  tail -40 "$work/build.log" >&2
  die "singularity $version build failed (log above)"
}

starter="$work/root/usr/local/libexec/singularity/bin/starter-suid"
[[ -u $starter ]] || die "make install left $starter without its setuid bit"
version_out=$("$work/root/usr/local/bin/singularity" version)
[[ $version_out == "$version" ]] || die "the built singularity says version '$version_out', not $version"

# Only what Singularity owns, without entries for usr/, usr/local/bin/, var/
# and the like: unpacked at / they would reset those directories' modes and
# times, or replace a directory symlink by a directory.
members=(
  usr/local/bin/run-singularity
  usr/local/bin/singularity
  usr/local/etc/bash_completion.d/singularity
  usr/local/etc/singularity
  usr/local/libexec/singularity
  var/lib/singularity
)
installed=$(cd "$work/root" && find . ! -type d | wc -l)
packed=$(cd "$work/root" && find "${members[@]}" ! -type d | wc -l)
((installed == packed)) ||
  die "make install wrote files outside the packed paths: $(cd "$work/root" && find . ! -type d | sort | head -50)"
mkdir -p "$(dirname "$tarball")"
release_tarball "$work/root" "$tarball" "$source_epoch" "${members[@]}"
record_build "singularity-$version" "$key"
log "singularity $version built in ${SECONDS}s: $tarball"
echo "$tarball"
