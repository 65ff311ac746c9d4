# shellcheck shell=bash
# UEFI mode of the system tier (run.sh --uefi), sourced by run.sh: q35 + OVMF + swtpm booting a
# unified kernel image (UKI) built here with objcopy from Debian's systemd-boot-efi stub, Debian's
# kernel, the tier's initramfs and the command line, from a GPT disk's EFI system partition.
# Everything is built under .tmp/system/uefi (never committed).

OVMF_CODE=/usr/share/OVMF/OVMF_CODE_4M.fd
OVMF_VARS=/usr/share/OVMF/OVMF_VARS_4M.fd
UKI_STUB=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
UEFI_DIR="$WORK/uefi"

# Packages the mode needs on top of the common ones (appended to run.sh's `need` list).
uefi_need_packages() {
  [ -f "$OVMF_CODE" ] && [ -f "$OVMF_VARS" ] || need+=(ovmf)
  [ -f "$UKI_STUB" ] || need+=(systemd-boot-efi)
  command -v objcopy >/dev/null || need+=(binutils)
  command -v mkfs.vfat >/dev/null || need+=(dosfstools)
  command -v mcopy >/dev/null || need+=(mtools)
  command -v sfdisk >/dev/null || need+=(fdisk)
  return 0
}

uefi_check_packages() {
  [ -f "$OVMF_CODE" ] || skip "$OVMF_CODE missing (package ovmf)"
  [ -f "$UKI_STUB" ] || skip "$UKI_STUB missing (package systemd-boot-efi)"
  local t; for t in objcopy mkfs.vfat mcopy mmd sfdisk; do command -v $t >/dev/null || skip "$t is not installed"; done
}

# A free TCP port on 127.0.0.1 for the verifier: the UKI (initramfs) must name it before the
# verifier starts, since the verifier's policy names the UKI.
uefi_free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# uefi_build_uki OUT CMDLINE: systemd-stub + .osrel + .cmdline + .linux + .initrd (the stub's own
# sections end below 0x20000; .linux and .initrd are placed above them, 16 MiB apart from .linux).
uefi_build_uki() {
  local out=$1 cmdline=$2 osrel="$UEFI_DIR/os-release" cl="$UEFI_DIR/cmdline.$(basename "$1")"
  printf '%s' "$cmdline" >"$cl"
  printf 'ID=hyperenclave-system-tier\nNAME="HyperEnclave system tier"\nVERSION_ID=1\n' >"$osrel"
  local kend=$(( 0x2000000 + $(stat -c %s "$VMLINUZ") ))
  local initrd_vma=$(( (kend + 0xffffff) / 0x1000000 * 0x1000000 ))
  objcopy \
    --add-section .osrel="$osrel" --change-section-vma .osrel=0x20000 \
    --add-section .cmdline="$cl" --change-section-vma .cmdline=0x30000 \
    --add-section .linux="$VMLINUZ" --change-section-vma .linux=0x2000000 \
    --add-section .initrd="$INITRD" --change-section-vma .initrd=$(printf '0x%x' $initrd_vma) \
    "$UKI_STUB" "$out.tmp" && mv "$out.tmp" "$out"
}

# uefi_build_esp UKI DISK: a GPT disk with one EFI system partition (FAT32) holding the UKI as the
# removable-media boot path \EFI\BOOT\BOOTX64.EFI, which OVMF boots without any boot entry.
uefi_build_esp() {
  local uki=$1 disk=$2
  local mb=$(( $(stat -c %s "$uki") / 1048576 + 48 ))
  rm -f "$disk"; truncate -s "${mb}M" "$disk"
  printf 'label: gpt\nstart=2048, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="ESP"\n' | sfdisk -q "$disk"
  local start size
  read -r start size < <(sfdisk -d "$disk" | sed -n 's/.*start= *\([0-9]*\), size= *\([0-9]*\).*/\1 \2/p' | head -1)
  mkfs.vfat -F 32 -n ESP --offset "$start" "$disk" $(( size / 2 )) >/dev/null
  mmd -i "$disk@@$(( start * 512 ))" ::/EFI ::/EFI/BOOT
  mcopy -i "$disk@@$(( start * 512 ))" "$uki" ::/EFI/BOOT/BOOTX64.EFI
}

