#!/usr/bin/env bash
# Build the bootable qcow2 guest images virtlet runs, from Debian packages only
# (no cloud images from the internet):
#   $CRIOPS_CACHE/vm-images/vm-busybox.qcow2   boots, takes a DHCP lease, idles
#   $CRIOPS_CACHE/vm-images/vm-httpd.qcow2     the same, and serves HTTP on :80
#                                              and :12003 (busybox httpd)
# (+ .sha256 each). virtlet boots the qcow2 as the VM's disk through SeaBIOS:
# an MBR and one FAT partition with syslinux, Debian's cloud kernel (console
# ttyS0: virtlet's container log is the serial console) and a busybox-static
# initramfs with the virtio modules eth0 needs; hack/vm-images/init is its
# /init. The system lives in the initramfs alone, so the disk is never written.
# Each image is then pushed to the local registry as the one layer of
# criops/vm-images/<name>:latest, so that nodes download it over plain HTTP
# from http://<registry>/v2/criops/vm-images/<name>/blobs/sha256:<its sha256>
# (inventory/local/group_vars/virtlet.yml); skipped when the registry has it.
# Prints the image paths. Cached by a hash of this script, hack/vm-images/ and
# the Debian package versions used: a no-op when those are unchanged.
. "$(dirname "$0")/lib.sh"

