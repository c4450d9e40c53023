#!/usr/bin/env bash
# Build the ftvm bare-metal ISA test programs.
#
#   tests/isa/build.sh OUTDIR        assemble every tests/isa/src/*.S into OUTDIR/<name>.elf
#   tests/isa/build.sh --qemu [DIR]  build into DIR (default tests/isa/build) and run
#                                    every ELF under qemu-system-riscv64 (see run-qemu.sh)
#
# Environment:
#   RISCV_CC    overrides the compiler (default riscv64-linux-gnu-gcc).
#   ISA_QUIRKS  =qemu builds with -DQEMU_QUIRKS: checks where QEMU 7.2 deviates
#               from the RISC-V spec also accept QEMU's behaviour (see README).
#               The default (unset) build follows the spec and is what ftvm runs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${1:-}" == "--qemu" ]]; then
    shift
    exec "$HERE/run-qemu.sh" "$@"
fi

if [[ $# -ne 1 ]]; then
    echo "usage: $0 OUTDIR | $0 --qemu [OUTDIR]" >&2
    exit 2
fi
OUT="$1"

CC="${RISCV_CC:-riscv64-linux-gnu-gcc}"

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
    else return 1
    fi
}

if ! command -v "$CC" >/dev/null 2>&1; then
    echo "build.sh: $CC not found; installing gcc-riscv64-linux-gnu with apt-get" >&2
    if command -v apt-get >/dev/null 2>&1; then
        { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive \
              apt-get install -y -qq gcc-riscv64-linux-gnu; } >&2 || true
    fi
    if ! command -v "$CC" >/dev/null 2>&1; then
        echo "build.sh: error: RISC-V cross compiler '$CC' is not available and could not be" >&2
        echo "  installed (need root/sudo and apt-get: apt-get install gcc-riscv64-linux-gnu)," >&2
        echo "  or set RISCV_CC to a riscv64 gcc." >&2
        exit 1
    fi
fi

mkdir -p "$OUT"

CFLAGS=(-march=rv64gc -mabi=lp64d -nostdlib -nostartfiles -static
        -fno-pic -fno-pie -no-pie -Wl,--build-id=none -Wl,--no-relax
        -T "$HERE/link.ld" -I "$HERE/common")

case "${ISA_QUIRKS:-}" in
    "") ;;
    qemu) CFLAGS+=(-DQEMU_QUIRKS) ;;
    *) echo "build.sh: error: unknown ISA_QUIRKS='$ISA_QUIRKS' (expected 'qemu' or unset)" >&2; exit 2 ;;
esac

status=0
count=0
for src in "$HERE"/src/*.S; do
    name="$(basename "$src" .S)"
    tmp="$OUT/.$name.elf.tmp.$$"
    if ! "$CC" "${CFLAGS[@]}" "-DTEST_NAME=\"$name\"" -o "$tmp" "$src"; then
        rm -f "$tmp"
        echo "build.sh: error: failed to build $src" >&2
        status=1
        continue
    fi
    mv -f "$tmp" "$OUT/$name.elf"     # atomic: concurrent builds are safe
    count=$((count + 1))
done

if [[ $status -ne 0 ]]; then
    echo "build.sh: error: some programs failed to build" >&2
    exit 1
fi
echo "build.sh: built $count programs into $OUT" >&2
