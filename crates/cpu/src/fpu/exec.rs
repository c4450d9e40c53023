//! Decode and execution of the F/D computational instructions: field
//! extraction, validation of the encoding and of the rounding mode, operand
//! reads (singles unboxed), dispatch to the value-level operations in `ops`,
//! and write-back (singles NaN-boxed, integer results to `x`, flags accrued).
//! An instruction that turns out to be illegal changes no state.

use super::ops::{self, Double, Format, IntFmt, Single};
use super::{nan_box, unbox, FpRegs, IllegalFp};

const OP_FP: u32 = 0b101_0011;
const MADD: u32 = 0b100_0011;
const MSUB: u32 = 0b100_0111;
const NMSUB: u32 = 0b100_1011;
const NMADD: u32 = 0b100_1111;

/// Executes one F/D computational instruction: major opcodes OP-FP
/// (0b1010011), MADD (0b1000011), MSUB (0b1000111), NMSUB (0b1001011) and
/// NMADD (0b1001111). `x` is the integer register file; writes to `x[0]` are
/// discarded (`x[0]` stays 0). Loads and stores (FLW/FLD/FSW/FSD) are not
/// handled here: the hart does them with [`nan_box`](super::nan_box) and
/// [`unbox`](super::unbox). The hart checks `mstatus.FS != Off` before calling
/// and marks FS dirty after.
///
/// Returns [`IllegalFp`] (leaving `fp` and `x` untouched) for any other
/// opcode, a reserved encoding, or an invalid rounding mode (rm=5/6, or rm=7
/// while `frm` holds 5..=7).
#[inline]
pub fn execute(fp: &mut FpRegs, x: &mut [u64; 32], insn: u32) -> Result<(), IllegalFp> {
    match insn & 0x7f {
        OP_FP => op_fp(fp, x, insn),
        MADD => fused(fp, insn, false, false),
        MSUB => fused(fp, insn, false, true),
        NMSUB => fused(fp, insn, true, false),
        NMADD => fused(fp, insn, true, true),
        _ => Err(IllegalFp),
    }
}

#[inline(always)]
fn reg(insn: u32, lsb: u32) -> usize {
    ((insn >> lsb) & 31) as usize
}

/// The effective rounding mode: the instruction's rm field, or `frm` when it
/// is 7 (dynamic); modes 5 and above are reserved.
#[inline(always)]
fn rounding_mode(insn: u32, frm: u8) -> Result<u8, IllegalFp> {
    let rm = ((insn >> 12) & 7) as u8;
    let rm = if rm == 7 { frm } else { rm };
    if rm <= ops::RMM {
        Ok(rm)
    } else {
        Err(IllegalFp)
    }
}

#[inline(always)]
fn single(fp: &FpRegs, r: usize) -> u32 {
    unbox(fp.f[r])
}

#[inline(always)]
fn write_s(fp: &mut FpRegs, rd: usize, (v, flags): (u32, u8)) {
    fp.f[rd] = nan_box(v);
    fp.fflags |= flags;
}

#[inline(always)]
fn write_d(fp: &mut FpRegs, rd: usize, (v, flags): (u64, u8)) {
    fp.f[rd] = v;
    fp.fflags |= flags;
}

#[inline(always)]
fn write_x(x: &mut [u64; 32], rd: usize, v: u64) {
    if rd != 0 {
        x[rd] = v;
    }
}

/// MADD/MSUB/NMSUB/NMADD (R4-type; fmt in bits 26:25, rs3 in bits 31:27).
#[inline]
fn fused(fp: &mut FpRegs, insn: u32, neg_product: bool, neg_addend: bool) -> Result<(), IllegalFp> {
    let fmt = (insn >> 25) & 3;
    if fmt > 1 {
        return Err(IllegalFp);
    }
    let rm = rounding_mode(insn, fp.frm)?;
    let (rd, rs1, rs2, rs3) = (reg(insn, 7), reg(insn, 15), reg(insn, 20), reg(insn, 27));
    if fmt == 0 {
        let (a, b, c) = (single(fp, rs1), single(fp, rs2), single(fp, rs3));
        write_s(fp, rd, ops::fma_s(a, b, c, neg_product, neg_addend, rm));
    } else {
        let (a, b, c) = (fp.f[rs1], fp.f[rs2], fp.f[rs3]);
        write_d(fp, rd, ops::fma_d(a, b, c, neg_product, neg_addend, rm));
    }
    Ok(())
}

