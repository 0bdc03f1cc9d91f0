#!/usr/bin/env bash
# The reference roles `make bench` runs beside criops (testworld/bench_peers.py):
# kubespray's containerd role and geerlingguy.containerd, as the archives of
# the commits pinned in hack/versions.env, plus the nerdctl tarball kubespray's
# role installs (hack/nerdctl.sh). Prints NAME=PATH lines: kubespray,
# geerlingguy (the verified archives in $CRIOPS_CACHE/sources), nerdctl,
# containerd (hack/containerd-tarball.sh).
#   hack/peers.sh --mirror   print the peers' mirror ($CRIOPS_PEERS_MIRROR as a
#                            base URL, else shared/peers beside the checkout),
#                            or exit 1 when there is none
# The archives are fetched by fetch_source from that mirror (it is the source
# mirror for these pins), else from their upstream URLs.
. "$(dirname "$0")/lib.sh"

# As for the legacy runtimes' sources (source_mirror): without a mirror named,
# the shared/peers folder beside the checkout, when it holds the pinned archives.
local_peers="$CRIOPS_ROOT/../shared/peers"
if [[ -z ${CRIOPS_PEERS_MIRROR:-} && -f $local_peers/$KUBESPRAY_ARCHIVE && -f $local_peers/$GEERLINGGUY_CONTAINERD_ARCHIVE ]]; then
  CRIOPS_PEERS_MIRROR=$(cd "$local_peers" && pwd)
fi
# hack/nerdctl.sh fetches its archive from the same mirror.
[[ -z ${CRIOPS_PEERS_MIRROR:-} ]] || export CRIOPS_PEERS_MIRROR

if [[ ${1:-} == --mirror ]]; then
  [[ -n ${CRIOPS_PEERS_MIRROR:-} ]] || exit 1
  CRIOPS_SOURCE_MIRROR=$CRIOPS_PEERS_MIRROR source_mirror
  exit 0
fi

# Each in a variable first: a failed fetch or build ends the script (set -e),
# where inside echo's arguments it would print an empty path and succeed.
kubespray=$(CRIOPS_SOURCE_MIRROR=${CRIOPS_PEERS_MIRROR:-} fetch_source KUBESPRAY)
geerlingguy=$(CRIOPS_SOURCE_MIRROR=${CRIOPS_PEERS_MIRROR:-} fetch_source GEERLINGGUY_CONTAINERD)
nerdctl=$("$CRIOPS_ROOT/hack/nerdctl.sh")
containerd=$("$CRIOPS_ROOT/hack/containerd-tarball.sh")
printf '%s\n' "kubespray=$kubespray" "geerlingguy=$geerlingguy" "nerdctl=$nerdctl" "containerd=$containerd"
