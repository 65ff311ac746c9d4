#!/usr/bin/env bash
# System tier: boot Debian's own kernel under QEMU TCG (SVM + nested paging) with swtpm attached,
# load the hyperenclave driver and image inside it, run test/system/init.sh as PID 1 and judge the
# serial console. Exit codes: 0 pass, 1 fail, 2 harness error, 77 skipped (prints "SKIPPED: why").
#
#   test/system/run.sh [--timeout SECONDS] [--keep] [--no-image] [--uefi | --bios | --systemd]
#
# --bios (default): SeaBIOS, QEMU's -kernel/-initrd/-append (i440fx). --uefi: q35 + OVMF booting a
# unified kernel image from an EFI system partition, measured from power-on (test/system/uefi.sh),
# plus a second short boot of a UKI whose command line differs by one character. --systemd: a Debian
# root file system (mmdebstrap, cached) on a virtio disk with systemd as PID 1 and the package
# installed, booted three times in one QEMU (guest reboots: swtpm state kept, PCRs reset) to judge
# the boot unit (test/system/systemd.sh).
#
# Work files live under .tmp/system/ (kernel package, module build, initramfs, console log).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/test/system"
WORK="$ROOT/.tmp/system"
TIMEOUT=${HE_SYSTEM_TIMEOUT:-900}
KEEP=0
WITH_IMAGE=1
MODE=${HE_SYSTEM_MODE:-bios}
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    --no-image) WITH_IMAGE=0; shift ;;
    --uefi) MODE=uefi; shift ;;
    --bios) MODE=bios; shift ;;
    --systemd) MODE=systemd; shift ;;
    *) echo "usage: $0 [--timeout SECONDS] [--keep] [--no-image] [--uefi | --bios | --systemd]" >&2; exit 2 ;;
  esac
done

# Guest layout: 1 GiB of RAM, 32 MiB at 960 MiB reserved for the hypervisor with memmap=.
RESERVED_BASE=0x3c000000
RESERVED_SIZE=0x2000000
MEMMAP="memmap=32M\$${RESERVED_BASE}"
PCR=12
APPEND="console=ttyS0 loglevel=4 panic=-1 $MEMMAP nokaslr"
# UEFI: 2 GiB, so OVMF's allocations and the EFI stub's boot data stay clear of the reservation
# (with 1 GiB they land at 0x3d2cc018, inside it, and the kernel faults on its own setup_data).
GUEST_MEM=1G
# UEFI: PCR 9 (kernel EFI stub: initrd, load options) and 11 (systemd-stub: UKI sections) too.
BOOT_PCRS=""
HAK_PCR=13

log() { printf '[system] %s\n' "$*" >&2; }
skip() { echo "SKIPPED: $*"; exit 77; }
die() { echo "ERROR: $*" >&2; exit 2; }

mkdir -p "$WORK"
if [ "$MODE" = uefi ]; then
  # shellcheck source=test/system/uefi.sh
  . "$HERE/uefi.sh"
  GUEST_MEM=2G
  BOOT_PCRS="9 11"
fi
# QEMU: one boot per process, with the user network the verifier is reached through (modes may change both).
QEMU_REBOOT=(-no-reboot)
QEMU_NET=(-nic user,model=e1000)
# bios mode: q35 with QEMU's AMD IOMMU (created before the PCI devices it translates; interrupt
# remapping off, which this hypervisor does not program), the e1000 NIC and the edu DMA device
# behind it (edu's DMA mask widened from 28 to 40 bits so it can aim at the reservation at 960 MiB).
# amd_iommu=off: Linux leaves the IOMMU alone; the hypervisor takes it over at enable (DMA
# protection) and hands it back, translation off, at disable. The UEFI and systemd modes run
# without it (the hypervisor finds the ACPI tables only through the BIOS area: docs/system-tier.md).
QEMU_DMA_BEFORE=(); QEMU_DMA_AFTER=()
if [ "$MODE" = bios ]; then
  QEMU_DMA_BEFORE=(-machine q35 -device amd-iommu,intremap=off)
  QEMU_NET=(-netdev user,id=net0 -device e1000,netdev=net0)
  QEMU_DMA_AFTER=(-device edu,dma_mask=0xffffffffff)
  APPEND="$APPEND amd_iommu=off"
