#!/usr/bin/env bash
# Build nerdctl $NERDCTL_VERSION from the pinned source archive (fetched from
# the peers' mirror $CRIOPS_PEERS_MIRROR, else its upstream URL) and pack it like upstream's release
# tarball,
#   $CRIOPS_CACHE/artifacts/nerdctl-<version>-linux-<arch>.tar.gz (+ .sha256):
# nerdctl and the two rootless helper scripts at the top level. Only the side
# by side benchmark needs it: kubespray's containerd role always installs
# nerdctl, and no upstream release download is reachable here. The Go module
# proxy serves nerdctl's dependencies but not the nerdctl module itself.
# Prints the tarball path. Cached by a hash of this script, the archive's
# pinned sha256 and the Go version; runs at nice 10 at least.
. "$(dirname "$0")/lib.sh"

if (($(nice) < 10)); then
  exec nice -n $((10 - $(nice))) "$0" "$@"
fi

command -v go >/dev/null || die "Go is required to build nerdctl (go not found on PATH)"
version=${NERDCTL_VERSION#v}
arch=$(go env GOARCH)
tarball="$CRIOPS_CACHE/artifacts/nerdctl-$version-linux-$arch.tar.gz"
key=$(recipe_hash "${BASH_SOURCE[0]}" <(echo "$NERDCTL_SHA256 $(go env GOVERSION)"))

if build_is_current "nerdctl-$version" "$key" "$tarball.sha256"; then
  log "nerdctl $version tarball is current: $tarball"
  echo "$tarball"
  exit 0
fi

archive=$(CRIOPS_SOURCE_MIRROR=${CRIOPS_PEERS_MIRROR:-} fetch_source NERDCTL)
work="$CRIOPS_CACHE/build/nerdctl-$version"
rm -rf "$work"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
unpack_source "$archive" "$work/src"

go_env
export CGO_ENABLED=0 GOTOOLCHAIN=local
umask 022
log "building nerdctl $version"
mkdir -p "$work/root"
# The version stamps of upstream's Makefile.
ldflags="-s -w -X github.com/containerd/nerdctl/v2/pkg/version.Version=$NERDCTL_VERSION"
ldflags+=" -X github.com/containerd/nerdctl/v2/pkg/version.Revision=$NERDCTL_COMMIT"
(cd "$work/src" && go build -trimpath -ldflags "$ldflags" -o "$work/root/nerdctl" ./cmd/nerdctl)
install -m 0755 "$work/src/extras/rootless/containerd-rootless.sh" \
  "$work/src/extras/rootless/containerd-rootless-setuptool.sh" "$work/root/"

"$work/root/nerdctl" --version | grep -qF "version $version" ||
  die "the built nerdctl does not say $version: $("$work/root/nerdctl" --version)"
mkdir -p "$(dirname "$tarball")"
release_tarball "$work/root" "$tarball" "$source_epoch" \
  nerdctl containerd-rootless.sh containerd-rootless-setuptool.sh
record_build "nerdctl-$version" "$key"
log "nerdctl $version built in ${SECONDS}s: $tarball"
echo "$tarball"
