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

# Content hash of the given files: a cache key that changes with a recipe.
recipe_hash() { cat "$@" | sha256sum | cut -c1-16; }
