#!/usr/bin/env bash
# The main job. On a fresh Debian 12 machine: installs the Debian packages
# ftvm needs, builds the guest image and ftvm, then runs `ftvm demo` — a
# fault-tolerant redis (storage, primary and backup in network namespaces on
# this machine): it says how to reach the guest and how to kill the primary.
# Without a terminal on stdin the demo runs itself (client load, SIGKILL of
# the primary, checks) and exits. Run as root (sudo) it builds the lab in
# the machine's namespaces; run as a user it builds it inside a user
# namespace of that user's (scripts/rootless.sh), no root needed beyond
# installing missing packages (asked with sudo).
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
    echo "[ftvm] not root: running the demo in a user namespace of your own (scripts/rootless.sh)" >&2
    exec scripts/rootless.sh target/release/ftvm demo "$@"
fi
exec target/release/ftvm demo "$@"
