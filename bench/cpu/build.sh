#!/usr/bin/env bash
# Builds bench/cpu/cpubench.elf (bare metal, for `ftvm run --bios none` and
# `qemu-system-riscv64 -M virt -bios none`) into OUTDIR.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: build.sh OUTDIR}"
mkdir -p "$OUT"
riscv64-linux-gnu-gcc -O2 -march=rv64gc -mabi=lp64d -ffreestanding -fno-builtin \
    -nostdlib -nostartfiles -static -mcmodel=medany -T "$HERE/../../tests/isa/link.ld" \
    -DEXPECTED=0x49a8d81cu \
    -o "$OUT/cpubench.elf" "$HERE/start.S" "$HERE/cpubench.c"
echo "$OUT/cpubench.elf"
