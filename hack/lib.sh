# Shared helpers for hack/ scripts. Sourced, never executed.
# shellcheck shell=bash
set -euo pipefail

CRIOPS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/versions.env
. "$CRIOPS_ROOT/hack/versions.env"

# Everything built or downloaded is cached here, outside the work tree, so that
# CI runs and later clones reuse it.
CRIOPS_CACHE="${CRIOPS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/criops}"
CRIOPS_BIN="$CRIOPS_CACHE/bin"
mkdir -p "$CRIOPS_BIN"

log() { printf '[criops %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Go builds from the module proxy share one module cache under the cache dir.
go_env() {
  export GOMODCACHE="$CRIOPS_CACHE/gomod" GOPATH="$CRIOPS_CACHE/gopath" GOFLAGS=-mod=mod
}

# module_source MODULE@VERSION DIR: a writable copy of the module's source in
# DIR (go build rewrites go.mod and go.sum; the module cache is read-only).
# Sets module_time to the version's commit time.
module_time=
module_source() {
  local info
  info=$(go mod download -json "$1")
  mkdir -p "$2"
  cp -r "$(jq -r .Dir <<<"$info")/." "$2/" && chmod -R u+w "$2"
  # shellcheck disable=SC2034 # read by the scripts that source this file
  module_time=$(jq -r .Time "$(jq -r .Info <<<"$info")")
}

# Content hash of the given files: a cache key that changes with a recipe.
recipe_hash() { cat "$@" | sha256sum | cut -c1-16; }
