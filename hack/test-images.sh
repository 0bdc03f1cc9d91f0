#!/usr/bin/env bash
# Build the small OCI images that the tests and critest pull, from Debian
# packages only (static busybox, a pause binary compiled here), and push them to
# the local registry under upstream repository paths: a containerd mirror for
# registry.k8s.io or gcr.io pointed at that registry then serves them with no
# internet. Skipped when this recipe is unchanged and the registry still has them.
. "$(dirname "$0")/lib.sh"

here="$CRIOPS_ROOT/hack/test-images"
stamp="$CRIOPS_CACHE/test-images.recipe"
recipe=$(recipe_hash "$0" "$here"/Containerfile.* "$here/pause.c")
# Local build names; only these are ever removed from podman's store.
prefix=localhost/criops-test-images

# Image (Containerfile.<name>), then where it is pushed (repository:tag).
# busybox comes first: the others but pause are built FROM it.
images=(
  "busybox    e2e-test-images/busybox:1.29-2 criops/busybox:1.0"
  "webserver  criops/webserver:1.0 e2e-test-images/nginx:1.14-2 e2e-test-images/httpd:2.4.39-4"
  "pause      pause:3.10 pause:3.9"
)

# critest's image-manager images, all under k8s-staging-cri-tools/. Each
# repository is a distinct image (its own /image-<name>): CRI RemoveImage drops an
# image with all its tags, and critest runs specs in parallel, so a shared image
# would vanish under another spec. Tags of one row share one image, as critest
# expects of test-image-tags. USER "-" leaves the user unset; "extra" names a
# function that adds files.
#  repository                      tags      USER               extra
critest=(
  "test-image-latest                latest    -                  -"
  "test-image-tag                   test,all  -                  -"
  "test-image-tags                  1,2,3     -                  -"
  "test-image-1                     latest    -                  -"
  "test-image-2                     latest    -                  -"
  "test-image-3                     latest    -                  -"
  "test-image-user-uid              latest    1002               -"
  "test-image-user-username         latest    www-data           -"
  "test-image-user-uid-group        latest    1003:1003          -"
  "test-image-user-username-group   latest    www-data:www-data  -"
  "test-image-predefined-group      latest    1000               predefined_group"
)

# critest checks that user 1000's supplementary group 50000 comes from the image.
predefined_group() {
  local etc=$1/etc
  mkdir -p "$etc"
  cp "$rootfs/etc/passwd" "$rootfs/etc/group" "$etc/"
  echo 'default-user:x:1000:1000:default-user:/home/default-user:/bin/sh' >>"$etc/passwd"
  printf '%s\n' 'default-user:x:1000:' 'group-defined-in-image:x:50000:default-user' >>"$etc/group"
}

"$CRIOPS_ROOT/hack/registry.sh"

if [[ $(cat "$stamp" 2>/dev/null) == "$recipe" ]] &&
  curl -fsS --max-time 5 "http://$REGISTRY_ADDR/v2/e2e-test-images/busybox/tags/list" 2>/dev/null | grep -q '"1.29-2"'; then
  log "test images are current in $REGISTRY_ADDR"
  exit 0
fi

work=$(mktemp -d "$CRIOPS_CACHE/test-images.XXXX")
built=()
cleanup() {
  rm -rf "$work"
  # The pushed copies are what counts; local ones would only pile up as
  # dangling images on each rebuild.
  ((${#built[@]} == 0)) || podman rmi "${built[@]}" >/dev/null 2>&1 || true
}
trap cleanup EXIT
umask 022 # file modes end up in the layers

# busybox-static from the configured Debian mirror; refresh the package lists
# only when the candidate version is no longer there.
apt_download() { (cd "$work" && apt-get download -q -o APT::Sandbox::User=root busybox-static) >"$work/apt.log" 2>&1; }
if ! apt_download; then
  log "apt-get download busybox-static failed; running apt-get update"
  if ! { apt-get update -q >>"$work/apt.log" 2>&1 && apt_download; }; then
    cat "$work/apt.log" >&2
    die "cannot download busybox-static"
  fi
fi
dpkg-deb -x "$work"/busybox-static_*.deb "$work/deb"
busybox="$work/deb/bin/busybox"
log "busybox $(dpkg-deb -f "$work"/busybox-static_*.deb Version)"

# The busybox root file system, shared by every image but pause.
rootfs="$work/busybox/rootfs"
mkdir -p "$rootfs"/{bin,etc,root,tmp}
chmod 700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"
install -m 755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$busybox" --list); do
  [[ $applet == busybox ]] || ln -s busybox "$rootfs/bin/$applet"
done
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
EOF

mkdir -p "$work/webserver/www"
echo 'criops web server OK' >"$work/webserver/www/index.html"

mkdir -p "$work/pause"
gcc -static -Os -s -Wall -Wextra -o "$work/pause/pause" "$here/pause.c"

# --timestamp 0 fixes creation and file times, so an unchanged recipe rebuilds
# to the same digests; --pull=never: FROM is scratch or our own local base.
build() { # name containerfile context [podman build args...]
  local image="$prefix/$1:build"
  built+=("$image")
  podman build -q --pull=never --layers=false --timestamp 0 \
    -f "$here/Containerfile.$2" -t "$image" "${@:4}" "$3" >/dev/null
}
push() { # name repository:tag...
  local ref
  for ref in "${@:2}"; do
    podman push -q --tls-verify=false "$prefix/$1:build" "docker://$REGISTRY_ADDR/$ref"
  done
}

base="$prefix/busybox:build"
for row in "${images[@]}"; do
  read -r name refs <<<"$row"
  log "building $name"
  build "$name" "$name" "$work/$name" --build-arg "BASE=$base"
  # shellcheck disable=SC2086 # refs is a list
  push "$name" $refs
done

for row in "${critest[@]}"; do
  read -r repo tags user extra <<<"$row"
  ctx="$work/critest/$repo"
  mkdir -p "$ctx/files"
  echo "$repo" >"$ctx/files/image-$repo"
  [[ $extra == - ]] || "$extra" "$ctx/files"
  [[ $user == - ]] && user=
  log "building $repo"
  build "$repo" critest "$ctx" --build-arg "BASE=$base" --build-arg "USER=$user"
  refs=()
  for tag in ${tags//,/ }; do refs+=("k8s-staging-cri-tools/$repo:$tag"); done
  push "$repo" "${refs[@]}"
done

echo "$recipe" >"$stamp"
log "test images pushed to $REGISTRY_ADDR"
