#!/usr/bin/env bash
# Builds the bare-metal image for the installed x86_64-unknown-linux-gnu target (no_std, static,
# linked at the reservation's base by link.ld) and wraps it in a HEIMG container of its arch.
#   build.sh OUTDIR [BASE] [ARCH]   BASE defaults to 0x3c000000 (test/system/run.sh's memmap=),
#                                   ARCH to amd-svm (SVM + NPT); intel-vmx builds the VMX + EPT
#                                   backend (cargo feature vmx). One image per arch.
# Writes OUTDIR/hyperenclave.elf and OUTDIR/hyperenclave.img.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:?usage: build.sh OUTDIR [BASE]}
BASE=${2:-0x3c000000}
ARCH=${3:-amd-svm}
case "$ARCH" in
  amd-svm) FEATURES=() ;;
  intel-vmx) FEATURES=(--features vmx) ;;
  *) echo "build.sh: ARCH must be amd-svm or intel-vmx, got \"$ARCH\"" >&2; exit 2 ;;
esac
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
sed "s/@BASE@/$BASE/" "$HERE/link.ld.in" >"$OUT/link.ld"
export CARGO_TARGET_DIR="$OUT/target"
# relocation-model=static: absolute addresses are the physical ones the image runs at.
RUSTFLAGS="-C relocation-model=static -C target-cpu=x86-64 -C panic=abort \
  -C link-arg=-nostartfiles -C link-arg=-nostdlib -C link-arg=-static -C link-arg=-no-pie \
  -C link-arg=-Wl,-T,$OUT/link.ld -C link-arg=-Wl,--gc-sections -C link-arg=-Wl,--build-id=sha1 \
  -C link-arg=-Wl,-z,max-page-size=4096 -C link-arg=-Wl,-z,noexecstack" \
  cargo build --release --manifest-path "$HERE/Cargo.toml" --target x86_64-unknown-linux-gnu "${FEATURES[@]}"
ELF="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/hyperenclave-image"
cp "$ELF" "$OUT/hyperenclave.elf.tmp" && mv "$OUT/hyperenclave.elf.tmp" "$OUT/hyperenclave.elf"
# the container is written by the project's own firmware tools
FW="$ROOT/dist/firmware-tools/cli.js"
if [ ! -f "$FW" ]; then
  FW="$OUT/fwtools/firmware-tools/cli.js"
  if [ ! -f "$FW" ] || [ -n "$(find "$ROOT/firmware-tools" "$ROOT/src/measure" -newer "$FW" -name '*.ts' 2>/dev/null | head -1)" ]; then
    (cd "$ROOT" && npx tsc firmware-tools/cli.ts --outDir "$OUT/fwtools" --rootDir . --module nodenext --moduleResolution nodenext \
      --target es2022 --strict --skipLibCheck --esModuleInterop --resolveJsonModule)
  fi
fi
# The per-CPU area size the image needs (entry.rs HE_PERCPU_SIZE, section .he_info) goes into the
# container header: the driver gives every possible CPU an area of that size.
objcopy -O binary --only-section=.he_info "$OUT/hyperenclave.elf" "$OUT/he_info.bin"
PERCPU=$(od -An -t u8 -N 8 "$OUT/he_info.bin" | tr -d ' ')
[ -n "$PERCPU" ] && [ "$PERCPU" -gt 0 ] || { echo "build.sh: no HE_PERCPU_SIZE in section .he_info of $OUT/hyperenclave.elf" >&2; exit 1; }
node "$FW" build "$OUT/hyperenclave.elf" -o "$OUT/hyperenclave.img" --arch "$ARCH" --per-cpu-size "$PERCPU"
node "$FW" inspect "$OUT/hyperenclave.img" --banks sha256 || true
