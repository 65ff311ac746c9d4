# shellcheck shell=bash
# systemd mode of the system tier (run.sh --systemd), sourced by run.sh after its builds (driver,
# hectl, image, make install). A real Debian system: the cached mmdebstrap root file system
# (test/system/debian-rootfs.sh) plus our package as `make install DESTDIR=` laid it out, the
# driver under /lib/modules/$KVER/updates (depmod), its parameters in /etc/modprobe.d, the image
# (signed by a key made for this run) in /lib/firmware/hyperenclave, Node from the host, on an ext4
# virtio disk. Debian's kernel and initramfs-tools initrd from that root boot it; systemd is PID 1
# and starts hyperenclave.service like on any host. A test-only unit (he-scenario.service, after
# multi-user.target) reports on the serial console and drives three boots of the same machine
# (one QEMU process: the guest reboots, swtpm keeps its state and the TPM is reset):
#   boot 1: the unit at boot; start again; stop (disable); start again; reboot (shutdown disables)
#   boot 2: the unit at boot again (measured once more, the sealed root of boot 1 unseals); the
#           image is replaced by one signed with another key; reboot
#   boot 3: the unit fails at boot, the machine finishes booting; then the image is removed and
#           the unit started again (fails again); power off
# judge.mjs --mode systemd judges the console (checks systemd-*).
# shellcheck source=test/system/debian-rootfs.sh
. "$HERE/debian-rootfs.sh"

SD_DIR="$WORK/systemd"
HE_SCENARIO_TIMEOUT=${HE_SYSTEMD_TIMEOUT:-1800}

systemd_need_packages() {
  command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
  command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
  command -v depmod >/dev/null || need+=(kmod)
  command -v systemctl >/dev/null || need+=(systemd)
  command -v openssl >/dev/null || need+=(openssl)
  return 0
}

systemd_check_packages() {
  local t; for t in mmdebstrap mkfs.ext4 depmod systemctl openssl; do command -v $t >/dev/null || skip "$t is not installed"; done
  [ "$(id -u)" = 0 ] || skip "the systemd mode builds a root file system with mmdebstrap --mode=root and needs root"
}

# systemd_sign_images: the image signed by a key made for this run (the config names its public
# key as imageSigner), and the same image signed by another key (the "signature wrong" case).
systemd_sign_images() {
  mkdir -p "$SD_DIR/keys"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SD_DIR/keys/signer.pem" 2>/dev/null
  openssl pkey -in "$SD_DIR/keys/signer.pem" -pubout -out "$SD_DIR/keys/signer.pub.pem"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$SD_DIR/keys/other.pem" 2>/dev/null
  node "$ROOT/dist/firmware-tools/cli.js" sign "$IMAGE_CONTAINER" --key "$SD_DIR/keys/signer.pem" -o "$SD_DIR/hyperenclave.img" >/dev/null \
    && node "$ROOT/dist/firmware-tools/cli.js" sign "$IMAGE_CONTAINER" --key "$SD_DIR/keys/other.pem" -o "$SD_DIR/wrong-signer.img" >/dev/null \
    || die "signing the image failed"
  "${CLI[@]}" firmware reference "$SD_DIR/hyperenclave.img" --banks sha1,sha256,sha384 -o "$SD_DIR/reference-values.json" >/dev/null \
    || die "firmware reference failed"
}

