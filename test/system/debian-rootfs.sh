# shellcheck shell=bash
# The Debian root file system of the systemd mode (run.sh --systemd), sourced by run.sh and
# test/system/systemd.sh. Built with mmdebstrap from this machine's apt sources: systemd as PID 1,
# udev, kmod, Debian's kernel package (its modules and an initramfs-tools initrd that mounts the
# root disk), nothing else. Cached as a directory under .tmp/system/debian (never committed), keyed
# by the package list and the kernel version; a new key builds a new one.
#
#   debian_rootfs KVER   -> prints the path of the cached root directory (builds it when missing)

DEBIAN_DIR="$WORK/debian"
# This machine's apt sources (the kernel the tier boots may come from bookworm-security or -updates).
DEBIAN_SOURCES=${HE_DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
# What the guest needs and nothing more: init (systemd-sysv), udev (device units, module autoload),
# kmod (modprobe, depmod), the kernel and its initrd builder (zstd: initramfs-tools' compressor),
# e2fsprogs (the root file system's fsck and mkfs in the guest are not used, but fsck.ext4 is what
# the initrd runs on the root disk), procps (pidof/ps for the scenario).
DEBIAN_PACKAGES="systemd,systemd-sysv,udev,kmod,initramfs-tools,zstd,e2fsprogs,procps"

debian_rootfs_key() {
  printf '%s|%s|%s\n' "$DEBIAN_PACKAGES" "$1" "v1" | sha256sum | cut -c1-16
}

debian_rootfs() {
  local kver=$1 key dir
  key=$(debian_rootfs_key "$kver")
  dir="$DEBIAN_DIR/rootfs-$key"
  if [ ! -d "$dir" ]; then
    mkdir -p "$DEBIAN_DIR"
    command -v mmdebstrap >/dev/null || skip "mmdebstrap is not installed"
    local t0; t0=$(date +%s)
    log "building the Debian root file system with mmdebstrap (first run only; cached as $dir)"
    # Documentation, manual pages and locales are left out (dpkg path-exclude), so the disk stays small.
    # The initrd loads only what a QEMU virtio disk needs (MODULES=list), so it is built fast and stays small.
    rm -rf "$dir.part"
    mmdebstrap --mode=root --format=directory --variant=essential --include="$DEBIAN_PACKAGES,linux-image-$kver" \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --setup-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d"; printf "MODULES=list\nCOMPRESS=zstd\n" >"$1/etc/initramfs-tools/conf.d/hyperenclave-system-tier"; printf "virtio_pci\nvirtio_blk\next4\n" >"$1/usr/share/initramfs-tools/modules.d/hyperenclave-system-tier"' \
      --customize-hook='rm -rf "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*' \
      bookworm "$dir.part" "$DEBIAN_SOURCES" >"$DEBIAN_DIR/mmdebstrap-$key.log" 2>&1 \
      || { rm -rf "$dir.part"; tail -20 "$DEBIAN_DIR/mmdebstrap-$key.log" >&2; skip "mmdebstrap failed (see $DEBIAN_DIR/mmdebstrap-$key.log)"; }
    mv "$dir.part" "$dir"
    echo "$(( $(date +%s) - t0 ))" >"$DEBIAN_DIR/rootfs-$key.build-seconds"
    log "root file system built in $(cat "$DEBIAN_DIR/rootfs-$key.build-seconds") s ($(du -sm "$dir" | cut -f1) MiB)"
  fi
  echo "$dir"
}