fi
if [ "$MODE" = systemd ]; then
  # shellcheck source=test/system/systemd.sh
  . "$HERE/systemd.sh"
fi

# ---- 1. host packages ---------------------------------------------------------------------------
KVER_PKG=""
pick_kernel() {
  # The ABI name Debian's meta package points at, e.g. 6.1.0-56-amd64.
  KVER_PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\).*/\1/p' | head -1)
  [ -n "$KVER_PKG" ] || KVER_PKG=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64$' 2>/dev/null \
    | awk '{print $1}' | sed 's/linux-image-//' | sort -V | tail -1)
}
if [ -f "$WORK/kernel/VERSION" ]; then KVER_PKG=$(cat "$WORK/kernel/VERSION"); else pick_kernel; fi
[ -n "$KVER_PKG" ] || { apt-get update -qq >/dev/null 2>&1 || true; pick_kernel; }
[ -n "$KVER_PKG" ] || skip "no linux-image-6.1.0-*-amd64 package is offered by apt"

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
command -v swtpm >/dev/null || need+=(swtpm)
command -v tpm2_eventlog >/dev/null || need+=(tpm2-tools)
[ -d "/usr/src/linux-headers-$KVER_PKG" ] || need+=("linux-headers-$KVER_PKG")
command -v gcc >/dev/null && command -v make >/dev/null || need+=(build-essential)
[ "$MODE" = uefi ] && uefi_need_packages
[ "$MODE" = systemd ] && systemd_need_packages
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$WORK/apt.log" 2>&1 || skip "could not install ${need[*]} (see $WORK/apt.log)"
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86_64 is not installed"
BUSYBOX=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
[ -n "$BUSYBOX" ] && [ -x "$BUSYBOX" ] || skip "busybox-static is not installed"
ldd "$BUSYBOX" >/dev/null 2>&1 && skip "$BUSYBOX is dynamically linked (install busybox-static)"
KDIR="/usr/src/linux-headers-$KVER_PKG"
[ "$MODE" = uefi ] && uefi_check_packages
[ "$MODE" = systemd ] && systemd_check_packages
[ -d "$KDIR" ] || skip "linux-headers-$KVER_PKG is not installed"

