#!/usr/bin/env bash
# The VMX tier: Debian's kernel under Bochs (an emulator that executes VMX with EPT; Debian 12's
# `bochs` 2.7, CPU model corei7_haswell_4770), booted from an ISO made with grub-mkrescue. The
# driver picks the intel-vmx image by CPU vendor, hectl drives it (no Node in this guest), the
# serial console is judged by test/system-vmx/judge.mjs. Bochs has no TPM: nothing is measured,
# the driver loads the image with unmeasured_ok=1 and the tier says so.
# Exit codes: 0 pass, 1 fail (a check failed, the guest hung, the time limit hit), 2 harness
# error, 77 skipped (prints "SKIPPED: why": Bochs, GRUB, xorriso or the kernel not installable).
#
#   test/system-vmx/run.sh [--timeout SECONDS] [--cpus N] [--keep]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/test/system-vmx"
WORK="$ROOT/.tmp/system-vmx"
KCACHE="$ROOT/.tmp/system/kernel" # shared with test/system/run.sh
TIMEOUT=${HE_VMX_TIMEOUT:-2400}
CPUS=${HE_VMX_CPUS:-2}
KEEP=0
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) TIMEOUT=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    *) echo "usage: $0 [--timeout SECONDS] [--cpus N] [--keep]" >&2; exit 2 ;;
  esac
done
case "$CPUS" in ''|*[!0-9]*) echo "--cpus: expected a number, got \"$CPUS\"" >&2; exit 2 ;; esac

RESERVED_BASE=0x3c000000
RESERVED_SIZE=0x2000000

log() { printf '[system-vmx] %s\n' "$*" >&2; }
skip() { echo "SKIPPED: $*"; exit 77; }
die() { echo "ERROR: $*" >&2; exit 2; }
mkdir -p "$WORK"

