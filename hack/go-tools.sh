#!/usr/bin/env bash
# Build crictl, critest and ginkgo from the Go module proxy at the versions pinned
# in hack/versions.env, into $CRIOPS_CACHE/bin/<version>/. A second run is a no-op.
. "$(dirname "$0")/lib.sh"

go_env
export CGO_ENABLED=0
out="$CRIOPS_BIN/cri-tools-$CRI_TOOLS_VERSION"

if [[ -x $out/crictl && -x $out/critest && -x $out/ginkgo ]]; then
  log "cri-tools $CRI_TOOLS_VERSION already built in $out"
  exit 0
fi

work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
module_source "sigs.k8s.io/cri-tools@$CRI_TOOLS_VERSION" "$work"
ldflags="-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRI_TOOLS_VERSION"

log "building crictl and critest $CRI_TOOLS_VERSION"
mkdir -p "$out.tmp"
(cd "$work" && go build -trimpath -ldflags "$ldflags" -o "$out.tmp/crictl" ./cmd/crictl)
# critest is a compiled ginkgo test suite, as upstream builds it.
(cd "$work" && go test -c -trimpath -ldflags "$ldflags" -o "$out.tmp/critest" ./cmd/critest)
log "building ginkgo $GINKGO_VERSION"
GOBIN="$out.tmp" go install "github.com/onsi/ginkgo/v2/ginkgo@$GINKGO_VERSION"
rm -rf "$out" && mv "$out.tmp" "$out"
log "cri-tools ready in $out"
