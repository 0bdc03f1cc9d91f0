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
package=$(apt-cache depends linux-image-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9].*\)/\1/p' | head -1)
[[ -n $package ]] || die "apt-cache knows no linux-image-amd64 (run apt-get update)"
work=$(mktemp -d)
chmod 755 "$work"  # apt downloads as _apt
trap 'rm -rf "$work"' EXIT
log "downloading $package for the guest kernel"
(cd "$work" && apt-get download "$package" >/dev/null) || die "apt-get download $package failed"
dpkg-deb -x "$work"/*.deb "$work/root"
mkdir -p "$dest"
cp "$work"/root/boot/vmlinuz-* "$dest/vmlinuz.tmp"
mv "$dest/vmlinuz.tmp" "$dest/vmlinuz"
echo "$dest/vmlinuz"
