#!/usr/bin/env bash
# Regenerates rvc_vectors.txt: reference pairs (16-bit RVC encoding, 32-bit
# RV64G encoding) produced by the real GNU assembler. For every case we
# assemble the compressed form under `.option rvc` and the equivalent full
# instruction under `.option norvc`, then read both encodings back with
# objdump. The unit tests in crates/cpu/src/rvc.rs check
# `expand(c) == Some(full)` for every line, so the assembler is only needed
# when regenerating.
#
# Usage: crates/cpu/tests/data/gen_rvc_vectors.sh   (needs binutils-riscv64-linux-gnu)
set -euo pipefail

AS=${AS:-riscv64-linux-gnu-as}
OBJCOPY=${OBJCOPY:-riscv64-linux-gnu-objcopy}
here=$(cd "$(dirname "$0")" && pwd)
out="$here/rvc_vectors.txt"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pairs="$work/pairs"
: >"$pairs"
# pair COMPRESSED FULL — one test case.
pair() { printf '%s|%s\n' "$1" "$2" >>"$pairs"; }

# Register sets. Compressed 3-bit fields address x8..x15 / f8..f15.
CX=(x8 x9 x10 x11 x12 x13 x14 x15)
CF=(f8 f9 f10 f11 f12 f13 f14 f15)
XALL=()
FALL=()
for i in $(seq 0 31); do XALL+=("x$i"); FALL+=("f$i"); done
XNZ=("${XALL[@]:1}")            # x1..x31
XLUI=(x0 x1 "${XALL[@]:3}")     # everything but x2 (x0 is a HINT)

# Immediate edge sets: zero (where legal), each bit alone, max, min, -1.
SIMM6=(0 1 2 4 8 16 31 -1 -2 -16 -31 -32)
SIMM6NZ=(1 2 4 8 16 31 -1 -2 -16 -31 -32)
SHAMT=(1 2 4 8 16 32 31 33 62 63)
ADDI4SPN=(4 8 16 32 64 128 256 512 1020 516 12)
ADDI16SP=(16 32 64 128 256 496 -16 -32 -256 -496 -512)
# c.lui nzimm[17:12] as the assembler spells it (20-bit field).
LUI=(1 2 4 8 16 31 0xfffe0 0xfffe1 0xffff0 0xfffff)
U5X8=(0 8 16 32 64 128 248)   # c.fld/c.ld/c.fsd/c.sd offsets
U5X4=(0 4 8 16 32 64 124)     # c.lw/c.sw offsets
U6X8=(0 8 16 32 64 128 256 504)   # sp-relative doubleword offsets
U6X4=(0 4 8 16 32 64 128 252)     # sp-relative word offsets
JOFF=(0 2 4 8 16 32 64 128 256 512 1024 2046 -2 -4 -1024 -2046 -2048)
BOFF=(0 2 4 8 16 32 64 128 254 -2 -4 -128 -254 -256)

# ---- Quadrant 0 ----------------------------------------------------------
for rd in "${CX[@]}"; do
  for imm in "${ADDI4SPN[@]}"; do pair "c.addi4spn $rd, sp, $imm" "addi $rd, sp, $imm"; done
done
# Two-register formats: every value in each field, paired two ways
# (b = a and b = a rotated), rather than the full 8x8 cross product.
for i in "${!CX[@]}"; do
  a=${CX[$i]}
  for b in "${CX[$i]}" "${CX[$(((i + 5) % 8))]}"; do
    for off in "${U5X4[@]}"; do
      pair "c.lw $a, $off($b)" "lw $a, $off($b)"
      pair "c.sw $a, $off($b)" "sw $a, $off($b)"
    done
    for off in "${U5X8[@]}"; do
      pair "c.ld $a, $off($b)" "ld $a, $off($b)"
      pair "c.sd $a, $off($b)" "sd $a, $off($b)"
    done
  done
done
for i in "${!CF[@]}"; do
  for b in "${CX[$i]}" "${CX[$(((i + 3) % 8))]}"; do
    for off in "${U5X8[@]}"; do
      pair "c.fld ${CF[$i]}, $off($b)" "fld ${CF[$i]}, $off($b)"
      pair "c.fsd ${CF[$i]}, $off($b)" "fsd ${CF[$i]}, $off($b)"
    done
  done
done

# ---- Quadrant 1 ----------------------------------------------------------
pair "c.nop" "addi x0, x0, 0"
for imm in "${SIMM6NZ[@]}"; do pair "c.nop $imm" "addi x0, x0, $imm"; done
for rd in "${XALL[@]}"; do
  for imm in "${SIMM6[@]}"; do
    pair "c.addi $rd, $imm" "addi $rd, $rd, $imm"
    pair "c.li $rd, $imm" "addi $rd, x0, $imm"
  done
done
for rd in "${XNZ[@]}"; do
  for imm in "${SIMM6[@]}"; do pair "c.addiw $rd, $imm" "addiw $rd, $rd, $imm"; done
done
for imm in "${ADDI16SP[@]}"; do pair "c.addi16sp sp, $imm" "addi sp, sp, $imm"; done
for rd in "${XLUI[@]}"; do
  for imm in "${LUI[@]}"; do pair "c.lui $rd, $imm" "lui $rd, $imm"; done