# ---- 2. Debian's kernel (downloaded once, cached) -----------------------------------------------
mkdir -p "$WORK/kernel"
VMLINUZ="$WORK/kernel/root/boot/vmlinuz-$KVER_PKG"
if [ ! -f "$VMLINUZ" ]; then
  log "downloading linux-image-$KVER_PKG"
  rm -rf "$WORK/kernel/root" "$WORK/kernel"/*.deb
  (cd "$WORK/kernel" && apt-get download "linux-image-$KVER_PKG" >"$WORK/kernel/download.log" 2>&1) \
    || skip "apt-get download linux-image-$KVER_PKG failed (see $WORK/kernel/download.log)"
  # Only the kernel, its config and the few modules the guest loads (the package unpacks to ~400 MB).
  mkdir -p "$WORK/kernel/root"
  dpkg-deb --fsys-tarfile "$WORK/kernel"/linux-image-"$KVER_PKG"_*.deb \
    | tar -x -C "$WORK/kernel/root" --wildcards './boot/vmlinuz-*' './boot/config-*' '*/sha512_generic.ko' '*/e1000.ko'
  rm -f "$WORK/kernel"/*.deb
fi
echo "$KVER_PKG" >"$WORK/kernel/VERSION"
[ -f "$VMLINUZ" ] || die "no $VMLINUZ after unpacking"

# ---- 3. driver, user tool, image ----------------------------------------------------------------
T0=$(date +%s)
log "building the driver against $KDIR"
DRV_OUT="$WORK/driver"
rm -rf "$DRV_OUT"; mkdir -p "$DRV_OUT"
cp "$ROOT/hypervisor/driver"/*.c "$ROOT/hypervisor/driver"/*.S "$ROOT/hypervisor/driver"/*.h "$ROOT/hypervisor/driver/Kbuild" "$DRV_OUT/"
make -s -C "$KDIR" M="$DRV_OUT" modules >"$WORK/driver-build.log" 2>&1 || { cat "$WORK/driver-build.log" >&2; die "driver build failed"; }
gcc -static -O2 -Wall -Werror -I"$ROOT/hypervisor/driver" -o "$WORK/hectl" "$ROOT/hypervisor/driver/tools/hectl.c" \
  >"$WORK/hectl-build.log" 2>&1 || { cat "$WORK/hectl-build.log" >&2; die "hectl build failed"; }
gcc -static -O2 -Wall -Werror -o "$WORK/edu-dma" "$HERE/edu-dma.c" >"$WORK/edu-dma-build.log" 2>&1 \
  || { cat "$WORK/edu-dma-build.log" >&2; die "edu-dma build failed"; }

IMAGE_CONTAINER=""
if [ "$WITH_IMAGE" = 1 ]; then
  log "building the hypervisor image"
  bash "$ROOT/hypervisor/image/build.sh" "$WORK/image" >"$WORK/image-build.log" 2>&1 \
    || { tail -40 "$WORK/image-build.log" >&2; die "image build failed"; }
  IMAGE_CONTAINER="$WORK/image/hyperenclave.img"
  # seal-other-image-refused: the same ELF with one byte of a log message changed ("guest write"
  # -> "Guest write"), wrapped by firmware-tools like the real one: another image digest.
  OTHER_CONTAINER="$WORK/image/other.img"
  node -e 'const fs = require("fs"); const b = fs.readFileSync(process.argv[1]); const needle = Buffer.from("guest write of VM_HSAVE_PA");
    const at = b.indexOf(needle); if (at < 0 || b.indexOf(needle, at + 1) >= 0) { console.error("other image: the marker string is not unique in the ELF"); process.exit(1); }
    b[at] = 0x47; fs.writeFileSync(process.argv[2], b)' "$WORK/image/hyperenclave.elf" "$WORK/image/other.elf" \
    && node "$ROOT/dist/firmware-tools/cli.js" build "$WORK/image/other.elf" -o "$OTHER_CONTAINER" --arch amd-svm \
      --per-cpu-size "$(od -An -t u8 -N 8 "$WORK/image/he_info.bin" | tr -d ' ')" >"$WORK/other-image.log" 2>&1 \
    || { cat "$WORK/other-image.log" >&2; die "building the one-byte-different image failed"; }
fi
# The management plane as an operator installs it (make install), run by the guest's own Node.
NODE_BIN=$(command -v node) || die "node is not installed"
INSTALL_ROOT="$WORK/installroot"
rm -rf "$INSTALL_ROOT"
make -s -C "$ROOT" --no-print-directory install DESTDIR="$INSTALL_ROOT" >"$WORK/install.log" 2>&1 \
  || { tail -20 "$WORK/install.log" >&2; die "make install failed"; }
CLI=(node "$ROOT/dist/src/cli/main.js")
log "builds took $(( $(date +%s) - T0 )) s"

# ---- 4. swtpm and QEMU (every mode) -------------------------------------------------------------
RUN="$WORK/run"
rm -rf "$RUN"; mkdir -p "$RUN/tpmstate"
SOCK="$RUN/swtpm.sock"
CONSOLE="$WORK/console.log"
SWTPM_PID=""; QEMU_PID=""; VERIFIER_PID=""
cleanup() {
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null || true
  [ -n "$VERIFIER_PID" ] && kill "$VERIFIER_PID" 2>/dev/null || true
  [ -n "$SWTPM_PID" ] && kill "$SWTPM_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$KEEP" = 1 ] || rm -rf "$RUN"
}
trap cleanup EXIT

# EKs with certificates from a CA private to this run: the verifier enrolls the guest's AK against it.
node --input-type=module -e "import { setupWithSwtpmSetup } from '$ROOT/dist/src/platform/emulated/swtpm.js'; setupWithSwtpmSetup('$RUN/tpmstate', { banks: ['sha1', 'sha256', 'sha384'], ek: true });" \
  >"$RUN/swtpm_setup.log" 2>&1 || { cat "$RUN/swtpm_setup.log" >&2; die "swtpm_setup failed"; }

start_swtpm() {
  swtpm socket --tpm2 --tpmstate dir="$RUN/tpmstate" --ctrl type=unixio,path="$SOCK" \
    --log file="$RUN/swtpm.log",level=1 >/dev/null 2>&1 &
  SWTPM_PID=$!
  for _ in $(seq 50); do [ -S "$SOCK" ] && break; sleep 0.1; done
  [ -S "$SOCK" ] || die "swtpm did not create $SOCK"
}

# boot_guest CONSOLE: one QEMU run with $QEMU_BOOT (firmware, kernel or disk), under the time limit.
boot_guest() {
  local t1; t1=$(date +%s)
  timeout --kill-after=5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt,+pdpe1gb,+ssse3,+sse4.1,+sse4.2,+popcnt,+rdrand,+aes,+pclmulqdq -smp 2 -m "$GUEST_MEM" \
    -nographic "${QEMU_REBOOT[@]}" -monitor none -serial stdio \
    "${QEMU_BOOT[@]}" \
    "${QEMU_DMA_BEFORE[@]}" "${QEMU_NET[@]}" "${QEMU_DMA_AFTER[@]}" \
    -chardev socket,id=chrtpm,path="$SOCK" -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-tis,tpmdev=tpm0 \
    </dev/null >"$1" 2>"$RUN/qemu.stderr" &
  QEMU_PID=$!
  set +e
  wait "$QEMU_PID"; QRC=$?
  set -e
  QEMU_PID=""
  BOOT_S=$(( $(date +%s) - t1 ))
  log "QEMU exited with $QRC after ${BOOT_S}s; console in $1"
  if [ "$QRC" = 124 ] || [ "$QRC" = 137 ]; then TIMED_OUT=1; else TIMED_OUT=0; fi
}

# The systemd mode boots a Debian system from a disk instead of the initramfs scenario below
# (test/system/systemd.sh: it builds the disk, boots it three times and runs the judge).
if [ "$MODE" = systemd ]; then systemd_main; exit $?; fi

# ---- 4b. initramfs -------------------------------------------------------------------------------
IRD="$WORK/initramfs"
rm -rf "$IRD"; mkdir -p "$IRD"/{bin,sbin,dev,proc,sys,tmp,root,lib/firmware/hyperenclave,lib/modules,opt/enclave,usr/bin}
cp -a "$INSTALL_ROOT"/. "$IRD"/
cp "$BUSYBOX" "$IRD/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -sf busybox "$IRD/bin/$a"; done
cp "$HERE/init.sh" "$IRD/init"; chmod 0755 "$IRD/init"
cp "$HERE/guest-probe.mjs" "$IRD/opt/guest-probe.mjs"
cp "$HERE/guest-enclave-rt.mjs" "$IRD/opt/guest-enclave-rt.mjs"
cp "$DRV_OUT/hyperenclave.ko" "$IRD/lib/modules/"
# SHA-384/512 are modules in Debian's kernel; the driver hashes every allocated PCR bank.
cp "$WORK/kernel/root/lib/modules/$KVER_PKG/kernel/crypto/sha512_generic.ko" "$IRD/lib/modules/"
# The guest reaches the verifier on the host through QEMU's user network (10.0.2.2 = host loopback).
cp "$WORK/kernel/root/lib/modules/$KVER_PKG/kernel/drivers/net/ethernet/intel/e1000/e1000.ko" "$IRD/lib/modules/"
cp "$WORK/hectl" "$IRD/bin/hectl"
cp "$WORK/edu-dma" "$IRD/bin/edu-dma"
cp "$HERE/dma-probe.mjs" "$IRD/opt/dma-probe.mjs"
[ -n "$IMAGE_CONTAINER" ] && cp "$IMAGE_CONTAINER" "$IRD/lib/firmware/hyperenclave/hyperenclave.img" \
  && cp "$OTHER_CONTAINER" "$IRD/lib/firmware/hyperenclave/other.img"
# Node and the shared libraries it links (hard links where possible: node alone is ~100 MB).
cp -l "$NODE_BIN" "$IRD/usr/bin/node" 2>/dev/null || cp "$NODE_BIN" "$IRD/usr/bin/node"
for lib in $(ldd "$NODE_BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  mkdir -p "$IRD$(dirname "$lib")"
  cp -lL "$lib" "$IRD$lib" 2>/dev/null || cp -L "$lib" "$IRD$lib"
done
# util-linux flock(1): the CLI takes the state directory's lock with it (src/platform/lock.ts);
# Debian's busybox-static has no flock applet. It links only libc, copied above for node.
FLOCK_BIN=$(command -v flock) || die "flock (util-linux) is not installed"
cp -L "$FLOCK_BIN" "$IRD/usr/bin/flock"
for lib in $(ldd "$FLOCK_BIN" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
  [ -e "$IRD$lib" ] && continue
  mkdir -p "$IRD$(dirname "$lib")"
  cp -lL "$lib" "$IRD$lib" 2>/dev/null || cp -L "$lib" "$IRD$lib"
done
# An enclave to create from the guest: the crypto payload, its manifest and a test signer.
cp "$ROOT/test/fixtures/enclave/signer-test.pem" "$IRD/opt/enclave/"
for payload in crypto sealer misbehave probe; do
  cp "$ROOT/hypervisor/enclaves/out/$payload.bin" "$ROOT/hypervisor/enclaves/out/$payload.json" "$IRD/opt/enclave/"
  node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); m.payload={image:process.argv[2]+".bin",layout:process.argv[2]+".json"}; process.stdout.write(JSON.stringify(m,null,2))' \
    "$ROOT/test/fixtures/enclave/$payload.manifest.json" "$payload" >"$IRD/opt/enclave/$payload.manifest.json"
done
cat >"$IRD/etc.scenario" <<EOF
RESERVED_BASE=$RESERVED_BASE
RESERVED_SIZE=$RESERVED_SIZE
PCR=$PCR
HAK_PCR=$HAK_PCR
STATE_DIR=/var/lib/hyperenclave
WITH_IMAGE=$WITH_IMAGE
MODE=$MODE
BOOT_PCRS="$BOOT_PCRS"
VERIFIER_URL=http://10.0.2.2:@VERIFIER_PORT@
EOF


# The remote verifier, outside the guest: reference values from firmware-tools, the swtpm CA.
VDIR="$RUN/verifier"
mkdir -p "$VDIR"
CAS='"ek-ca.pem"'
cp "$RUN/tpmstate/ca/issuercert.pem" "$VDIR/ek-ca.pem"
if [ -f "$RUN/tpmstate/ca/swtpm-localca-rootca-cert.pem" ]; then
  cp "$RUN/tpmstate/ca/swtpm-localca-rootca-cert.pem" "$VDIR/ek-root.pem"; CAS="$CAS, \"ek-root.pem\""
fi
REF=""
if [ -n "$IMAGE_CONTAINER" ]; then
  "${CLI[@]}" firmware reference "$IMAGE_CONTAINER" --banks sha1,sha256,sha384 -o "$VDIR/reference-values.json" >/dev/null \
    || die "firmware reference failed"
  REF='"referenceValues": "reference-values.json",'
fi
# The sealer enclave's identity, allowed by the policy: MRENCLAVE from the manifest and payload
# (src/enclave, the same computation the guest's CLI does; the hypervisor's own is checked against
# it by enclave-created), MRSIGNER from the test signer's modulus.
SEALER=$(node --input-type=module -e "
  import { loadManifest } from '$ROOT/dist/src/enclave/manifest.js';
  import { loadPayload, planEnclave } from '$ROOT/dist/src/enclave/layout.js';
  import { computeMrEnclave, loadSignerKey, mrsignerOf } from '$ROOT/dist/src/enclave/sgx.js';
  import { readFileSync } from 'node:fs';
  import { dirname, resolve } from 'node:path';
  const file = '$IRD/opt/enclave/sealer.manifest.json';
  const m = loadManifest(file);
  const { image, layout } = loadPayload(m);
  const plan = planEnclave(m, image, layout);
  const mrenclave = computeMrEnclave(plan.size, plan.ssaFrameSize, plan.pages).toString('hex');
  const raw = JSON.parse(readFileSync(file, 'utf8'));
  const mrsigner = mrsignerOf(loadSignerKey(readFileSync(resolve(dirname(file), raw.signer.key)))).toString('hex');
  process.stdout.write(JSON.stringify({ name: 'sealer', mrenclave, mrsigner, isvProdId: raw.isvProdId, minIsvSvn: raw.isvSvn }));
") || die "could not compute the sealer enclave's identity"
# zstd: the kernel unpacks it far faster than gzip under TCG.
pack_initramfs() {
  if command -v zstd >/dev/null; then PACK=(zstd -q -3 -T0); INITRD="$WORK/initramfs.cpio.zst"; else PACK=(gzip -1); INITRD="$WORK/initramfs.cpio.gz"; fi
  rm -f "$WORK"/initramfs.cpio.*
  (cd "$IRD" && find . -print0 | cpio --null -o -H newc --quiet | "${PACK[@]}") >"$INITRD"
}
VERIFIER_LISTEN=127.0.0.1:0
BOOT_POLICY=""
if [ "$MODE" = uefi ]; then
  # The UKI holds the initramfs, which names the verifier's port, and the verifier's policy names
  # the UKI: pick the port first, then build initramfs, UKI and reference values, then the policy.
  VERIFIER_PORT=$(uefi_free_port); VERIFIER_LISTEN=127.0.0.1:$VERIFIER_PORT
  sed -i "s/@VERIFIER_PORT@/$VERIFIER_PORT/" "$IRD/etc.scenario"
  pack_initramfs
  uefi_prepare
  BOOT_POLICY='"boot": { "ukiReferences": ["uki-reference.json"] },'
fi
cat >"$VDIR/policy.json" <<EOF
{
  "schema": "hyperenclave/verifier-policy",
  "version": 1,
  $REF
  $BOOT_POLICY
  "requiredPcrs": { "sha256": [0, 1, 2, 3, 4, 5, 6, 7, ${BOOT_PCRS:+${BOOT_PCRS// /, }, }$PCR, $HAK_PCR] },
  "hypervisor": { "pcr": $PCR, "hakPcr": $HAK_PCR },
  "enclaves": { "allowed": [$SEALER] },
  "akProvenance": { "trustedEkCaFiles": [$CAS] }
}
EOF
[ "$MODE" = uefi ] && uefi_chain_policy
"${CLI[@]}" --platform emulated --state-dir "$VDIR/state" verifier serve --listen "$VERIFIER_LISTEN" --policy "$VDIR/policy.json" \
  >"$VDIR/serve.out" 2>"$VDIR/serve.err" &
VERIFIER_PID=$!
VERIFIER_PORT=""
for _ in $(seq 100); do
  VERIFIER_PORT=$(cat "$VDIR/serve.out" "$VDIR/serve.err" | sed -n 's/.*listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' | head -1)
  [ -n "$VERIFIER_PORT" ] && break
  sleep 0.1
done
[ -n "$VERIFIER_PORT" ] || { cat "$VDIR/serve.err" >&2; die "verifier serve did not start"; }
log "verifier listening on 127.0.0.1:$VERIFIER_PORT (the guest reaches it as 10.0.2.2)"
if [ "$MODE" != uefi ]; then
  sed -i "s/@VERIFIER_PORT@/$VERIFIER_PORT/" "$IRD/etc.scenario"
  pack_initramfs
fi
# ---- 5. swtpm + QEMU ----------------------------------------------------------------------------
start_swtpm

if [ "$MODE" = uefi ]; then uefi_qemu_args "$UEFI_DIR/esp.img" "$RUN/ovmf-vars.fd"
else QEMU_BOOT=(-kernel "$VMLINUZ" -initrd "$INITRD" -append "$APPEND"); fi
log "booting $KVER_PKG ($MODE, timeout ${TIMEOUT}s)"
boot_guest "$CONSOLE"
TIMED_OUT_1=$TIMED_OUT; BOOT_S_1=$BOOT_S
UEFI_JUDGE=()
if [ "$MODE" = uefi ]; then
  uefi_second_boot
  UEFI_JUDGE=(--mode uefi --uki-reference "$VDIR/uki-reference.json" --uki "$UEFI_DIR/uki.efi" --chain-policy "$VDIR/chain-policy.json"
    --second-console "$WORK/console-broken.txt" --second-timed-out "$TIMED_OUT" --boot-secs "$BOOT_S_1,$BOOT_S")
fi
TIMED_OUT=$TIMED_OUT_1

# ---- 5b. many CPUs (bios mode): a second, short boot with HE_MANY_CPUS (default 12) CPUs -------
# The same initramfs plus an appended cpio whose /etc.scenario says SCENARIO=many: init.sh loads
# the image (no TPM attached: unmeasured_ok=1, this run is about CPUs), enables it, checks CPUID on
# every CPU, runs a busy loop on the last one and disables. The judge reads its cpus-many check.
MANY=${HE_MANY_CPUS:-12}
MANY_CONSOLE="$WORK/console-many.log"
rm -f "$MANY_CONSOLE" "$WORK/console-many.txt"
if [ "$MODE" = bios ] && [ "$WITH_IMAGE" = 1 ] && [ "$TIMED_OUT" = 0 ] && [ "$MANY" -gt 0 ]; then
  EXTRA="$RUN/many"
  mkdir -p "$EXTRA/root"
  sed 's/^SCENARIO=.*//' "$IRD/etc.scenario" >"$EXTRA/root/etc.scenario"
  echo "SCENARIO=many" >>"$EXTRA/root/etc.scenario"
  (cd "$EXTRA/root" && find . -print0 | cpio --null -o -H newc --quiet) >"$EXTRA/extra.cpio"
  # the kernel finds an appended archive only at a 4-byte boundary (zeros in between are skipped)
  cp "$INITRD" "$EXTRA/initrd"
  head -c $(( (4 - $(stat -c %s "$INITRD") % 4) % 4 )) /dev/zero >>"$EXTRA/initrd"
  cat "$EXTRA/extra.cpio" >>"$EXTRA/initrd"
  log "booting again with $MANY CPUs (cpus-many)"
  T2=$(date +%s)
  set +e
  timeout --kill-after=5 "$TIMEOUT" qemu-system-x86_64 -accel tcg -cpu qemu64,+svm,+npt,+pdpe1gb,+ssse3,+sse4.1,+sse4.2,+popcnt,+rdrand,+aes,+pclmulqdq -smp "$MANY" -m 1G \
    -nographic -no-reboot -monitor none -serial stdio \
    -kernel "$VMLINUZ" -initrd "$EXTRA/initrd" -append "$APPEND" \
    </dev/null >"$MANY_CONSOLE" 2>"$RUN/qemu-many.stderr"
  MRC=$?
  set -e
  log "QEMU ($MANY CPUs) exited with $MRC after $(( $(date +%s) - T2 ))s; console in $MANY_CONSOLE"
  tr -d '\r' <"$MANY_CONSOLE" >"$WORK/console-many.txt"
fi

# ---- 6. judge the console -----------------------------------------------------------------------
tr -d '\r' <"$CONSOLE" >"$WORK/console.txt"
node "$HERE/judge.mjs" "$WORK/console.txt" "$WORK/out" --timed-out "$TIMED_OUT" --pcr "$PCR" --hak-pcr "$HAK_PCR" \
  --verifier-dir "$VDIR" --reserved-base "$RESERVED_BASE" --reserved-size "$RESERVED_SIZE" ${IMAGE_CONTAINER:+--image "$IMAGE_CONTAINER"} \
  --expected "$HERE/expected-checks.txt" --partial $(( 1 - WITH_IMAGE )) "${UEFI_JUDGE[@]}" \
  --many-console "$WORK/console-many.txt" --many-cpus "$MANY"
