#!/usr/bin/env bash
# A real Linux kernel for the Kata host check's test boot: Debian's
# linux-image-amd64, downloaded (not installed) and unpacked into the cache.
# Prints the path of the kernel image. A Kata artifact brings its own guest
# kernel; this one stands in where no artifact can be fetched.
. "$(dirname "$0")/lib.sh"
dest="$CRIOPS_CACHE/guest-kernel"
if [[ -s $dest/vmlinuz ]]; then
  echo "$dest/vmlinuz"
  exit 0
fi
package=$(debian_kernel_package linux-image-amd64)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
deb_unpack "$work" "$package"
mkdir -p "$dest"
cp "$work"/root/boot/vmlinuz-* "$dest/vmlinuz.tmp"
mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
echo "$dest/vmlinuz"
