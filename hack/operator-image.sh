#!/usr/bin/env bash
# Build the operator image with podman: localhost/criops-operator:<version>.
# BASE defaults to localhost/criops-slim:bookworm, Debian 12 slim as
# hack/slim-image.sh builds it (no registry is needed); elsewhere pass
# BASE=docker.io/library/debian:bookworm-slim.
. "$(dirname "$0")/lib.sh"
cd "$CRIOPS_ROOT"
. hack/versions.env
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -1)
tag=${1:-localhost/criops-operator:$version}
base=${BASE:-localhost/criops-slim:bookworm}
tools="$CRIOPS_BIN/cri-tools-$CRI_TOOLS_VERSION"
[[ -x $tools/critest ]] || die "$tools/critest is missing: run hack/go-tools.sh"
# The CAs this machine trusts beyond Debian's own (proxies, site mirrors).
site_ca=${SITE_CA_DIR:-/usr/local/share/ca-certificates}
mkdir -p "$site_ca"
log "building $tag from $base"
podman build --quiet -f operator/Containerfile --build-context "cri-tools=$tools" --build-context "site-ca=$site_ca" \
  --build-arg "BASE=$base" -t "$tag" . >/dev/null
echo "$tag"
