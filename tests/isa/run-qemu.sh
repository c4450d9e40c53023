#!/usr/bin/env bash
# Build every ISA test program and run it under QEMU's virt board, printing a
# pass/fail table. This is the reference the same programs must match on ftvm.
#
#   tests/isa/run-qemu.sh [OUTDIR] [NAME...]
#
# Every program must exit 0, except selftest_fail which must exit 7.
# By default the programs are built with ISA_QUIRKS=qemu (tolerating the
# documented QEMU 7.2 spec deviations, see README.md); run with STRICT=1 to
# build the spec-only variant that ftvm is judged by and see where QEMU
# differs.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:-$HERE/build}"
shift || true
QEMU="${QEMU:-qemu-system-riscv64}"
TIMEOUT="${TIMEOUT:-20}"

if ! command -v "$QEMU" >/dev/null 2>&1; then
    echo "run-qemu.sh: $QEMU not found (apt-get install qemu-system-misc)" >&2
    exit 1
fi

if [[ "${STRICT:-0}" == 1 ]]; then
    "$HERE/build.sh" "$OUT" || exit 1
else
    ISA_QUIRKS=qemu "$HERE/build.sh" "$OUT" || exit 1
fi

if [[ $# -gt 0 ]]; then
    names=("$@")
else
    names=()
    for elf in "$OUT"/*.elf; do names+=("$(basename "$elf" .elf)"); done
fi

bad=0
printf '%-16s %-6s %-8s %-6s %s\n' PROGRAM EXIT EXPECTED RESULT OUTPUT
for name in "${names[@]}"; do
    expected=0
    [[ "$name" == selftest_fail ]] && expected=7
    log="$OUT/$name.qemu.log"
    timeout -k 2 "$TIMEOUT" "$QEMU" -M virt -bios none -m 64M -nographic \
        -kernel "$OUT/$name.elf" </dev/null >"$log" 2>&1
    code=$?
    if [[ $code -eq $expected ]]; then result=ok; else result=FAIL; bad=$((bad + 1)); fi
    last="$(tr -d '\r' <"$log" | grep -v '^$' | tail -n 1)"
    printf '%-16s %-6s %-8s %-6s %s\n' "$name" "$code" "$expected" "$result" "$last"
done
total=${#names[@]}
echo "$((total - bad)) passed, $bad failed"
[[ $bad -eq 0 ]]
