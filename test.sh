#!/usr/bin/env bash
# Runs the whole test suite: formatting, lints, unit tests, the bare-metal
# ISA conformance programs and the end-to-end Linux boot. Installs what it
# needs (Debian packages, the cached guest image) first.
set -euo pipefail
cd "$(dirname "$0")"
scripts/host-deps.sh
FTVM_GUEST_DIR=$(guest/build.sh)
export FTVM_GUEST_DIR
echo "[test] cargo fmt --check" >&2
cargo fmt --all --check
cargo fmt --manifest-path fuzz/Cargo.toml --check
echo "[test] cargo clippy -D warnings" >&2
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo clippy --manifest-path fuzz/Cargo.toml --all-targets --quiet -- -D warnings
echo "[test] cargo test (release: the tests boot a real kernel)" >&2
cargo test --workspace --release
echo "[test] fuzz targets, 5 s each over their corpus (scripts/fuzz.sh)" >&2
scripts/fuzz.sh --seconds 5 --jobs 2
