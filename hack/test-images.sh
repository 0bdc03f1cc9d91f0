#!/usr/bin/env bash
# Build the small OCI images that the tests and critest pull, from Debian
# packages only (busybox, the few programs critest runs that busybox lacks,
# nginx, and small programs compiled here), and push them to the local registry
# under upstream repository paths: a containerd mirror for registry.k8s.io or
# gcr.io pointed at that registry then serves them with no internet. Skipped
# when this recipe is unchanged and the registry still has them.
. "$(dirname "$0")/lib.sh"

here="$CRIOPS_ROOT/hack/test-images"
stamp="$CRIOPS_CACHE/test-images.recipe"
recipe=$(recipe_hash "$0" "$here"/Containerfile.* "$here"/*.c "$here"/*.conf)
# Local build names; only these are ever removed from podman's store.
prefix=localhost/criops-test-images

# Go's name for this architecture: critest pulls hostnet-nginx-<GOARCH>.
arch=$(dpkg --print-architecture)
case $arch in
  i386) goarch=386 ;;
  armhf) goarch=arm ;;
  ppc64el) goarch=ppc64le ;;
  *) goarch=$arch ;;
esac

# Image (Containerfile.<name>; its context, $work/<name>, is prepared below),
# the image it is built FROM ("-": none), then where it is pushed
# (repository:tag). An image comes after the one it is built from. A name
# "<name>:<version>" builds Containerfile.<name> with VERSION=<version>, so that
# versions upstream ships as distinct images stay distinct (critest counts the
# tags of pause:3.9, and the sandbox image pause:3.10 must not be among them).
#  name           from     pushed as
images=(
  "busybox        -        e2e-test-images/busybox:1.29-2 criops/busybox:1.0 library/busybox:1.28"
  "webserver      busybox  criops/webserver:1.0 e2e-test-images/httpd:2.4.39-4"
  "httpd          webserver library/httpd:latest"
  "nginx          busybox  e2e-test-images/nginx:1.14-2 library/nginx:latest"
  "hostnet-nginx  nginx    k8s-staging-cri-tools/hostnet-nginx-$goarch:latest cri-tools/hostnet-nginx:latest"
  "nonewprivs     busybox  e2e-test-images/nonewprivs:1.3 google_containers/nonewprivs:1.2"
  "pause:3.10     -        pause:3.10"
  "pause:3.9      -        pause:3.9"
)

# critest v1.13 (CRI v1alpha2, for singularity_cri) names the same images by
# their older upstream names: busybox:1.28, httpd, nginx (docker.io, that is
# library/ on a registry), gcr.io/cri-tools/hostnet-nginx,
# gcr.io/google_containers/nonewprivs:1.2 and gcr.io/cri-tools/test-image-*;
# each image above is pushed under those names too (a registry mirror for
# docker.io and gcr.io then serves them). Its gcr.io/cri-tools/test-image-digest
# is pinned by a digest of upstream's image, which no rebuild reproduces.
#
# critest's image-manager images, all under k8s-staging-cri-tools/, built from
# busybox. Each repository is a distinct image (its own /image-<name>): CRI
# RemoveImage drops an image with all its tags, and critest runs specs in
# parallel, so a shared image would vanish under another spec. Tags of one row
# share one image, as critest expects of test-image-tags. USER "-" leaves the
# user unset; "extra" names a function that adds files.
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

# Debian packages unpacked into one tree, from which the images take the files
# listed in `files`. The packages after the first line only provide the shared
# libraries of those programs and the dynamic loader; a library found in none
# of them stops the build with its name.
packages=(
  busybox util-linux procps nginx nginx-common
  libc6 libcrypt1 libpcre2-8-0 libssl3 zlib1g
  libproc2-0 libsystemd0 libcap2 libgcrypt20 libgpg-error0 liblz4-1 liblzma5 libzstd1
)

# Files that an image's rootfs/ takes from those packages, at the same path. A
# program brings the shared libraries it needs, transitively, and its dynamic
# loader, except those the busybox base already has (so busybox rows first).
#  image    file
files=(
  # Debian's dynamically linked busybox, not busybox-static: the static build's
  # shell runs applets in-process before any PATH lookup, so a command the
  # runtime masked (critest MaskedPaths masks /bin/ls) would still run.
  "busybox  /bin/busybox"
  # Commands critest execs that Debian's busybox has no applet for.
  "busybox  /usr/bin/ipcs"  # NamespaceOption HostIpc
  "busybox  /usr/bin/pgrep" # execSync with timeout
  "nginx    /usr/sbin/nginx"
  "nginx    /etc/nginx/mime.types"
  "nginx    /usr/share/nginx/html/index.html"
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

# The packages from the configured Debian mirror; refresh the package lists
# only when a candidate version is no longer there.
mkdir -p "$work/debs"
apt_download() {
  (cd "$work/debs" && apt-get download -q -o APT::Sandbox::User=root "${packages[@]}") >"$work/apt.log" 2>&1
}
if ! apt_download; then
  log "apt-get download failed; running apt-get update"
  if ! { apt-get update -q >>"$work/apt.log" 2>&1 && apt_download; }; then
    cat "$work/apt.log" >&2
    die "cannot download ${packages[*]}"
  fi
fi
debroot="$work/debroot"
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$debroot"; done
for pkg in busybox util-linux procps nginx; do
  log "$pkg $(dpkg-deb -f "$work/debs/${pkg}_"*.deb Version)"
done

# Where the dynamic loader looks for libraries when there is no ld.so.cache
# (Debian's system search path): the images have none.
multiarch=$(gcc -print-multiarch)
libdirs=("lib/$multiarch" "usr/lib/$multiarch" lib usr/lib)

find_lib() { # soname needing-file: the library's path in the package tree
  local dir
  for dir in "${libdirs[@]}"; do
    if [[ -L $debroot/$dir/$1 || -e $debroot/$dir/$1 ]]; then
      echo "$dir/$1"
      return
    fi
  done
  die "$1, needed by /$2, is in none of the unpacked packages: add its package to \`packages\`"
}

# take DEST PATH: copy PATH of the package tree to the same path under DEST. A
# symlink is copied as such, then its target (resolved in the package tree, not
# on this host); an ELF file brings its dynamic loader and NEEDED libraries.
# Whatever DEST or the busybox base already has is skipped.
take() {
  local dest=$1 rel=${2#/} target interp lib path
  [[ -L $dest/$rel || -e $dest/$rel || -L $rootfs/$rel || -e $rootfs/$rel ]] && return
  [[ -L $debroot/$rel || -e $debroot/$rel ]] || die "/$rel is in none of the unpacked packages"
  (cd "$debroot" && cp -P --parents "$rel" "$dest/")
  if [[ -L $debroot/$rel ]]; then
    target=$(readlink "$debroot/$rel")
    [[ $target == /* ]] || target=$(dirname "/$rel")/$target
    take "$dest" "$(realpath -ms "$target")"
    return
  fi
  readelf -h "$debroot/$rel" >/dev/null 2>&1 || return 0
  interp=$(readelf -lW "$debroot/$rel" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  [[ -z $interp ]] || take "$dest" "$interp"
  for lib in $(readelf -dW "$debroot/$rel" | sed -n 's/.*(NEEDED).*\[\(.*\)\]$/\1/p'); do
    path=$(find_lib "$lib" "$rel")
    take "$dest" "$path"
  done
}

# The busybox root file system, shared by every image but pause.
rootfs="$work/busybox/rootfs"
mkdir -p "$rootfs"/{bin,etc,root,tmp}
chmod 700 "$rootfs/root"
chmod 1777 "$rootfs/tmp"
for row in "${files[@]}"; do
  read -r image file <<<"$row"
  mkdir -p "$work/$image/rootfs"
  take "$work/$image/rootfs" "$file"
done
# Applets as hard links, as `busybox --install` makes them and the upstream
# image has them: the runtime bind-mounts over a masked path, and through a
# symlink that would mask busybox itself, hence every applet.
for applet in $("$debroot/bin/busybox" --list); do
  [[ $applet == busybox ]] || ln "$rootfs/bin/busybox" "$rootfs/bin/$applet"
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

mkdir -p "$work/webserver/www" "$work/httpd"
echo 'criops web server OK' >"$work/webserver/www/index.html"

# nginx: Debian's binary, mime.types and welcome page (taken above) plus our
# configuration. Its temporary files go under /var/lib/nginx (compiled in);
# /var/run is Debian's symlink to /run, where critest reads nginx.pid.
nginx_root="$work/nginx/rootfs"
mkdir -p "$nginx_root"/{etc/nginx/conf.d,var/lib/nginx,run}
ln -s /run "$nginx_root/var/run"
cp "$here/nginx.conf" "$nginx_root/etc/nginx/nginx.conf"
cp "$here/nginx-default.conf" "$nginx_root/etc/nginx/conf.d/default.conf"
mkdir -p "$work/hostnet-nginx"
cp "$here/hostnet-nginx.conf" "$work/hostnet-nginx/default.conf"

mkdir -p "$work/nonewprivs" "$work/pause"
gcc -static -Os -s -Wall -Wextra -o "$work/nonewprivs/nnp" "$here/nnp.c"
gcc -static -Os -s -Wall -Wextra -o "$work/pause/pause" "$here/pause.c"

# --timestamp 0 fixes creation and file times, so an unchanged recipe rebuilds
# to the same digests; --pull=never: FROM is scratch or our own local image.
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

for row in "${images[@]}"; do
  read -r name from refs <<<"$row"
  log "building $name"
  args=()
  [[ $from == - ]] || args=(--build-arg "BASE=$prefix/$from:build")
  containerfile=${name%%:*}
  if [[ $name == *:* ]]; then
    args+=(--build-arg "VERSION=${name#*:}")
    name="$containerfile-${name#*:}"
  fi
  build "$name" "$containerfile" "$work/$containerfile" "${args[@]}"
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
  build "$repo" critest "$ctx" --build-arg "BASE=$prefix/busybox:build" --build-arg "USER=$user"
  refs=()
  for tag in ${tags//,/ }; do refs+=("k8s-staging-cri-tools/$repo:$tag" "cri-tools/$repo:$tag"); done
  push "$repo" "${refs[@]}"
done

echo "$recipe" >"$stamp"
log "test images pushed to $REGISTRY_ADDR"
