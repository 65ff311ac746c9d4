#!/usr/bin/env bash
# Builds the Node-API addon with @napi-rs/cli into hypervisor/addon/hyperenclave-addon.node,
# then the enclave payloads it runs (hypervisor/enclaves/build.sh → hypervisor/enclaves/out/).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
npx --no-install napi build --release --output-dir "$here" \
  --manifest-path "$here/Cargo.toml" --package-json-path "$here/../../package.json" 2>&1 | grep -v 'napi-derive' || true
test -f "$here/hyperenclave-addon.node" || { echo "addon build failed: $here/hyperenclave-addon.node missing" >&2; exit 1; }
bash "$here/../enclaves/build.sh"
