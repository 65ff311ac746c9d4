#!/usr/bin/env bash
# Builds the enclave payloads (no_std Rust, host target only) into flat images plus layout
# JSON in hypervisor/enclaves/out/: <name>.bin (ELRANGE offset 0 onward; the loader zero-fills
# to the last page) and <name>.json (base, size, entry/TCS/SSA offsets, pages with SECINFO).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/out"
target="$here/target"
mkdir -p "$out" "$target"
# name:threads:heap pages (gen-link.mjs writes each payload's linker script)
payloads=(crypto:1:0 sealer:1:0 misbehave:1:0 probe:4:64 kvstore:1:64)
export CARGO_TARGET_DIR="$target"
# kvm_pvm (the KVM here) interprets guest code and has no SSE: build integer-only code.
export RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static,-sse,-sse2,-sse3,-ssse3,-sse4.1,-sse4.2,-avx,-avx2"
for spec in "${payloads[@]}"; do
  IFS=: read -r p threads heap <<<"$spec"
  node "$here/gen-link.mjs" "$threads" "$heap" >"$target/$p.ld"
  # rustc warns that disabling sse2 changes the float ABI (enclaves use no floats): the log is
  # shown only if the build fails.
  log="$target/$p.build.log"
  if ! cargo rustc --quiet --release --manifest-path "$here/Cargo.toml" -p "$p" --bin "$p" -- \
    -C link-arg=-nostdlib -C link-arg=-nostartfiles -C link-arg=-static -C link-arg=-no-pie \
    -C link-arg=-Wl,-T,"$target/$p.ld" -C link-arg=-Wl,--build-id=none -C link-arg=-Wl,-z,norelro 2>"$log"; then
    cat "$log" >&2
    echo "enclave payload $p: build failed" >&2
    exit 1
  fi
  elf="$target/release/$p"
  objcopy -O binary "$elf" "$out/$p.bin.tmp"
  node "$here/layout.mjs" "$elf" "$out/$p.bin.tmp" "$out" "$p" "$heap"
done