# uefi_prepare: the two UKIs and their disks (the second differs by one character of the command
# line, he.scenario=1 -> 2, which also tells init.sh to run the short scenario), reference values
# of the first for the verifier, and the chain policy (firmware, UKI, hypervisor, HAK required).
uefi_prepare() {
  mkdir -p "$UEFI_DIR"
  local t0; t0=$(date +%s)
  uefi_build_uki "$UEFI_DIR/uki.efi" "$APPEND he.scenario=1" || die "building the UKI failed"
  uefi_build_uki "$UEFI_DIR/uki-broken.efi" "$APPEND he.scenario=2" || die "building the second UKI failed"
  uefi_build_esp "$UEFI_DIR/uki.efi" "$UEFI_DIR/esp.img" >"$UEFI_DIR/esp.log" 2>&1 || { cat "$UEFI_DIR/esp.log" >&2; die "building the ESP disk failed"; }
  uefi_build_esp "$UEFI_DIR/uki-broken.efi" "$UEFI_DIR/esp-broken.img" >>"$UEFI_DIR/esp.log" 2>&1 || { cat "$UEFI_DIR/esp.log" >&2; die "building the second ESP disk failed"; }
  "${CLI[@]}" firmware uki-reference "$UEFI_DIR/uki.efi" --banks sha1,sha256,sha384 -o "$VDIR/uki-reference.json" >/dev/null \
    || die "firmware uki-reference failed"
  log "UKI $(( $(stat -c %s "$UEFI_DIR/uki.efi") / 1048576 )) MiB and its reference values built in $(( $(date +%s) - t0 )) s"
}

# QEMU arguments of a UEFI boot from DISK (fresh OVMF variables each boot: no state carried over).
uefi_qemu_args() { # DISK VARS
  cp "$OVMF_VARS" "$2"
  QEMU_BOOT=(-machine q35
    -drive if=pflash,format=raw,unit=0,readonly=on,file="$OVMF_CODE"
    -drive if=pflash,format=raw,unit=1,file="$2"
    -drive file="$1",format=raw,if=virtio)
}

# The policy `hyperenclave verify` uses for chain-verified / chain-broken-refused: the run's policy
# with the links of the chain required (a skip contraindicates).
uefi_chain_policy() {
  node -e '
    const fs = require("fs");
    const p = JSON.parse(fs.readFileSync(process.argv[1], "utf8"));
    p.checks = { ...(p.checks ?? {}), "eventlog.firmware": "required", "boot.*": "required", "reference.hypervisor": "required", "eventlog.runtime": "required", "enclave.hak-bound": "required" };
    fs.writeFileSync(process.argv[2], JSON.stringify(p, null, 2) + "\n");' "$VDIR/policy.json" "$VDIR/chain-policy.json"
}

# The second, short boot: same TPM state (same EK, so the guest can enroll a new AK), the UKI whose
# command line differs by one character. Its console goes to $WORK/console-broken.txt.
uefi_second_boot() {
  if [ -n "$SWTPM_PID" ]; then kill "$SWTPM_PID" 2>/dev/null || true; wait "$SWTPM_PID" 2>/dev/null || true; fi
  rm -f "$SOCK"
  start_swtpm
  uefi_qemu_args "$UEFI_DIR/esp-broken.img" "$RUN/ovmf-vars-broken.fd"
  log "second boot: the UKI whose command line differs by one character"
  boot_guest "$WORK/console-broken.log"
  tr -d '\r' <"$WORK/console-broken.log" >"$WORK/console-broken.txt"
}
