#!/usr/bin/env bash
# Build crictl and critest of cri-tools $CRI_TOOLS_V1ALPHA2_VERSION, the last
# generation that speaks CRI v1alpha2 (the API of the archived runtimes), from
# the pinned source archive with criops' patches in hack/patches/, into
#   $CRIOPS_BIN/cri-tools-<version>/{crictl,critest}   run from the controller
#   $CRIOPS_CACHE/artifacts/{crictl,critest}-<version>-linux-<arch>.tar.gz
#                                                     (+ .sha256) for nodes
# The tarballs are shaped as upstream's releases (the binary alone at the top),
# which is what the cri_tools role's url source installs.
# Prints the tarball paths. Cached by a hash of this script, the patches, the
# archive's pinned sha256 and the Go version: a no-op when that is unchanged.
. "$(dirname "$0")/lib.sh"

version=$CRI_TOOLS_V1ALPHA2_VERSION
arch=$(go env GOARCH)
patches=("$CRIOPS_ROOT/hack/patches/cri-tools-$version"/*.patch)
out="$CRIOPS_BIN/cri-tools-$version"
artifacts="$CRIOPS_CACHE/artifacts"
tarballs=("$artifacts/crictl-$version-linux-$arch.tar.gz" "$artifacts/critest-$version-linux-$arch.tar.gz")
key=$(recipe_hash "${BASH_SOURCE[0]}" "${patches[@]}" <(echo "$CRI_TOOLS_V1ALPHA2_SHA256 $(go env GOVERSION)"))

if build_is_current "cri-tools-$version" "$key" "$out/crictl" "$out/critest" "${tarballs[0]}.sha256" \
  "${tarballs[1]}.sha256"; then
  log "cri-tools $version is current: $out"
  printf '%s\n' "${tarballs[@]}"
  exit 0
fi

archive=$(fetch_source CRI_TOOLS_V1ALPHA2)
work="$CRIOPS_CACHE/build/cri-tools-$version"
rm -rf "$work"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
# GOPATH mode, as v1.13 was built: it predates go.mod and imports itself as
# github.com/kubernetes-sigs/cri-tools, with its dependencies in vendor/.
src="$work/gopath/src/github.com/kubernetes-sigs/cri-tools"
unpack_source "$archive" "$src" "${patches[@]}"

export GOPATH="$work/gopath" GO111MODULE=off GOFLAGS='' GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0
# What upstream's Makefile stamps: the tag without its "v".
ldflags="-X github.com/kubernetes-sigs/cri-tools/pkg/version.Version=${version#v}"
log "building crictl and critest $version (GOPATH mode)"
mkdir -p "$work/bin"
(cd "$src" && go build -trimpath -ldflags "$ldflags" -o "$work/bin/crictl" ./cmd/crictl)
# critest is a compiled ginkgo test suite, as upstream builds it.
(cd "$src" && go test -c -trimpath -ldflags "$ldflags" -o "$work/bin/critest" ./cmd/critest)
chmod 0755 "$work/bin"/*
[[ $("$work/bin/crictl" --version) == "crictl version ${version#v}" ]] ||
  die "the built crictl does not say version ${version#v}"
# The suite must load and list its specs (a dry run talks to no runtime).
"$work/bin/critest" -ginkgo.dryRun -ginkgo.noColor >"$work/dry-run.log" 2>&1 ||
  die "critest $version does not list its specs: $(tail -5 "$work/dry-run.log")"

mkdir -p "$artifacts"
for binary in crictl critest; do
  release_tarball "$work/bin" "$artifacts/$binary-$version-linux-$arch.tar.gz" "$source_epoch" "$binary"
done
rm -rf "$out.tmp" && mkdir -p "$out.tmp"
cp -p "$work/bin/crictl" "$work/bin/critest" "$out.tmp/"
rm -rf "$out" && mv "$out.tmp" "$out"
record_build "cri-tools-$version" "$key"
log "cri-tools $version ready in ${SECONDS}s: $out"
printf '%s\n' "${tarballs[@]}"
