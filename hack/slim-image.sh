#!/usr/bin/env bash
# Build localhost/criops-slim:bookworm with debootstrap: what debian:bookworm-slim
# is (minbase, without docs, man pages or locales), the base of the operator
# image here, where no image registry is reachable. Rebuilt only when this
# recipe changes (its hash is stored as an image label).
. "$(dirname "$0")/lib.sh"

recipe=$(recipe_hash "$0" "$CRIOPS_ROOT/hack/lib.sh")
image=localhost/criops-slim:bookworm
if image_is_current "$image" "$recipe"; then
  log "$image is current"
  exit 0
fi
root=$(debootstrap_rootfs bookworm slim-bookworm)
# The paths Debian's slim images leave out: dpkg skips them in later installs too.
cat >"$root/etc/dpkg/dpkg.cfg.d/criops-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/man/*
CFG
find "$root"/usr/share/doc -mindepth 2 -not -name copyright -not -type d -delete
find "$root"/usr/share/doc -mindepth 1 -type d -empty -delete
rm -rf "$root"/usr/share/{groff,info,linda,lintian,locale,man}/* \
  "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*
: >"$root/etc/machine-id"
import_rootfs "$root" "$image" "$recipe" --change 'CMD ["bash"]'
