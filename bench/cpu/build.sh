#!/usr/bin/env bash
# Builds bench/cpu/cpubench.elf (bare metal, for `ftvm run --bios none` and
# `qemu-system-riscv64 -M virt -bios none`) into OUTDIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: build.sh OUTDIR}"
mkdir -p "$OUT"
# ROUNDS (default 60) sets the length; the self-check value for it comes
# from the same C code compiled for the host.
ROUNDS="${ROUNDS:-60}"
if [ "$ROUNDS" = 60 ]; then
    EXPECTED=0x49a8d81cu
    NAME=cpubench
else
    gcc -O2 -DHOST -DROUNDS="$ROUNDS" -o "$OUT/cpubench-host" "$HERE/cpubench.c"
    EXPECTED="$("$OUT/cpubench-host")"
    NAME="cpubench-$ROUNDS"
fi
riscv64-linux-gnu-gcc -O2 -march=rv64gc -mabi=lp64d -ffreestanding -fno-builtin \
    -nostdlib -nostartfiles -static -mcmodel=medany -T "$HERE/../../tests/isa/link.ld" \
    -DEXPECTED="$EXPECTED" -DROUNDS="$ROUNDS" \
    -o "$OUT/$NAME.elf" "$HERE/start.S" "$HERE/cpubench.c"
echo "$OUT/$NAME.elf"