/// The OP-FP major opcode, decoded on funct7 (whose low two bits are fmt).
fn op_fp(fp: &mut FpRegs, x: &mut [u64; 32], insn: u32) -> Result<(), IllegalFp> {
    let rd = reg(insn, 7);
    let funct3 = (insn >> 12) & 7;
    let rs1 = reg(insn, 15);
    let rs2_field = (insn >> 20) & 31;
    let rs2 = rs2_field as usize;
    let funct7 = insn >> 25;
    match funct7 {
        // FADD.S / FSUB.S / FMUL.S / FDIV.S
        0x00 | 0x04 | 0x08 | 0x0c => {
            let rm = rounding_mode(insn, fp.frm)?;
            let (a, b) = (single(fp, rs1), single(fp, rs2));
            let r = match funct7 {
                0x00 => ops::add_s(a, b, rm),
                0x04 => ops::sub_s(a, b, rm),
                0x08 => ops::mul_s(a, b, rm),
                _ => ops::div_s(a, b, rm),
            };
            write_s(fp, rd, r);
        }
        // FADD.D / FSUB.D / FMUL.D / FDIV.D
        0x01 | 0x05 | 0x09 | 0x0d => {
            let rm = rounding_mode(insn, fp.frm)?;
            let (a, b) = (fp.f[rs1], fp.f[rs2]);
            let r = match funct7 {
                0x01 => ops::add_d(a, b, rm),
                0x05 => ops::sub_d(a, b, rm),
                0x09 => ops::mul_d(a, b, rm),
                _ => ops::div_d(a, b, rm),
            };
            write_d(fp, rd, r);
        }
        // FSQRT.S / FSQRT.D
        0x2c if rs2_field == 0 => {
            let rm = rounding_mode(insn, fp.frm)?;
            let r = ops::sqrt_s(single(fp, rs1), rm);
            write_s(fp, rd, r);
        }
        0x2d if rs2_field == 0 => {
            let rm = rounding_mode(insn, fp.frm)?;
            let r = ops::sqrt_d(fp.f[rs1], rm);
            write_d(fp, rd, r);
        }
        // FSGNJ.S / FSGNJN.S / FSGNJX.S
        0x10 if funct3 <= 2 => {
            let (a, b) = (u64::from(single(fp, rs1)), u64::from(single(fp, rs2)));
            let v = sign_inject::<Single>(funct3, a, b);
            fp.f[rd] = nan_box(v as u32);
        }
        // FSGNJ.D / FSGNJN.D / FSGNJX.D
        0x11 if funct3 <= 2 => {
            let (a, b) = (fp.f[rs1], fp.f[rs2]);
            fp.f[rd] = sign_inject::<Double>(funct3, a, b);
        }
        // FMIN.S / FMAX.S
        0x14 if funct3 <= 1 => {
            let (a, b) = (u64::from(single(fp, rs1)), u64::from(single(fp, rs2)));
            let (v, flags) = ops::min_max::<Single>(a, b, funct3 == 1);
            write_s(fp, rd, (v as u32, flags));
        }
        // FMIN.D / FMAX.D
        0x15 if funct3 <= 1 => {
            let r = ops::min_max::<Double>(fp.f[rs1], fp.f[rs2], funct3 == 1);
            write_d(fp, rd, r);
        }
        // FCVT.S.D
        0x20 if rs2_field == 1 => {
            let rm = rounding_mode(insn, fp.frm)?;
            let r = ops::d_to_s(fp.f[rs1], rm);
            write_s(fp, rd, r);
        }
        // FCVT.D.S (exact, but the rm field must still be valid)
        0x21 if rs2_field == 0 => {
            rounding_mode(insn, fp.frm)?;
            let r = ops::s_to_d(single(fp, rs1));
            write_d(fp, rd, r);
        }
        // FLE.S / FLT.S / FEQ.S
        0x50 if funct3 <= 2 => {
            let (a, b) = (u64::from(single(fp, rs1)), u64::from(single(fp, rs2)));
            compare::<Single>(fp, x, rd, funct3, a, b);
        }
        // FLE.D / FLT.D / FEQ.D
        0x51 if funct3 <= 2 => {
            let (a, b) = (fp.f[rs1], fp.f[rs2]);
            compare::<Double>(fp, x, rd, funct3, a, b);
        }
        // FCVT.{W,WU,L,LU}.S
        0x60 => {
            let to = IntFmt::from_rs2(rs2_field).ok_or(IllegalFp)?;
            let rm = rounding_mode(insn, fp.frm)?;
            let (v, flags) = ops::s_to_int(single(fp, rs1), to, rm);
            write_x(x, rd, v);
            fp.fflags |= flags;
        }
        // FCVT.{W,WU,L,LU}.D
        0x61 => {
            let to = IntFmt::from_rs2(rs2_field).ok_or(IllegalFp)?;
            let rm = rounding_mode(insn, fp.frm)?;
            let (v, flags) = ops::d_to_int(fp.f[rs1], to, rm);
            write_x(x, rd, v);
            fp.fflags |= flags;
        }
        // FCVT.S.{W,WU,L,LU}
        0x68 => {
            let from = IntFmt::from_rs2(rs2_field).ok_or(IllegalFp)?;
            let rm = rounding_mode(insn, fp.frm)?;
            let r = ops::int_to_s(x[rs1], from, rm);
            write_s(fp, rd, r);
        }
        // FCVT.D.{W,WU,L,LU}
        0x69 => {
            let from = IntFmt::from_rs2(rs2_field).ok_or(IllegalFp)?;
            let rm = rounding_mode(insn, fp.frm)?;
            let r = ops::int_to_d(x[rs1], from, rm);
            write_d(fp, rd, r);
        }
        // FMV.X.W: moves the raw low 32 bits (no unboxing), sign-extended.
        0x70 if rs2_field == 0 && funct3 == 0 => {
            write_x(x, rd, fp.f[rs1] as u32 as i32 as i64 as u64);
        }
        // FCLASS.S
        0x70 if rs2_field == 0 && funct3 == 1 => {
            write_x(x, rd, ops::classify::<Single>(u64::from(single(fp, rs1))));
        }
        // FMV.X.D
        0x71 if rs2_field == 0 && funct3 == 0 => {
            write_x(x, rd, fp.f[rs1]);
        }
        // FCLASS.D
        0x71 if rs2_field == 0 && funct3 == 1 => {
            write_x(x, rd, ops::classify::<Double>(fp.f[rs1]));
        }
        // FMV.W.X
        0x78 if rs2_field == 0 && funct3 == 0 => {
            fp.f[rd] = nan_box(x[rs1] as u32);
        }
        // FMV.D.X
        0x79 if rs2_field == 0 && funct3 == 0 => {
            fp.f[rd] = x[rs1];
        }
        _ => return Err(IllegalFp),
    }
    Ok(())
}

/// FSGNJ (funct3 0), FSGNJN (1), FSGNJX (2).
#[inline(always)]
fn sign_inject<F: Format>(funct3: u32, a: u64, b: u64) -> u64 {
    match funct3 {
        0 => ops::sgnj::<F>(a, b),
        1 => ops::sgnjn::<F>(a, b),
        _ => ops::sgnjx::<F>(a, b),
    }
}

/// FLE (funct3 0), FLT (1), FEQ (2): writes 1/0 to `x[rd]` and accrues flags.
#[inline(always)]
fn compare<F: Format>(fp: &mut FpRegs, x: &mut [u64; 32], rd: usize, funct3: u32, a: u64, b: u64) {
    let (r, flags) = match funct3 {
        0 => ops::fle::<F>(a, b),
        1 => ops::flt::<F>(a, b),
        _ => ops::feq::<F>(a, b),
    };
    write_x(x, rd, u64::from(r));
    fp.fflags |= flags;
}
