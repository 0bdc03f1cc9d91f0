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
# Go's build cache with the rest, not in ~/.cache/go-build (a build script may
# still give itself one of its own).
export GOCACHE="${GOCACHE:-$CRIOPS_CACHE/gocache}"

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

# The source mirror fetch_source reads pinned archives from, as a base URL:
# $CRIOPS_SOURCE_MIRROR (file://, http:// or https://; a bare absolute path is
# taken as file://), else the shared/sources folder beside the checkout when it
# holds a SHA256SUMS. Empty when there is none: fetch_source then uses the
# upstream URLs.
source_mirror() {
  local local_mirror="$CRIOPS_ROOT/../shared/sources"
  if [[ -n ${CRIOPS_SOURCE_MIRROR:-} ]]; then
    case $CRIOPS_SOURCE_MIRROR in
      /*) echo "file://${CRIOPS_SOURCE_MIRROR%/}" ;;
      *) echo "${CRIOPS_SOURCE_MIRROR%/}" ;;
    esac
  elif [[ -f $local_mirror/SHA256SUMS ]]; then
    echo "file://$(cd "$local_mirror" && pwd)"
  fi
}

# sha256_check FILE SUM NAME: die unless FILE's sha256 is SUM.
sha256_check() {
  local actual
  actual=$(sha256sum "$1" | cut -d' ' -f1)
  [[ $actual == "$2" ]] ||
    die "sha256 mismatch for $3 ($1): expected $2, got $actual; refusing to use it"
}

# fetch_source PIN: the path in $CRIOPS_CACHE/sources of the source archive
# pinned in hack/versions.env as ${PIN}_ARCHIVE, ${PIN}_SHA256 and ${PIN}_URL.
# Fetched with curl from the source mirror (else the upstream URL) when not
# cached; its sha256 is checked on every call, cached or not.
fetch_source() {
  local archive_var="${1}_ARCHIVE" sum_var="${1}_SHA256" url_var="${1}_URL"
  local archive=${!archive_var} sum=${!sum_var} url mirror
  local dest="$CRIOPS_CACHE/sources/$archive"
  if [[ ! -s $dest ]]; then
    mirror=$(source_mirror)
    url=${mirror:+$mirror/$archive}
    url=${url:-${!url_var}}
    log "fetching $archive from $url"
    mkdir -p "$CRIOPS_CACHE/sources"
    curl -fsSL --retry 3 -o "$dest.part" "$url" || {
      rm -f "$dest.part"
      die "cannot fetch $archive from $url"
    }
    # Checked before it enters the cache: a wrong download is never kept.
    (sha256_check "$dest.part" "$sum" "$archive from $url") || {
      rm -f "$dest.part"
      exit 1
    }
    mv "$dest.part" "$dest"
  fi
  sha256_check "$dest" "$sum" "$archive (cached; delete it to fetch it again)"
  echo "$dest"
}

# release_tarball DIR TARBALL EPOCH MEMBER...: a deterministic gzipped tar of
# the MEMBERs of DIR at TARBALL (sorted, owners 0, every mtime EPOCH, modes as
# they are, setuid bits included; gzip without a timestamp), with
# TARBALL.sha256 beside it. Both are renamed into place: a reader never sees
# half a file.
release_tarball() {
  local dir=$1 tarball=$2 epoch=$3
  shift 3
  tar -C "$dir" --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    --format=gnu -cf - "$@" | gzip -n -9 >"$tarball.tmp"
  mv "$tarball.tmp" "$tarball"
  (cd "$(dirname "$tarball")" && sha256sum "$(basename "$tarball")") >"$tarball.sha256.tmp"
  mv "$tarball.sha256.tmp" "$tarball.sha256"
}

# unpack_source ARCHIVE DIR [PATCH...]: the archive's one top directory
# unpacked as DIR, then each PATCH applied in order with `patch -p1`. Sets
# source_epoch to the archive's first entry's mtime (for `git archive`
# trees: the tagged commit's time), the mtime release_tarball can stamp.
source_epoch=
unpack_source() {
  local archive=$1 dir=$2 patch stamp
  shift 2
  mkdir -p "$dir"
  tar -C "$dir" --strip-components=1 --no-same-owner -xzf "$archive"
  stamp=$(TZ=UTC tar --full-time -tvzf "$archive" | awk 'NR == 1 { print $4 " " $5 }')
  # shellcheck disable=SC2034 # read by the scripts that source this file
  source_epoch=$(date -u -d "$stamp" +%s)
  for patch; do
    patch -d "$dir" -p1 --forward --batch --quiet <"$patch" ||
      die "patch $(basename "$patch") does not apply to $(basename "$archive")"
  done
}

# build_lock NAME: hold an exclusive lock for building NAME until the calling
# script exits, so two runs never build into the same directory at once.
build_lock() {
  mkdir -p "$CRIOPS_CACHE/build"
  exec {build_lock_fd}>"$CRIOPS_CACHE/build/$1.lock"
  flock "$build_lock_fd"
}

# build_is_current NAME KEY FILE...: true when NAME's last build recorded KEY
# (its recipe hash) and every FILE exists and is not empty. Otherwise NAME's
# build lock is taken and the check made again (a run that held the lock may
# have just built it); false means: build now, then record_build NAME KEY.
build_is_current() {
  local name=$1 key=$2
  shift 2
  _recorded() {
    [[ $(cat "$CRIOPS_CACHE/$name.recipe" 2>/dev/null) == "$key" ]] || return 1
    local file
    for file; do [[ -s $file ]] || return 1; done
  }
  _recorded "$@" && return 0
  build_lock "$name"
  _recorded "$@"
}

# record_build NAME KEY: NAME was built from the recipe KEY.
record_build() { echo "$2" >"$CRIOPS_CACHE/$1.recipe"; }

# image_is_current IMAGE RECIPE: podman holds IMAGE, built from RECIPE (its label).
image_is_current() {
  [[ $(podman image inspect --format '{{index .Labels "dev.criops.recipe"}}' "$1" 2>/dev/null) == "$2" ]]
}

# debootstrap_rootfs SUITE NAME [DEBOOTSTRAP ARGS...]: a minbase Debian root in a new
# directory of the cache (printed), from $CRIOPS_DEBIAN_MIRROR or deb.debian.org.
debootstrap_rootfs() {
  local suite=$1 root
  root=$(mktemp -d "$CRIOPS_CACHE/rootfs-$2.XXXX")
  log "debootstrap $suite into $root"
  debootstrap --variant=minbase "${@:3}" "$suite" "$root" "${CRIOPS_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; die "debootstrap $suite failed (log: $root.log)"; }
  echo "$root"
}

# import_rootfs ROOT IMAGE RECIPE [podman import --change ARGS...]: ROOT as IMAGE, labelled
# with RECIPE; ROOT and its debootstrap log are removed.
import_rootfs() {
  local root=$1 image=$2 recipe=$3
  log "importing $image"
  tar -C "$root" -c . | podman import --quiet "${@:4}" --change "LABEL dev.criops.recipe=$recipe" - "$image" >/dev/null
  rm -rf "$root" "$root.log"
}

# debian_kernel_package META: the versioned linux-image package a Debian
# kernel metapackage (linux-image-amd64, linux-image-cloud-amd64) depends on.
debian_kernel_package() {
  local package
  package=$(apt-cache depends "$1" | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
  [[ -n $package ]] || die "apt-cache knows no $1 (run apt-get update)"
  echo "$package"
}

# deb_unpack DIR PACKAGE...: each package downloaded (not installed) with
# apt-get download into DIR and unpacked into DIR/root.
deb_unpack() {
  local dir=$1 deb
  shift
  mkdir -p "$dir"
  # apt downloads as _apt (unsandboxed, with a warning, where _apt cannot write).
  if [[ $(id -u) == 0 ]]; then chown _apt "$dir"; else chmod 755 "$dir"; fi
  log "downloading $*"
  (cd "$dir" && apt-get download "$@" >/dev/null) || die "apt-get download $* failed"
  for deb in "$dir"/*.deb; do dpkg-deb -x "$deb" "$dir/root"; done
}
