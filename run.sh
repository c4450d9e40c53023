#!/usr/bin/env bash
# The main job. On a fresh Debian 12 machine: installs the Debian packages
# ftvm needs, builds the guest image and ftvm, then runs `ftvm demo` — a
# fault-tolerant redis (storage, primary and backup in network namespaces on
# this machine): it says how to reach the guest and how to kill the primary.
# Without a terminal on stdin the demo runs itself (client load, SIGKILL of
# the primary, checks) and exits. Needs root (namespaces, TAP devices).
#
#   ./run.sh              the FT demo (extra arguments go to `ftvm demo`)
#   ./run.sh --console    just boot the guest on this terminal (`ftvm run`;
#                         further arguments go to it)
set -euo pipefail
cd "$(dirname "$0")"
scripts/host-deps.sh
GUEST_DIR=$(guest/build.sh)
echo "[ftvm] building ftvm (release)..." >&2
cargo build --release --quiet -p ftvm -p ftvm-loadgen
export FTVM_GUEST_DIR="$GUEST_DIR"
if [ "${1:-}" = "--console" ]; then
    shift
    echo "[ftvm] booting the guest; press Ctrl-A x to quit" >&2
    exec target/release/ftvm run "$@"
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "[ftvm] the FT demo needs root (network namespaces, TAP devices): sudo $0 $*" >&2
    echo "[ftvm] (./run.sh --console boots the guest without root)" >&2
    exit 1
fi
exec target/release/ftvm demo "$@"
