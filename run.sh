#!/usr/bin/env bash
# Sets up what ftvm needs on a fresh Debian 12 machine (Debian packages, the
# guest image, the ftvm binary) and boots the guest on the console.
# Extra arguments go to `ftvm run` (see `ftvm run --help`).
set -euo pipefail
cd "$(dirname "$0")"
scripts/host-deps.sh
GUEST_DIR=$(guest/build.sh)
echo "[ftvm] building ftvm (release)..." >&2
cargo build --release --quiet -p ftvm
echo "[ftvm] booting the guest; press Ctrl-A x to quit" >&2
FTVM_GUEST_DIR="$GUEST_DIR" exec target/release/ftvm run "$@"
