#!/usr/bin/env bash
# Build singularity-cri (sycri) $SINGULARITY_CRI_VERSION, Sylabs' CRI v1alpha2
# server for Singularity, from the pinned source archive with criops' patches
# in hack/patches/, packed as
#   $CRIOPS_CACHE/artifacts/singularity-cri-<version>-linux-<arch>.tar.gz
# (+ .sha256): usr/local/bin/sycri and its default config
# usr/local/etc/sycri/sycri.yaml (where sycri looks without --config), a tree
# rooted at / as upstream's `make install` lays it out.
# Built as its Makefile does: -mod vendor, tags "sylog selinux seccomp" (cgo
# against libseccomp-dev; nodes need libseccomp2).
# Prints the tarball path. Cached by a hash of this script, the patches, the
# archive's pinned sha256 and the Go version: a no-op when that is unchanged.
. "$(dirname "$0")/lib.sh"

version=$SINGULARITY_CRI_VERSION
arch=$(go env GOARCH)
patches=("$CRIOPS_ROOT/hack/patches/singularity-cri-$version"/*.patch)
tarball="$CRIOPS_CACHE/artifacts/singularity-cri-$version-linux-$arch.tar.gz"
key=$(recipe_hash "${BASH_SOURCE[0]}" "${patches[@]}" <(echo "$SINGULARITY_CRI_SHA256 $(go env GOVERSION)"))

if build_is_current "singularity-cri-$version" "$key" "$tarball.sha256"; then
  log "singularity-cri $version tarball is current: $tarball"
  echo "$tarball"
  exit 0
fi

pkg-config --exists libseccomp || die "building sycri needs libseccomp-dev (run hack/bootstrap.sh)"
archive=$(fetch_source SINGULARITY_CRI)
work="$CRIOPS_CACHE/build/singularity-cri-$version"
rm -rf "$work"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
unpack_source "$archive" "$work/src" "${patches[@]}"

export GOPATH="$work/gopath" GO111MODULE=on GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=1
umask 022
log "building sycri $version"
mkdir -p "$work/root/usr/local/bin" "$work/root/usr/local/etc/sycri"
# main.version as its Makefile stamps it from the tag: without the "v".
(cd "$work/src" && go build -mod vendor -trimpath -tags "sylog selinux seccomp" \
  -ldflags "-X main.version=$version" -o "$work/root/usr/local/bin/sycri" ./cmd/server)
install -m 0644 "$work/src/config/sycri.yaml" "$work/root/usr/local/etc/sycri/sycri.yaml"

version_out=$("$work/root/usr/local/bin/sycri" version)
[[ $version_out == "$version" ]] || die "the built sycri says version '$version_out', not $version"
mkdir -p "$(dirname "$tarball")"
# No entries for usr/ or usr/local/bin/: unpacked at / they would reset those
# directories' modes and times, or replace a directory symlink by a directory.
release_tarball "$work/root" "$tarball" "$source_epoch" usr/local/bin/sycri usr/local/etc/sycri
record_build "singularity-cri-$version" "$key"
log "singularity-cri $version built in ${SECONDS}s: $tarball"
echo "$tarball"