# ---- 1. host packages ---------------------------------------------------------------------------
KVER_PKG=""
pick_kernel() {
  KVER_PKG=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/.*Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\).*/\1/p' | head -1)
}
if [ -f "$KCACHE/VERSION" ]; then KVER_PKG=$(cat "$KCACHE/VERSION"); else pick_kernel; fi
[ -n "$KVER_PKG" ] || { apt-get update -qq >/dev/null 2>&1 || true; pick_kernel; }
[ -n "$KVER_PKG" ] || skip "no linux-image-6.1.0-*-amd64 package is offered by apt"
need=()
command -v bochs >/dev/null || need+=(bochs bochsbios vgabios)
[ -f /usr/share/bochs/BIOS-bochs-latest ] || need+=(bochsbios)
[ -f /usr/share/bochs/VGABIOS-lgpl-latest ] || [ -f /usr/share/vgabios/vgabios.bin ] || need+=(vgabios)
[ -d /usr/lib/grub/i386-pc ] || need+=(grub-pc-bin)
command -v grub-mkrescue >/dev/null || need+=(grub-common)
command -v xorriso >/dev/null || need+=(xorriso)
command -v mformat >/dev/null || need+=(mtools)
command -v cpio >/dev/null || need+=(cpio)
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)
[ -d "/usr/src/linux-headers-$KVER_PKG" ] || need+=("linux-headers-$KVER_PKG")
command -v gcc >/dev/null && command -v make >/dev/null || need+=(build-essential)
if [ ${#need[@]} -gt 0 ]; then
  log "installing: ${need[*]}"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
    >"$WORK/apt.log" 2>&1 || skip "could not install ${need[*]} (see $WORK/apt.log)"
fi
command -v bochs >/dev/null || skip "bochs is not installed"
command -v grub-mkrescue >/dev/null && [ -d /usr/lib/grub/i386-pc ] || skip "grub-mkrescue with i386-pc (grub-pc-bin) is not installed"
BUSYBOX=$(dpkg -L busybox-static 2>/dev/null | grep -m1 '/bin/busybox$' || true)
[ -n "$BUSYBOX" ] && [ -x "$BUSYBOX" ] || skip "busybox-static is not installed"
KDIR="/usr/src/linux-headers-$KVER_PKG"
[ -d "$KDIR" ] || skip "linux-headers-$KVER_PKG is not installed"
VGABIOS=/usr/share/bochs/VGABIOS-lgpl-latest
[ -f "$VGABIOS" ] || VGABIOS=/usr/share/vgabios/vgabios.bin

# ---- 2. Debian's kernel (the system tier's cache) -----------------------------------------------
VMLINUZ="$KCACHE/root/boot/vmlinuz-$KVER_PKG"
if [ ! -f "$VMLINUZ" ]; then
  log "downloading linux-image-$KVER_PKG"
  mkdir -p "$KCACHE/root"
  (cd "$KCACHE" && apt-get download "linux-image-$KVER_PKG" >"$KCACHE/download.log" 2>&1) \
    || skip "apt-get download linux-image-$KVER_PKG failed (see $KCACHE/download.log)"
  dpkg-deb --fsys-tarfile "$KCACHE"/linux-image-"$KVER_PKG"_*.deb \
    | tar -x -C "$KCACHE/root" --wildcards './boot/vmlinuz-*' './boot/config-*' '*/sha512_generic.ko' '*/e1000.ko'
  rm -f "$KCACHE"/*.deb
  echo "$KVER_PKG" >"$KCACHE/VERSION"
fi
[ -f "$VMLINUZ" ] || die "no $VMLINUZ after unpacking"

# ---- 3. driver, hectl, the intel-vmx image, the enclave plan ------------------------------------
T0=$(date +%s)
DRV_OUT="$WORK/driver"
rm -rf "$DRV_OUT"; mkdir -p "$DRV_OUT"
cp "$ROOT/hypervisor/driver"/*.c "$ROOT/hypervisor/driver"/*.S "$ROOT/hypervisor/driver"/*.h "$ROOT/hypervisor/driver/Kbuild" "$DRV_OUT/"
make -s -C "$KDIR" M="$DRV_OUT" modules >"$WORK/driver-build.log" 2>&1 || { cat "$WORK/driver-build.log" >&2; die "driver build failed"; }
gcc -static -O2 -Wall -Werror -I"$ROOT/hypervisor/driver" -o "$WORK/hectl" "$ROOT/hypervisor/driver/tools/hectl.c" \
  >"$WORK/hectl-build.log" 2>&1 || { cat "$WORK/hectl-build.log" >&2; die "hectl build failed"; }
bash "$ROOT/hypervisor/image/build.sh" "$WORK/image" "$RESERVED_BASE" intel-vmx >"$WORK/image-build.log" 2>&1 \
  || { tail -40 "$WORK/image-build.log" >&2; die "image build failed"; }
[ -f "$ROOT/dist/src/enclave/layout.js" ] || die "dist/ is not built (npm run build)"
[ -f "$ROOT/hypervisor/enclaves/out/crypto.bin" ] || die "the enclave payloads are not built (hypervisor/enclaves/build.sh)"
PLAN_DIR="$WORK/plan"
rm -rf "$PLAN_DIR"; mkdir -p "$PLAN_DIR"
cp "$ROOT/test/fixtures/enclave/signer-test.pem" "$PLAN_DIR/"
node -e 'const m=JSON.parse(require("fs").readFileSync(process.argv[1],"utf8")); m.payload={image:process.argv[2]+".bin",layout:process.argv[2]+".json"}; process.stdout.write(JSON.stringify(m,null,2))' \
  "$ROOT/test/fixtures/enclave/crypto.manifest.json" "$ROOT/hypervisor/enclaves/out/crypto" >"$PLAN_DIR/crypto.manifest.json"
node "$HERE/plan.mjs" "$PLAN_DIR/crypto.manifest.json" "$PLAN_DIR/crypto.plan" >"$WORK/plan.log" 2>&1 || { cat "$WORK/plan.log" >&2; die "enclave plan failed"; }
log "builds took $(( $(date +%s) - T0 )) s"

# ---- 4. initramfs and ISO -----------------------------------------------------------------------
IRD="$WORK/initramfs"
rm -rf "$IRD"; mkdir -p "$IRD"/{bin,sbin,dev,proc,sys,tmp,root,lib/modules,lib/firmware/hyperenclave,opt/enclave}
cp "$BUSYBOX" "$IRD/bin/busybox"
for a in $("$BUSYBOX" --list); do [ "$a" = busybox ] || ln -sf busybox "$IRD/bin/$a"; done
cp "$HERE/init.sh" "$IRD/init"; chmod 0755 "$IRD/init"
cp "$DRV_OUT/hyperenclave.ko" "$IRD/lib/modules/"
cp "$WORK/hectl" "$IRD/bin/hectl"
cp "$WORK/image/hyperenclave.img" "$IRD/lib/firmware/hyperenclave/hyperenclave-intel.img"
cp "$PLAN_DIR/crypto.plan" "$IRD/opt/enclave/"
printf 'RESERVED_BASE=%s\nRESERVED_SIZE=%s\n' "$RESERVED_BASE" "$RESERVED_SIZE" >"$IRD/etc.scenario"
ISO_DIR="$WORK/iso"
rm -rf "$ISO_DIR"; mkdir -p "$ISO_DIR/boot/grub"
cp "$VMLINUZ" "$ISO_DIR/boot/vmlinuz"
(cd "$IRD" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$ISO_DIR/boot/initrd.gz"
# single quotes: GRUB would expand $0x3c000000 as a variable
cat >"$ISO_DIR/boot/grub/grub.cfg" <<GRUB
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry hyperenclave-vmx {
  linux /boot/vmlinuz console=ttyS0 loglevel=4 panic=-1 'memmap=32M\$$RESERVED_BASE' nokaslr tsc=reliable
  initrd /boot/initrd.gz
}
GRUB
grub-mkrescue -o "$WORK/boot.iso.tmp" "$ISO_DIR" >"$WORK/grub-mkrescue.log" 2>&1 || { tail -5 "$WORK/grub-mkrescue.log" >&2; die "grub-mkrescue failed"; }
mv "$WORK/boot.iso.tmp" "$WORK/boot.iso"

# ---- 5. Bochs -----------------------------------------------------------------------------------
RUN="$WORK/run"
rm -rf "$RUN"; mkdir -p "$RUN"
CONSOLE="$WORK/console.log"
rm -f "$CONSOLE"
# Debian's bochs is built with its debugger: the rc file continues at once and quits at the end.
printf 'c\nquit\n' >"$RUN/debugger.rc"
cat >"$RUN/bochsrc" <<BX
megs: 1024
cpu: model=corei7_haswell_4770, count=$CPUS, ips=200000000, quantum=16, reset_on_triple_fault=0
romimage: file=/usr/share/bochs/BIOS-bochs-latest
vgaromimage: file=$VGABIOS
pci: enabled=1, chipset=i440fx
ata0-master: type=cdrom, path=$WORK/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$CONSOLE
display_library: rfb, options="timeout=0"
speaker: enabled=0
log: $RUN/bochs.log
panic: action=fatal
error: action=report
clock: sync=none, time0=local
BX
log "booting $KVER_PKG under Bochs ($CPUS CPUs, timeout ${TIMEOUT}s)"
T1=$(date +%s)
set +e
TIMECMD=()
[ -x /usr/bin/time ] && TIMECMD=(/usr/bin/time -f '%e %U %S' -o "$RUN/time")
( cd "$RUN" && exec "${TIMECMD[@]}" timeout --kill-after=5 "$TIMEOUT" bochs -q -f "$RUN/bochsrc" -rc "$RUN/debugger.rc" ) \
  </dev/null >"$RUN/bochs.out" 2>&1
BRC=$?
set -e
BOOT_S=$(( $(date +%s) - T1 ))
read -r WALL USER SYS < <(tail -1 "$RUN/time" 2>/dev/null) || { WALL=$BOOT_S; USER=?; SYS=?; }
log "Bochs exited with $BRC after ${BOOT_S}s (cpu user ${USER}s sys ${SYS}s); console in $CONSOLE"
if [ "$BRC" = 124 ] || [ "$BRC" = 137 ]; then TIMED_OUT=1; else TIMED_OUT=0; fi
# Bochs exits with 1 also after the guest's ACPI power-off: the judge decides. Its log lines start
# with the tick count (instructions per emulated CPU).
TICKS=$(grep -o '^[0-9]\{11\}' "$RUN/bochs.log" | tail -1 || true)
[ -n "$TICKS" ] && TICKS=$((10#$TICKS))

# ---- 6. judge -----------------------------------------------------------------------------------
tr -d '\r' <"$CONSOLE" >"$WORK/console.txt" 2>/dev/null || : >"$WORK/console.txt"
set +e
node "$HERE/judge.mjs" "$WORK/console.txt" --timed-out "$TIMED_OUT" --cpus "$CPUS" --expected "$HERE/expected-checks.txt" \
  --bochs-seconds "$BOOT_S" --bochs-cpu "$USER" --bochs-ticks "${TICKS:-0}"
JRC=$?
set -e
[ "$KEEP" = 1 ] || rm -rf "$RUN" "$ISO_DIR" "$IRD"
exit $JRC
