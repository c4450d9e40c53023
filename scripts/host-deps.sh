#!/usr/bin/env bash
# Installs the host-side Debian packages ftvm's build and tests use, if any
# are missing: cmake (softfloat-sys builds Berkeley SoftFloat with it), the
# cross assembler for the ISA test programs, dtc for device-tree checks,
# iproute2 and redis-tools for the network tests (namespaces, a real redis
# client), redis-server for ftvm-loadgen's own tests, qemu-utils, nbd-client and libnbd-bin for the NBD interop tests
# (qemu-img, qemu-io, nbd-client, nbdinfo), protobuf-compiler for the etcd
# client's generated gRPC code, and etcd-server/etcd-client for the etcd
# arbiter's cluster tests (which start their own members on private ports;
# a distribution etcd service this installs is stopped and disabled again).
# g++ builds libFuzzer for the fuzz targets (scripts/fuzz.sh); curl reads
# the Prometheus endpoints the demo prints; chromium and chromium-driver
# run the dashboard's browser test.
# The guest recipe installs its own cross toolchain.
set -euo pipefail
need=()
for p in cmake g++ curl chromium chromium-driver gcc-riscv64-linux-gnu device-tree-compiler iproute2 redis-tools redis-server qemu-utils nbd-client libnbd-bin protobuf-compiler etcd-server etcd-client; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ! command -v cargo >/dev/null; then
    echo "error: cargo not found; ftvm needs a Rust toolchain (rustup) on PATH" >&2
    exit 1
fi
# Installing needs root: a user who is not root gets sudo, asked once.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        echo "error: missing Debian packages (${need[*]}); install them as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
}
if ((${#need[@]})); then
    echo "[deps] installing ${need[*]}" >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    if [[ " ${need[*]} " == *" etcd-server "* ]] && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
fi