here="$CRIOPS_ROOT/hack/vm-images"
dest="$CRIOPS_CACHE/vm-images"
names=(vm-busybox vm-httpd)
images=("${names[@]/#/$dest/}")
images=("${images[@]/%/.qcow2}")
kernel=$(debian_kernel_package linux-image-cloud-amd64)
# Downloaded: the kernel and busybox. Installed build tools whose bytes land
# in the image: syslinux (its MBR, ldlinux), mtools, dosfstools, qemu-img.
downloaded=("$kernel" busybox-static)
tools=(syslinux syslinux-common mtools dosfstools qemu-utils)
package_versions() {
  local package
  for package in "${downloaded[@]}"; do
    echo "$package=$(apt-cache show --no-all-versions "$package" | sed -n 's/^Version: //p')"
  done
  for package in "${tools[@]}"; do echo "$package=$(dpkg-query -W -f '${Version}' "$package")"; done
}
versions=$(package_versions)
key=$(recipe_hash "${BASH_SOURCE[0]}" "$here"/* <(echo "$versions"))

# push_image NAME: the qcow2 of NAME as a blob of the local registry, with an
# OCI manifest that holds it (unreferenced blobs are the registry's garbage).
push_image() {
  local name=$1 file="$dest/$1.qcow2" repo="criops/vm-images/$1" registry="http://$REGISTRY_ADDR"
  local digest config='{}' config_digest size
  digest=sha256:$(cut -d' ' -f1 "$file.sha256")
  curl -fsS -o /dev/null --head "$registry/v2/$repo/blobs/$digest" 2>/dev/null && return 0
  log "pushing $name to $registry/v2/$repo"
  config_digest=sha256:$(printf '%s' "$config" | sha256sum | cut -d' ' -f1)
  registry_upload "$registry" "$repo" "$config_digest" <(printf '%s' "$config") ||
    die "cannot push $name's config to $registry"
  registry_upload "$registry" "$repo" "$digest" "$file" || die "cannot push $name to $registry"
  size=$(stat -c %s "$file")
  curl -fsS -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @- \
    "$registry/v2/$repo/manifests/latest" >/dev/null <<EOF || die "cannot push $name's manifest to $registry"
{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
 "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "$config_digest", "size": ${#config}},
 "layers": [{"mediaType": "application/vnd.criops.vm-image.qcow2", "digest": "$digest", "size": $size}]}
EOF
}
# registry_upload REGISTRY REPO DIGEST FILE: one monolithic blob upload.
registry_upload() {
  local location
  location=$(curl -fsS -X POST -D - -o /dev/null "$1/v2/$2/blobs/uploads/" | tr -d '\r' |
    sed -n 's/^[Ll]ocation: //p')
  [[ -n $location ]] || return 1
  [[ $location == http* ]] || location="$1$location"
  [[ $location == *\?* ]] && location+="&" || location+="?"
  curl -fsS -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$4" "${location}digest=$3" >/dev/null
}

# Before the build lock: a registry started later would inherit (and hold) it.
"$CRIOPS_ROOT/hack/registry.sh"
if build_is_current vm-images "$key" "${images[@]/%/.sha256}"; then
  log "virtlet guest images are current: $dest"
  for name in "${names[@]}"; do push_image "$name"; done
  printf '%s\n' "${images[@]}"
  exit 0
fi

for tool in syslinux mcopy mkfs.fat sfdisk qemu-img cpio depmod; do
  command -v "$tool" >/dev/null || die "building the guest images needs $tool (run hack/bootstrap.sh)"
done
# Not in the cache: apt-get download writes as _apt, which cannot reach into
# a home directory.
work=$(mktemp -d)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
deb_unpack "$work/debs" "${downloaded[@]}"
debs="$work/debs/root"
kver=${kernel#linux-image-}
# Every time stamp in the images: the kernel's build, fixed by its version.
epoch=$(stat -c %Y "$debs/boot/vmlinuz-$kver")
export SOURCE_DATE_EPOCH=$epoch TZ=UTC

# The modules the guest loads (eth0, the ACPI power button) with what they
# depend on, in load order.
depmod -b "$debs" "$kver"
guest_modules() {
  local module deps dep
  for module in virtio_pci virtio_net button evdev; do
    deps=$(grep "/$module\.ko:" "$debs/lib/modules/$kver/modules.dep") || die "$kernel has no $module module"
    # modules.dep lists a module's dependencies last-loaded first.
    for dep in $(tr ' ' '\n' <<<"${deps#*:}" | tac) "${deps%%:*}"; do echo "$dep"; done
  done | awk '!seen[$0]++'
}

# initramfs_of NAME ROOT: the busybox system of image NAME in ROOT.
initramfs_of() {
  local name=$1 root=$2 module
  mkdir -p "$root"/{bin,etc,lib/modules}
  install -m 0755 "$debs/bin/busybox" "$root/bin/busybox"
  install -m 0755 "$here/init" "$root/init"
  install -m 0755 "$here/udhcpc.script" "$root/etc/udhcpc.script"
  echo "$name" >"$root/etc/criops-vm-image"
  for module in $(guest_modules); do
    install -m 0644 "$debs/lib/modules/$kver/$module" "$root/lib/modules/"
    basename "$module" >>"$root/etc/modules"
  done
  if [[ $name == vm-httpd ]]; then
    mkdir -p "$root/www"
    echo "criops $name" >"$root/www/index.html"
  fi
}

# disk_of BOOT DISK: a disk image with an MBR (syslinux's) and one bootable
# FAT partition at 1 MiB holding the files of BOOT, with syslinux installed.
disk_of() {
  local boot=$1 disk=$2 part="$2.fat" kib
  kib=$(($(du -sk "$boot" | cut -f1) + 1024))
  # --invariant and a fixed volume id: no random or time-based bytes.
  mkfs.fat -C --invariant -i 43524f50 -n CRIOPS "$part" "$kib" >/dev/null
  syslinux --install "$part"
  find "$boot" -exec touch -h -d "@$epoch" {} +
  mcopy -m -i "$part" "$boot"/* ::/
  truncate -s $((1024 + kib))K "$disk"
  # A fixed disk identifier: sfdisk would pick a random one.
  printf 'label: dos\nlabel-id: 0x43524f50\nstart=2048, type=c, bootable\n' | sfdisk -q "$disk"
  dd if=/usr/lib/syslinux/mbr/mbr.bin of="$disk" bs=440 count=1 conv=notrunc status=none
  dd if="$part" of="$disk" bs=1M seek=1 conv=notrunc status=none
}

mkdir -p "$work/boot"
cp "$debs/boot/vmlinuz-$kver" "$work/boot/vmlinuz"
cat >"$work/boot/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0 quiet
EOF
mkdir -p "$dest"
for name in "${names[@]}"; do
  log "building $name"
  initramfs_of "$name" "$work/$name"
  (cd "$work/$name" && find . -exec touch -h -d "@$epoch" {} + &&
    find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --reproducible --quiet) | gzip -n -9 >"$work/boot/initrd.gz"
  disk_of "$work/boot" "$work/$name.raw"
  qemu-img convert -c -O qcow2 "$work/$name.raw" "$dest/$name.qcow2.tmp"
  mv "$dest/$name.qcow2.tmp" "$dest/$name.qcow2"
  (cd "$dest" && sha256sum "$name.qcow2") >"$dest/$name.qcow2.sha256"
done
record_build vm-images "$key"
for name in "${names[@]}"; do push_image "$name"; done
log "virtlet guest images built in ${SECONDS}s from: $(tr '\n' ' ' <<<"$versions")"
printf '%s\n' "${images[@]}"