done
for rd in "${CX[@]}"; do
  for sh in "${SHAMT[@]}"; do
    pair "c.srli $rd, $sh" "srli $rd, $rd, $sh"
    pair "c.srai $rd, $sh" "srai $rd, $rd, $sh"
  done
  for imm in "${SIMM6[@]}"; do pair "c.andi $rd, $imm" "andi $rd, $rd, $imm"; done
  for rs in "${CX[@]}"; do
    for op in sub xor or and subw addw; do pair "c.$op $rd, $rs" "$op $rd, $rd, $rs"; done
  done
done
# Shift-by-zero HINTs: the assembler refuses `c.srli rd, 0`, so spell them
# with `.insn ci` (the CI layout puts funct2|rd' into the rd slot: x2..x7
# hold funct2=00 (SRLI) and x10..x15 hold funct2=01 (SRAI) for rd'=x10..).
for k in 0 1 2 3 4 5 6 7; do
  pair ".insn ci 1, 4, x$k, 0" "srli x$((k + 8)), x$((k + 8)), 0"
  pair ".insn ci 1, 4, x$((k + 8)), 0" "srai x$((k + 8)), x$((k + 8)), 0"
done
for off in "${JOFF[@]}"; do pair "c.j .+($off)" "jal x0, .+($off)"; done
for rs in "${CX[@]}"; do
  for off in "${BOFF[@]}"; do
    pair "c.beqz $rs, .+($off)" "beq $rs, x0, .+($off)"
    pair "c.bnez $rs, .+($off)" "bne $rs, x0, .+($off)"
  done
done

# ---- Quadrant 2 ----------------------------------------------------------
for rd in "${XALL[@]}"; do
  for sh in "${SHAMT[@]}"; do pair "c.slli $rd, $sh" "slli $rd, $rd, $sh"; done
  pair ".insn ci 2, 0, $rd, 0" "slli $rd, $rd, 0"
done
for i in "${!FALL[@]}"; do
  for off in "${U6X8[@]}"; do
    pair "c.fldsp ${FALL[$i]}, $off(sp)" "fld ${FALL[$i]}, $off(sp)"
    pair "c.fsdsp ${FALL[$i]}, $off(sp)" "fsd ${FALL[$i]}, $off(sp)"
  done
done
for rd in "${XNZ[@]}"; do
  for off in "${U6X4[@]}"; do pair "c.lwsp $rd, $off(sp)" "lw $rd, $off(sp)"; done
  for off in "${U6X8[@]}"; do pair "c.ldsp $rd, $off(sp)" "ld $rd, $off(sp)"; done
  pair "c.jr $rd" "jalr x0, 0($rd)"
  pair "c.jalr $rd" "jalr x1, 0($rd)"
done
for rs in "${XALL[@]}"; do
  for off in "${U6X4[@]}"; do pair "c.swsp $rs, $off(sp)" "sw $rs, $off(sp)"; done
  for off in "${U6X8[@]}"; do pair "c.sdsp $rs, $off(sp)" "sd $rs, $off(sp)"; done
done
for k in $(seq 0 31); do
  rd=x$k
  for rs in x1 x31 "x$((k % 31 + 1))" "x$(((k + 13) % 31 + 1))"; do
    pair "c.mv $rd, $rs" "add $rd, x0, $rs"
    pair "c.add $rd, $rs" "add $rd, $rd, $rs"
  done
done
pair "c.ebreak" "ebreak"

# ---- Assemble and read back ------------------------------------------------
{
  echo ".option norelax"
  while IFS='|' read -r c f; do
    printf '.option rvc\n%s\n.option norvc\n%s\n' "$c" "$f"
  done <"$pairs"
} >"$work/v.s"
"$AS" -march=rv64gc -o "$work/v.o" "$work/v.s"
# Read the raw .text back as little-endian halfwords and regroup them into
# instructions by the length rule (low two bits 0b11 => 32-bit). objdump is
# avoided: it is quadratic in the many mapping symbols `.option` emits.
"$OBJCOPY" -O binary -j .text "$work/v.o" "$work/v.bin"
od -An -v -tx2 -w2 "$work/v.bin" | tr -d ' ' |
  awk '{
    if (lo != "") { print $0 lo; lo = ""; next }
    if (substr($0, 4, 1) ~ /[37bf]/) { lo = $0; next }
    print $0
  }' >"$work/hex"

n=$(wc -l <"$pairs")
if [ "$(wc -l <"$work/hex")" -ne $((2 * n)) ]; then
  echo "instruction count mismatch" >&2
  exit 1
fi
{
  echo "# Generated by gen_rvc_vectors.sh with $("$AS" --version | head -n1)."
  echo "# <16-bit rvc hex> <32-bit expansion hex> <compressed source> => <full source>"
  paste -d'|' - - <"$work/hex" | paste -d'|' - "$pairs" |
    while IFS='|' read -r ch fh c f; do
      if [ ${#ch} -ne 4 ] || [ ${#fh} -ne 8 ]; then
        echo "bad widths for '$c' / '$f': $ch $fh" >&2
        exit 1
      fi
      printf '%s %s %s => %s\n' "$ch" "$fh" "$c" "$f"
    done
} >"$out"
echo "wrote $n vectors to $out"