# systemd_build_disk: the root file system of this run on $SD_DIR/disk.img (ext4, label heroot).
systemd_build_disk() {
  local base root t0 kver=$KVER_PKG
  t0=$(date +%s)
  base=$(debian_rootfs "$kver")
  root="$SD_DIR/root"
  rm -rf "$root"
  cp -a "$base" "$root"
  # The package as `make install DESTDIR=` laid it out; tar keeps Debian's merged-/usr links (/lib -> usr/lib).
  tar -C "$INSTALL_ROOT" -c . | tar -C "$root" -x --keep-directory-symlink
  # Node from the host (the Debian root has none) and the libraries it links that the root lacks.
  cp "$NODE_BIN" "$root/usr/bin/node"
  local lib
  for lib in $(ldd "$NODE_BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    [ -e "$root$lib" ] || { mkdir -p "$root$(dirname "$lib")"; cp -L "$lib" "$root$lib"; }
  done
  # The driver where modprobe finds it; its parameters for this machine's memmap= reservation.
  install -D -m 0644 "$DRV_OUT/hyperenclave.ko" "$root/lib/modules/$kver/updates/hyperenclave.ko"
  depmod -b "$root" "$kver"
  printf 'options hyperenclave reserved_base=%s reserved_size=%s pcr=%s\n' "$RESERVED_BASE" "$RESERVED_SIZE" "$PCR" >"$root/etc/modprobe.d/hyperenclave.conf"
  # The image and the key it must be signed with.
  install -D -m 0644 "$SD_DIR/hyperenclave.img" "$root/lib/firmware/hyperenclave/hyperenclave.img"
  install -m 0644 "$SD_DIR/keys/signer.pub.pem" "$root/etc/hyperenclave/image-signer.pem"
  node -e 'const fs = require("fs"); const c = JSON.parse(fs.readFileSync(process.argv[1], "utf8")); c.imageSigner = "/etc/hyperenclave/image-signer.pem"; fs.writeFileSync(process.argv[1], JSON.stringify(c, null, 2) + "\n")' \
    "$root/etc/hyperenclave/config.json"
  # The machine: root on the virtio disk, a persistent journal, no login prompt on the console.
  printf 'LABEL=heroot / ext4 rw,errors=remount-ro 0 1\n' >"$root/etc/fstab"
  echo hyperenclave-guest >"$root/etc/hostname"
  mkdir -p "$root/var/log/journal"
  systemctl --root="$root" enable hyperenclave.service >/dev/null 2>&1 || die "systemctl --root enable hyperenclave.service failed"
  systemctl --root="$root" mask serial-getty@ttyS0.service getty@tty1.service >/dev/null 2>&1 || true
  # Test-only pieces: hectl, the scenario and its unit, the wrongly signed image.
  install -m 0755 "$WORK/hectl" "$root/usr/local/bin/hectl"
  install -D -m 0644 "$SD_DIR/wrong-signer.img" "$root/opt/he/wrong-signer.img"
  install -m 0755 "$HERE/systemd-scenario.sh" "$root/usr/local/sbin/he-scenario"
  printf 'PCR=%s\nHAK_PCR=%s\n' "$PCR" "$HAK_PCR" >"$root/etc/he-scenario.conf"
  cat >"$root/etc/systemd/system/he-scenario.service" <<'EOF'
[Unit]
Description=HyperEnclave system tier scenario (test only)
After=multi-user.target

[Service]
# simple, not oneshot: the boot counts as finished while it runs (is-system-running --wait)
Type=simple
ExecStart=/usr/local/sbin/he-scenario
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no

[Install]
WantedBy=multi-user.target
EOF
  systemctl --root="$root" enable he-scenario.service >/dev/null 2>&1 || die "systemctl --root enable he-scenario.service failed"
  cp "$root/boot/vmlinuz-$kver" "$SD_DIR/vmlinuz"
  cp "$root/boot/initrd.img-$kver" "$SD_DIR/initrd.img"
  local mb=$(( $(du -sm "$root" | cut -f1) + 256 ))
  rm -f "$SD_DIR/disk.img"
  mkfs.ext4 -q -F -L heroot -d "$root" "$SD_DIR/disk.img" "${mb}M" >"$SD_DIR/mkfs.log" 2>&1 || { cat "$SD_DIR/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
  [ "$KEEP" = 1 ] || rm -rf "$root"
  log "Debian disk ${mb} MiB built in $(( $(date +%s) - t0 )) s (root file system cache: $base)"
}

systemd_main() {
  [ -n "$IMAGE_CONTAINER" ] || die "the systemd mode needs the image (no --no-image)"
  mkdir -p "$SD_DIR"
  systemd_sign_images
  systemd_build_disk
  start_swtpm
  # No -no-reboot: the guest's reboots reset the machine (the TPM too) in the same QEMU process.
  QEMU_REBOOT=()
  QEMU_NET=(-nic none)
  QEMU_BOOT=(-kernel "$SD_DIR/vmlinuz" -initrd "$SD_DIR/initrd.img"
    -append "console=ttyS0 root=/dev/vda rw loglevel=3 panic=-1 $MEMMAP nokaslr systemd.show_status=false fsck.mode=skip"
    -drive file="$SD_DIR/disk.img",format=raw,if=virtio)
  TIMEOUT=$HE_SCENARIO_TIMEOUT
  log "booting the Debian system three times ($KVER_PKG, timeout ${TIMEOUT}s)"
  boot_guest "$CONSOLE"
  tr -d '\r' <"$CONSOLE" >"$WORK/console.txt"
  node "$HERE/judge.mjs" "$WORK/console.txt" "$WORK/out" --mode systemd --timed-out "$TIMED_OUT" --pcr "$PCR" --hak-pcr "$HAK_PCR" \
    --reserved-base "$RESERVED_BASE" --reserved-size "$RESERVED_SIZE" --image "$SD_DIR/hyperenclave.img" \
    --reference "$SD_DIR/reference-values.json" --boot-secs "$BOOT_S" --expected "$HERE/expected-checks.txt"
}
