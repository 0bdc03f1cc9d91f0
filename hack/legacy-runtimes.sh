#!/usr/bin/env bash
# Build the artifacts of the archived CRI v1alpha2 runtimes from the pinned
# source archives (hack/versions.env) with criops' patches (hack/patches/):
#   hack/singularity.sh           Singularity, a tarball rooted at /
#   hack/cri-tools-v1alpha2.sh    crictl + critest v1.13 (bin dir + tarballs)
#   hack/singularity-cri.sh       sycri, a tarball rooted at /
#   hack/virtlet.sh               virtlet, vmwrapper, virtletctl, a tarball rooted at /
# and print the artifact paths, one a line. docs/legacy-builds.md tells what
# each holds, the patches and the build times.
# Runs at nice 10 at least. Singularity (a serial make) builds beside the
# three Go builds, which run one after the other: two lanes for two cores,
# of about the same length cold; warm, Singularity's is the longer (it always
# builds with a Go cache of its own). Each build is cached by its own recipe
# hash, so a second run takes seconds.
#   hack/legacy-runtimes.sh --mirror   print the source mirror the builds use,
#                                      or exit 1 when none is configured
. "$(dirname "$0")/lib.sh"

if [[ ${1:-} == --mirror ]]; then
  mirror=$(source_mirror)
  [[ -n $mirror ]] || exit 1
  echo "$mirror"
  exit 0
fi

if (($(nice) < 10)); then
  exec nice -n $((10 - $(nice))) "$0" "$@"
fi

command -v go >/dev/null || die "Go is required to build the legacy runtimes (go not found on PATH)"
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

"$CRIOPS_ROOT/hack/singularity.sh" >"$logs/singularity" &
singularity_pid=$!
{
  "$CRIOPS_ROOT/hack/cri-tools-v1alpha2.sh" >"$logs/cri-tools"
  "$CRIOPS_ROOT/hack/singularity-cri.sh" >"$logs/singularity-cri"
  "$CRIOPS_ROOT/hack/virtlet.sh" >"$logs/virtlet"
} &
go_pid=$!

failed=()
wait "$singularity_pid" || failed+=(singularity)
wait "$go_pid" || failed+=("cri-tools/singularity-cri/virtlet")
((${#failed[@]} == 0)) || die "legacy runtime builds failed: ${failed[*]} (see the log above)"

echo "$CRIOPS_BIN/cri-tools-$CRI_TOOLS_V1ALPHA2_VERSION"
cat "$logs/cri-tools" "$logs/singularity" "$logs/singularity-cri" "$logs/virtlet"
