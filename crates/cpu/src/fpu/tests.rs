//! Unit tests for the FPU: instructions are encoded with small R/R4-type
//! encoders, run through `execute`, and checked bit-for-bit (results, NaN
//! boxing, x-register writes) and flag-for-flag against correctly rounded
//! values, the RISC-V conversion table, and the host's round-to-nearest-even
//! arithmetic on random operands.

use super::ops::{CANON_D, CANON_S, DZ, NV, NX, OF, RDN, RMM, RNE, RTZ, RUP, UF};
use super::*;

// ---------------------------------------------------------------- encoders

const OP_FP: u32 = 0b101_0011;
const MADD: u32 = 0b100_0011;
const MSUB: u32 = 0b100_0111;
const NMSUB: u32 = 0b100_1011;
const NMADD: u32 = 0b100_1111;

/// fmt (low two bits of funct7 / R4 bits 26:25).
const S: u32 = 0;
const D: u32 = 1;
/// Dynamic rounding mode.
const DYN: u32 = 7;

// funct7 values for the single-precision form; add the fmt for others.
const FADD: u32 = 0x00;
const FSUB: u32 = 0x04;
const FMUL: u32 = 0x08;
const FDIV: u32 = 0x0c;
const FSQRT: u32 = 0x2c;
const FSGNJ: u32 = 0x10;
const FMINMAX: u32 = 0x14;
const FCVT_S_D: u32 = 0x20;
const FCVT_D_S: u32 = 0x21;
const FCMP: u32 = 0x50;
const FCVT_TO_INT: u32 = 0x60;
const FCVT_FROM_INT: u32 = 0x68;
const FMV_TO_X: u32 = 0x70;
const FMV_FROM_X: u32 = 0x78;

// rs2 selectors of the integer conversions.
const W: u32 = 0;
const WU: u32 = 1;
const L: u32 = 2;
const LU: u32 = 3;

fn r_type(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | OP_FP
}

#[allow(clippy::too_many_arguments)]
fn r4_type(opcode: u32, fmt: u32, rs3: u32, rs2: u32, rs1: u32, rm: u32, rd: u32) -> u32 {
    (rs3 << 27) | (fmt << 25) | (rs2 << 20) | (rs1 << 15) | (rm << 12) | (rd << 7) | opcode
}

// ---------------------------------------------------------------- harness

#[derive(Default)]
struct Hart {
    fp: FpRegs,
    x: [u64; 32],
}

impl Hart {
    fn exec(&mut self, insn: u32) -> Result<(), IllegalFp> {
        let r = execute(&mut self.fp, &mut self.x, insn);
        assert_eq!(self.x[0], 0, "x0 written by {insn:#010x}");
        r
    }

    fn run(&mut self, insn: u32) {
        self.exec(insn)
            .unwrap_or_else(|_| panic!("{insn:#010x} unexpectedly illegal"));
    }

    /// The single in `f[r]`, asserting it is properly NaN-boxed.
    fn boxed(&self, r: usize) -> u32 {
        assert_eq!(
            self.fp.f[r] >> 32,
            0xffff_ffff,
            "f{r} not NaN-boxed: {:#x}",
            self.fp.f[r]
        );
        self.fp.f[r] as u32
    }
}

fn b32(v: f32) -> u32 {
    v.to_bits()
}

fn b64(v: f64) -> u64 {
    v.to_bits()
}

/// Single-precision binary op: f3 = f1 op f2.
fn s2(funct7: u32, a: u32, b: u32, rm: u32) -> (u32, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.fp.f[2] = nan_box(b);
    h.run(r_type(funct7, 2, 1, rm, 3));
    (h.boxed(3), h.fp.fflags)
}

/// Double-precision binary op: f3 = f1 op f2.
fn d2(funct7: u32, a: u64, b: u64, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.fp.f[2] = b;
    h.run(r_type(funct7 | D, 2, 1, rm, 3));
    (h.fp.f[3], h.fp.fflags)
}

fn s_fma(opcode: u32, a: u32, b: u32, c: u32, rm: u32) -> (u32, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.fp.f[2] = nan_box(b);
    h.fp.f[3] = nan_box(c);
    h.run(r4_type(opcode, S, 3, 2, 1, rm, 4));
    (h.boxed(4), h.fp.fflags)
}

fn d_fma(opcode: u32, a: u64, b: u64, c: u64, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.fp.f[2] = b;
    h.fp.f[3] = c;
    h.run(r4_type(opcode, D, 3, 2, 1, rm, 4));
    (h.fp.f[4], h.fp.fflags)
}

fn s_sqrt(a: u32, rm: u32) -> (u32, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.run(r_type(FSQRT, 0, 1, rm, 2));
    (h.boxed(2), h.fp.fflags)
}

fn d_sqrt(a: u64, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.run(r_type(FSQRT | D, 0, 1, rm, 2));
    (h.fp.f[2], h.fp.fflags)
}

/// FCVT.{W,WU,L,LU}.S: x5 = f1.
fn s_to_int(a: u32, kind: u32, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.x[5] = 0xdead_beef;
    h.run(r_type(FCVT_TO_INT, kind, 1, rm, 5));
    (h.x[5], h.fp.fflags)
}

fn d_to_int(a: u64, kind: u32, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.x[5] = 0xdead_beef;
    h.run(r_type(FCVT_TO_INT | D, kind, 1, rm, 5));
    (h.x[5], h.fp.fflags)
}

/// FCVT.S.{W,WU,L,LU}: f1 = x5.
fn int_to_s(v: u64, kind: u32, rm: u32) -> (u32, u8) {
    let mut h = Hart::default();
    h.x[5] = v;
    h.run(r_type(FCVT_FROM_INT, kind, 5, rm, 1));
    (h.boxed(1), h.fp.fflags)
}

fn int_to_d(v: u64, kind: u32, rm: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.x[5] = v;
    h.run(r_type(FCVT_FROM_INT | D, kind, 5, rm, 1));
    (h.fp.f[1], h.fp.fflags)
}

/// FLE (0) / FLT (1) / FEQ (2) .S: x5 = f1 cmp f2.
fn s_cmp(funct3: u32, a: u32, b: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.fp.f[2] = nan_box(b);
    h.x[5] = 0xdead_beef;
    h.run(r_type(FCMP, 2, 1, funct3, 5));
    (h.x[5], h.fp.fflags)
}

fn d_cmp(funct3: u32, a: u64, b: u64) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.fp.f[2] = b;
    h.x[5] = 0xdead_beef;
    h.run(r_type(FCMP | D, 2, 1, funct3, 5));
    (h.x[5], h.fp.fflags)
}

fn s_class(a: u32) -> u64 {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(a);
    h.run(r_type(FMV_TO_X, 0, 1, 1, 5));
    assert_eq!(h.fp.fflags, 0);
    h.x[5]
}

fn d_class(a: u64) -> u64 {
    let mut h = Hart::default();
    h.fp.f[1] = a;
    h.run(r_type(FMV_TO_X | D, 0, 1, 1, 5));
    assert_eq!(h.fp.fflags, 0);
    h.x[5]
}

const ALL_RM: [u32; 5] = [RNE as u32, RTZ as u32, RDN as u32, RUP as u32, RMM as u32];
const RNE_: u32 = RNE as u32;
const RTZ_: u32 = RTZ as u32;
const RDN_: u32 = RDN as u32;
const RUP_: u32 = RUP as u32;
const RMM_: u32 = RMM as u32;

const S_SNAN: u32 = 0x7f80_0001;
const S_QNAN_PAYLOAD: u32 = 0xffc1_2345;
const D_SNAN: u64 = 0x7ff0_0000_0000_0001;
const D_QNAN_PAYLOAD: u64 = 0xfff8_0000_dead_beef;
const S_MAX: u32 = 0x7f7f_ffff;
const D_MAX: u64 = 0x7fef_ffff_ffff_ffff;
const S_INF: u32 = 0x7f80_0000;
const D_INF: u64 = 0x7ff0_0000_0000_0000;

// ---------------------------------------------------------------- fcsr, boxing

#[test]
fn fcsr_packs_frm_and_fflags() {
    let mut fp = FpRegs::default();
    fp.set_fcsr(0xffff_ffff);
    assert_eq!((fp.fflags, fp.frm), (0x1f, 7));
    assert_eq!(fp.fcsr(), 0xff);
    fp.set_fcsr(0b011_10101);
    assert_eq!((fp.fflags, fp.frm), (0b10101, 0b011));
    assert_eq!(fp.fcsr(), 0b011_10101);
    fp.fflags = 0xff; // junk written directly by a careless caller is masked
    fp.frm = 0xff;
    assert_eq!(fp.fcsr(), 0xff);
}

#[test]
fn nan_box_and_unbox() {
    assert_eq!(nan_box(0x3f80_0000), 0xffff_ffff_3f80_0000);
    assert_eq!(unbox(0xffff_ffff_3f80_0000), 0x3f80_0000);
    assert_eq!(unbox(0xffff_fffe_3f80_0000), CANON_S);
    assert_eq!(unbox(0x0000_0000_3f80_0000), CANON_S);
    assert_eq!(unbox(0x7fff_ffff_0000_0000), CANON_S);
    assert_eq!(unbox(nan_box(S_SNAN)), S_SNAN);
}

#[test]
fn improperly_boxed_operands_are_canonical_nan() {
    let mut h = Hart::default();
    h.fp.f[1] = 0x0000_0000_3f80_0000; // 1.0f but not boxed
    h.fp.f[2] = nan_box(b32(2.0));
    h.run(r_type(FADD, 2, 1, RNE_, 3));
    assert_eq!(h.boxed(3), CANON_S);
    assert_eq!(h.fp.fflags, 0, "the canonical NaN is quiet: no NV");
    // FCLASS.S of an unboxed value: quiet NaN.
    h.run(r_type(FMV_TO_X, 0, 1, 1, 5));
    assert_eq!(h.x[5], 1 << 9);
    // FSGNJN.S: canonical NaN magnitude, sign from rs2's negation.
    h.run(r_type(FSGNJ, 2, 1, 1, 4));
    assert_eq!(h.boxed(4), 0xffc0_0000);
    // FCVT.D.S of the canonical NaN.
    h.run(r_type(FCVT_D_S, 0, 1, RNE_, 6));
    assert_eq!(h.fp.f[6], CANON_D);
    // FMIN.S: the unboxed operand is a NaN, so the other one wins.
    h.run(r_type(FMINMAX, 2, 1, 0, 7));
    assert_eq!(h.boxed(7), b32(2.0));
    // FEQ.S against it: unordered, quiet.
    h.run(r_type(FCMP, 2, 1, 2, 8));
    assert_eq!(h.x[8], 0);
    assert_eq!(h.fp.fflags, 0);
}

#[test]
fn fmv_moves_raw_bits() {
    let mut h = Hart::default();
    // FMV.X.W does not check boxing: it sign-extends the low 32 bits.
    h.fp.f[1] = 0x1234_5678_8000_0001;
    h.run(r_type(FMV_TO_X, 0, 1, 0, 5));
    assert_eq!(h.x[5], 0xffff_ffff_8000_0001);
    h.fp.f[1] = 0xffff_ffff_7f80_0001; // a boxed sNaN moves unchanged
    h.run(r_type(FMV_TO_X, 0, 1, 0, 5));
    assert_eq!(h.x[5], 0x7f80_0001);
    // FMV.W.X boxes the low 32 bits.
    h.x[6] = 0xaaaa_bbbb_7fa0_0001;
    h.run(r_type(FMV_FROM_X, 0, 6, 0, 2));
    assert_eq!(h.fp.f[2], 0xffff_ffff_7fa0_0001);
    // FMV.X.D / FMV.D.X are raw.
    h.x[7] = 0x7ff0_0000_0000_0042;
    h.run(r_type(FMV_FROM_X | D, 0, 7, 0, 3));
    assert_eq!(h.fp.f[3], 0x7ff0_0000_0000_0042);
    h.run(r_type(FMV_TO_X | D, 0, 3, 0, 8));
    assert_eq!(h.x[8], 0x7ff0_0000_0000_0042);
    assert_eq!(h.fp.fflags, 0);
    // Writes to x0 are discarded.
    h.run(r_type(FMV_TO_X | D, 0, 3, 0, 0));
    h.run(r_type(FMV_TO_X, 0, 1, 0, 0));
}

#[test]
fn integer_results_to_x0_are_discarded() {
    let mut h = Hart::default();
    h.fp.f[1] = b64(-7.5);
    h.fp.f[2] = nan_box(b32(3.0));
    h.run(r_type(FCVT_TO_INT | D, L, 1, RTZ_, 0));
    h.run(r_type(FCMP | D, 1, 1, 2, 0));
    h.run(r_type(FMV_TO_X | D, 0, 1, 1, 0));
    h.run(r_type(FCVT_TO_INT, W, 2, RNE_, 0));
    assert_eq!(h.x, [0; 32]);
    assert_eq!(h.fp.fflags, NX, "flags still accrue when rd is x0");
}

// ---------------------------------------------------------------- rounding

#[test]
fn division_in_every_rounding_mode_single() {
    let third = [
        0x3eaa_aaab,
        0x3eaa_aaaa,
        0x3eaa_aaaa,
        0x3eaa_aaab,
        0x3eaa_aaab,
    ];
    let two_thirds = [
        0x3f2a_aaab,
        0x3f2a_aaaa,
        0x3f2a_aaaa,
        0x3f2a_aaab,
        0x3f2a_aaab,
    ];
    let minus_third = [
        0xbeaa_aaab,
        0xbeaa_aaaa,
        0xbeaa_aaab,
        0xbeaa_aaaa,
        0xbeaa_aaab,
    ];
    for (i, &rm) in ALL_RM.iter().enumerate() {
        assert_eq!(
            s2(FDIV, b32(1.0), b32(3.0), rm),
            (third[i], NX),
            "1/3 rm={rm}"
        );
        assert_eq!(
            s2(FDIV, b32(2.0), b32(3.0), rm),
            (two_thirds[i], NX),
            "2/3 rm={rm}"
        );
        assert_eq!(
            s2(FDIV, b32(-1.0), b32(3.0), rm),
            (minus_third[i], NX),
            "-1/3 rm={rm}"
        );
        assert_eq!(
            s2(FDIV, b32(1.0), b32(4.0), rm),
            (b32(0.25), 0),
            "exact rm={rm}"
        );
    }
}

#[test]
fn division_in_every_rounding_mode_double() {
    let lo3 = 0x3fd5_5555_5555_5555;
    let lo23 = 0x3fe5_5555_5555_5555;
    let third = [lo3, lo3, lo3, lo3 + 1, lo3];
    let two_thirds = [lo23, lo23, lo23, lo23 + 1, lo23];
    let minus_third = [lo3, lo3, lo3 + 1, lo3, lo3].map(|v| v | 1 << 63);
    for (i, &rm) in ALL_RM.iter().enumerate() {
        assert_eq!(
            d2(FDIV, b64(1.0), b64(3.0), rm),
            (third[i], NX),
            "1/3 rm={rm}"
        );
        assert_eq!(
            d2(FDIV, b64(2.0), b64(3.0), rm),
            (two_thirds[i], NX),
            "2/3 rm={rm}"
        );
        assert_eq!(
            d2(FDIV, b64(-1.0), b64(3.0), rm),
            (minus_third[i], NX),
            "-1/3 rm={rm}"
        );
    }
}

#[test]
fn dynamic_rounding_mode_comes_from_frm() {
    for (i, &frm) in ALL_RM.iter().enumerate() {
        let mut h = Hart::default();
        h.fp.frm = frm as u8;
        h.fp.f[1] = nan_box(b32(2.0));
        h.fp.f[2] = nan_box(b32(3.0));
        h.run(r_type(FDIV, 2, 1, DYN, 3));
        let want = [
            0x3f2a_aaab,
            0x3f2a_aaaa,
            0x3f2a_aaaa,
            0x3f2a_aaab,
            0x3f2a_aaab,
        ][i];
        assert_eq!(h.boxed(3), want, "frm={frm}");
        // A static rm overrides frm.
        h.run(r_type(FDIV, 2, 1, RTZ_, 4));
        assert_eq!(h.boxed(4), 0x3f2a_aaaa);
    }
}

#[test]
fn ties_rne_versus_rmm() {
    // 1 + 2^-24 is halfway between 1.0 and the next single.
    let tie = 0x3380_0000; // 2^-24
    let up = 0x3f80_0001;
    let one = b32(1.0);
    assert_eq!(s2(FADD, one, tie, RNE_), (one, NX));
    assert_eq!(s2(FADD, one, tie, RMM_), (up, NX));
    assert_eq!(s2(FADD, one, tie, RTZ_), (one, NX));
    assert_eq!(s2(FADD, one, tie, RDN_), (one, NX));
    assert_eq!(s2(FADD, one, tie, RUP_), (up, NX));
    // 1 + 3*2^-24 ties between odd 1+2^-23 and even 1+2^-22: both nearest modes round up.
    let (v, _) = s2(FADD, up, tie, RNE_);
    assert_eq!(v, 0x3f80_0002);
    // Double: 1 + 2^-53.
    let tie = b64(2f64.powi(-53));
    assert_eq!(d2(FADD, b64(1.0), tie, RNE_), (b64(1.0), NX));
    assert_eq!(d2(FADD, b64(1.0), tie, RMM_), (b64(1.0) + 1, NX));
    // Negative ties: RMM goes away from zero.
    assert_eq!(d2(FSUB, b64(-1.0), tie, RMM_), (b64(-1.0) + 1, NX));
    assert_eq!(d2(FSUB, b64(-1.0), tie, RNE_), (b64(-1.0), NX));
}

#[test]
fn exact_zero_sum_sign_depends_on_rounding_mode() {
    for rm in ALL_RM {
        let want = if rm == RDN_ { 0x8000_0000_0000_0000 } else { 0 };
        assert_eq!(d2(FSUB, b64(1.5), b64(1.5), rm), (want, 0), "rm={rm}");
        let want_s = (want >> 32) as u32;
        assert_eq!(s2(FADD, b32(1.5), b32(-1.5), rm), (want_s, 0), "rm={rm}");
    }
    // (-0) + (-0) = -0 in every mode.
    assert_eq!(s2(FADD, 0x8000_0000, 0x8000_0000, RNE_), (0x8000_0000, 0));
}

#[test]
fn overflow_by_rounding_mode() {
    // Positive overflow: inf unless rounding towards zero or down.
    let pos_s = [S_INF, S_MAX, S_MAX, S_INF, S_INF];
    let pos_d = [D_INF, D_MAX, D_MAX, D_INF, D_INF];
    for (i, &rm) in ALL_RM.iter().enumerate() {
        assert_eq!(
            s2(FMUL, S_MAX, b32(2.0), rm),
            (pos_s[i], OF | NX),
            "rm={rm}"
        );
        assert_eq!(
            d2(FMUL, D_MAX, b64(2.0), rm),
            (pos_d[i], OF | NX),
            "rm={rm}"
        );
        assert_eq!(d2(FADD, D_MAX, D_MAX, rm), (pos_d[i], OF | NX), "rm={rm}");
    }
    // Negative overflow: -inf unless rounding towards zero or up.
    let neg_s = [S_INF, S_MAX, S_INF, S_MAX, S_INF].map(|v| v | 0x8000_0000);
    for (i, &rm) in ALL_RM.iter().enumerate() {
        assert_eq!(
            s2(FMUL, S_MAX, b32(-2.0), rm),
            (neg_s[i], OF | NX),
            "rm={rm}"
        );
    }
    // Narrowing conversion overflow.
    assert_eq!(s_from_d(1e300, RNE_), (S_INF, OF | NX));
    assert_eq!(s_from_d(1e300, RTZ_), (S_MAX, OF | NX));
    assert_eq!(s_from_d(-1e300, RUP_), (S_MAX | 0x8000_0000, OF | NX));
    // Infinity arithmetic itself is exact.
    assert_eq!(s2(FADD, S_INF, b32(1.0), RNE_), (S_INF, 0));
}

#[test]
fn underflow_and_subnormals() {
    // 2^-126 * 2^-10: exact subnormal, no flags.
    let min_normal = 0x0080_0000;
    assert_eq!(
        s2(FMUL, min_normal, b32(2f32.powi(-10)), RNE_),
        (0x0000_2000, 0)
    );
    // Smallest subnormal / 2: tie between 0 and the smallest subnormal.
    let tiny = 0x0000_0001;
    assert_eq!(s2(FMUL, tiny, b32(0.5), RNE_), (0, UF | NX));
    assert_eq!(s2(FMUL, tiny, b32(0.5), RMM_), (tiny, UF | NX));
    assert_eq!(s2(FMUL, tiny, b32(0.5), RUP_), (tiny, UF | NX));
    assert_eq!(
        s2(FMUL, tiny | 0x8000_0000, b32(0.5), RDN_),
        (tiny | 0x8000_0000, UF | NX)
    );
    assert_eq!(
        s2(FMUL, tiny | 0x8000_0000, b32(0.5), RNE_),
        (0x8000_0000, UF | NX)
    );
    // Inexact subnormal result of a division.
    assert_eq!(s2(FDIV, min_normal, b32(3.0), RNE_), (0x002a_aaab, UF | NX));
    assert_eq!(s2(FDIV, min_normal, b32(3.0), RTZ_), (0x002a_aaaa, UF | NX));
    // Double: smallest normal / 3.
    let dmin = 0x0010_0000_0000_0000;
    assert_eq!(
        d2(FDIV, dmin, b64(3.0), RNE_),
        (0x0005_5555_5555_5555, UF | NX)
    );
    // Underflow to zero in RTZ.
    assert_eq!(d2(FMUL, 1, 1, RTZ_), (0, UF | NX));
    assert_eq!(d2(FMUL, 1, 1, RUP_), (1, UF | NX));
    // Narrowing to a subnormal single.
    assert_eq!(s_from_d(2f64.powi(-149) * 1.5, RNE_), (2, UF | NX));
    assert_eq!(s_from_d(2f64.powi(-140), RNE_), (0x200, 0));
}

#[test]
fn tininess_is_detected_after_rounding() {
    // (1 + 2^-23) * (2^-126 - 2^-149) = 2^-126 - 2^-172: with an unbounded
    // exponent it rounds (RNE) to 2^-126, so it is not tiny after rounding:
    // only NX. Before-rounding detection would also raise UF.
    let a = 0x3f80_0001;
    let b = 0x007f_ffff;
    assert_eq!(s2(FMUL, a, b, RNE_), (0x0080_0000, NX));
    // Rounding towards zero keeps it below 2^-126: tiny and inexact.
    assert_eq!(s2(FMUL, a, b, RTZ_), (0x007f_ffff, UF | NX));
    // Same for double: (1 + 2^-52) * (2^-1022 - 2^-1074).
    assert_eq!(
        d2(FMUL, b64(1.0) + 1, 0x000f_ffff_ffff_ffff, RNE_),
        (0x0010_0000_0000_0000, NX)
    );
    // SoftFloat's per-thread setting is after-rounding on fresh threads too.
    let mode = std::thread::spawn(|| {
        // SAFETY: reads this thread's SoftFloat state.
        unsafe { softfloat_sys::softfloat_detectTininess_read_helper() }
    })
    .join()
    .unwrap();
    assert_eq!(mode, softfloat_sys::softfloat_tininess_afterRounding);
    let on_new_thread = std::thread::spawn(move || s2(FMUL, a, b, RNE_))
        .join()
        .unwrap();
    assert_eq!(on_new_thread, (0x0080_0000, NX));
}

// ---------------------------------------------------------------- exceptions

#[test]
fn divide_by_zero_and_invalid() {
    assert_eq!(s2(FDIV, b32(1.0), 0, RNE_), (S_INF, DZ));
    assert_eq!(s2(FDIV, b32(-1.0), 0, RNE_), (S_INF | 0x8000_0000, DZ));
    assert_eq!(
        s2(FDIV, b32(1.0), 0x8000_0000, RNE_),
        (S_INF | 0x8000_0000, DZ)
    );
    assert_eq!(d2(FDIV, b64(5.0), 0, RTZ_), (D_INF, DZ));
    assert_eq!(s2(FDIV, 0, 0, RNE_), (CANON_S, NV));
    assert_eq!(d2(FDIV, 0, 0x8000_0000_0000_0000, RNE_), (CANON_D, NV));
    assert_eq!(d2(FDIV, D_INF, D_INF, RNE_), (CANON_D, NV));
    assert_eq!(
        s2(FDIV, S_INF, 0, RNE_),
        (S_INF, 0),
        "inf/0 is exact, not DZ"
    );
    assert_eq!(s2(FSUB, S_INF, S_INF, RNE_), (CANON_S, NV));
    assert_eq!(d2(FADD, D_INF, D_INF | 1 << 63, RNE_), (CANON_D, NV));
    assert_eq!(d2(FMUL, D_INF, 0, RNE_), (CANON_D, NV));
    assert_eq!(s_sqrt(b32(-1.0), RNE_), (CANON_S, NV));
    assert_eq!(d_sqrt(b64(-1.0), RNE_), (CANON_D, NV));
    assert_eq!(d_sqrt(D_INF | 1 << 63, RNE_), (CANON_D, NV));
    assert_eq!(s_sqrt(0x8000_0000, RNE_), (0x8000_0000, 0), "sqrt(-0) = -0");
    assert_eq!(s_sqrt(S_INF, RNE_), (S_INF, 0));
    assert_eq!(s_sqrt(b32(2.0), RNE_), (0x3fb5_04f3, NX));
    assert_eq!(s_sqrt(b32(2.0), RTZ_), (0x3fb5_04f3, NX));
    assert_eq!(s_sqrt(b32(2.0), RUP_), (0x3fb5_04f4, NX));
    assert_eq!(d_sqrt(b64(2.0), RNE_), (b64(2f64.sqrt()), NX));
    assert_eq!(d_sqrt(b64(9.0), RDN_), (b64(3.0), 0));
}

#[test]
fn nan_results_are_canonical() {
    // Quiet NaN inputs with payloads and sign: canonical, no flags.
    assert_eq!(s2(FADD, S_QNAN_PAYLOAD, b32(1.0), RNE_), (CANON_S, 0));
    assert_eq!(s2(FMUL, b32(1.0), S_QNAN_PAYLOAD, RNE_), (CANON_S, 0));
    assert_eq!(d2(FSUB, D_QNAN_PAYLOAD, D_QNAN_PAYLOAD, RNE_), (CANON_D, 0));
    assert_eq!(d2(FDIV, b64(1.0), D_QNAN_PAYLOAD, RNE_), (CANON_D, 0));
    assert_eq!(s_sqrt(S_QNAN_PAYLOAD, RNE_), (CANON_S, 0));
    // Signaling NaN inputs: canonical plus NV.
    assert_eq!(s2(FADD, S_SNAN, b32(1.0), RNE_), (CANON_S, NV));
    assert_eq!(
        s2(FDIV, b32(1.0), S_SNAN | 0x8000_0000, RNE_),
        (CANON_S, NV)
    );
    assert_eq!(d2(FMUL, D_SNAN, D_QNAN_PAYLOAD, RNE_), (CANON_D, NV));
    assert_eq!(d_sqrt(D_SNAN, RNE_), (CANON_D, NV));
    assert_eq!(s_fma(MADD, b32(1.0), b32(1.0), S_SNAN, RNE_), (CANON_S, NV));
    assert_eq!(
        d_fma(NMADD, D_QNAN_PAYLOAD, b64(1.0), b64(1.0), RNE_),
        (CANON_D, 0)
    );
    assert_eq!(
        d_fma(NMSUB, D_SNAN | 1 << 63, b64(1.0), b64(1.0), RNE_),
        (CANON_D, NV)
    );
    // Conversions between formats.
    assert_eq!(s_from_d_bits(D_QNAN_PAYLOAD, RNE_), (CANON_S, 0));
    assert_eq!(s_from_d_bits(D_SNAN, RNE_), (CANON_S, NV));
    assert_eq!(d_from_s(S_QNAN_PAYLOAD), (CANON_D, 0));
    assert_eq!(d_from_s(S_SNAN), (CANON_D, NV));
    assert_eq!(d_from_s(0xff80_0001), (CANON_D, NV));
}

#[test]
fn flags_accrue_and_are_never_cleared() {
    let mut h = Hart::default();
    h.fp.fflags = NV;
    h.fp.f[1] = b64(1.0);
    h.fp.f[2] = b64(3.0);
    h.run(r_type(FDIV | D, 2, 1, RNE_, 3));
    assert_eq!(h.fp.fflags, NV | NX);
    h.fp.f[4] = 0;
    h.run(r_type(FDIV | D, 4, 1, RNE_, 5));
    assert_eq!(h.fp.fflags, NV | NX | DZ);
    // An exact operation adds nothing and removes nothing.
    h.run(r_type(FADD | D, 1, 1, RNE_, 6));
    assert_eq!(h.fp.fflags, NV | NX | DZ);
    assert_eq!(h.fp.f[6], b64(2.0));
    // Flags of a previous instruction never leak into the next one.
    let mut g = Hart::default();
    g.fp.f[1] = b64(1.0);
    g.fp.f[2] = b64(3.0);
    g.run(r_type(FDIV | D, 2, 1, RNE_, 3));
    let mut fresh = Hart::default();
    fresh.fp.f[1] = b64(1.0);
    fresh.run(r_type(FADD | D, 1, 1, RNE_, 2));
    assert_eq!(fresh.fp.fflags, 0);
}

// ---------------------------------------------------------------- fused multiply-add

#[test]
fn fma_rounds_once() {
    // (1 + 2^-12)^2 - 1 = 2^-11 + 2^-24 exactly; a separate multiply would
    // round the product to 1 + 2^-11 and give 2^-11.
    let a = 0x3f80_0800;
    let fused = 0x3a00_0400;
    assert_eq!(s_fma(MADD, a, a, b32(-1.0), RNE_), (fused, 0));
    let (p, _) = s2(FMUL, a, a, RNE_);
    let (unfused, _) = s2(FADD, p, b32(-1.0), RNE_);
    assert_eq!(unfused, b32(2f32.powi(-11)));
    assert_ne!(unfused, fused);
    assert_eq!(s_fma(MSUB, a, a, b32(1.0), RNE_), (fused, 0));
    assert_eq!(s_fma(NMSUB, a, a, b32(1.0), RNE_), (fused | 0x8000_0000, 0));
    assert_eq!(
        s_fma(NMADD, a, a, b32(-1.0), RNE_),
        (fused | 0x8000_0000, 0)
    );
    // Double: (1 + 2^-27)^2 - 1 = 2^-26 + 2^-54.
    let a = b64(1.0 + 2f64.powi(-27));
    let fused = b64(2f64.powi(-26) + 2f64.powi(-54));
    assert_eq!(d_fma(MADD, a, a, b64(-1.0), RNE_), (fused, 0));
    assert_eq!(d_fma(NMADD, a, a, b64(-1.0), RNE_), (fused | 1 << 63, 0));
    assert_eq!(d_fma(MSUB, a, a, b64(1.0), RNE_), (fused, 0));
    assert_eq!(d_fma(NMSUB, a, a, b64(1.0), RNE_), (fused | 1 << 63, 0));
    let (p, _) = d2(FMUL, a, a, RNE_);
    let (unfused, _) = d2(FADD, p, b64(-1.0), RNE_);
    assert_ne!(unfused, fused);
}

#[test]
fn fma_variants_signs_and_rounding() {
    let (two, three, five) = (b64(2.0), b64(3.0), b64(5.0));
    assert_eq!(d_fma(MADD, two, three, five, RNE_), (b64(11.0), 0));
    assert_eq!(d_fma(MSUB, two, three, five, RNE_), (b64(1.0), 0));
    assert_eq!(d_fma(NMSUB, two, three, five, RNE_), (b64(-1.0), 0));
    assert_eq!(d_fma(NMADD, two, three, five, RNE_), (b64(-11.0), 0));
    let (two, three, five) = (b32(2.0), b32(3.0), b32(5.0));
    assert_eq!(s_fma(MADD, two, three, five, RNE_), (b32(11.0), 0));
    assert_eq!(s_fma(MSUB, two, three, five, RNE_), (b32(1.0), 0));
    assert_eq!(s_fma(NMSUB, two, three, five, RNE_), (b32(-1.0), 0));
    assert_eq!(s_fma(NMADD, two, three, five, RNE_), (b32(-11.0), 0));
    // Exact cancellation: +0, or -0 when rounding down.
    let one = b64(1.0);
    for rm in ALL_RM {
        let z = if rm == RDN_ { 1 << 63 } else { 0 };
        assert_eq!(d_fma(MSUB, one, one, one, rm), (z, 0), "rm={rm}");
        assert_eq!(d_fma(NMADD, one, one, one | 1 << 63, rm), (z, 0), "rm={rm}");
    }
    // Zero product plus zero: -(+0*+0) - (+0) = -0.
    assert_eq!(d_fma(NMADD, 0, 0, 0, RNE_), (1 << 63, 0));
    assert_eq!(d_fma(MADD, 0, 0, 1 << 63, RNE_), (0, 0));
    // A tie inside an FMA: 1 * 1 + 2^-24.
    assert_eq!(
        s_fma(MADD, b32(1.0), b32(1.0), 0x3380_0000, RNE_),
        (b32(1.0), NX)
    );
    assert_eq!(
        s_fma(MADD, b32(1.0), b32(1.0), 0x3380_0000, RMM_),
        (0x3f80_0001, NX)
    );
    // Overflow.
    assert_eq!(s_fma(MADD, S_MAX, b32(2.0), 0, RTZ_), (S_MAX, OF | NX));
    // inf * 0 + qNaN raises NV (RISC-V requires it).
    assert_eq!(d_fma(MADD, D_INF, 0, D_QNAN_PAYLOAD, RNE_), (CANON_D, NV));
    assert_eq!(s_fma(MADD, 0, S_INF, CANON_S, RNE_), (CANON_S, NV));
    // inf * 2 - inf is invalid, inf * 2 + inf is inf.
    assert_eq!(d_fma(MSUB, D_INF, b64(2.0), D_INF, RNE_), (CANON_D, NV));
    assert_eq!(d_fma(MADD, D_INF, b64(2.0), D_INF, RNE_), (D_INF, 0));
}

// ---------------------------------------------------------------- sign injection, min/max

#[test]
fn sign_injection() {
    let (p, n) = (b32(1.5), b32(-2.0));
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(p);
    h.fp.f[2] = nan_box(n);
    h.run(r_type(FSGNJ, 2, 1, 0, 3));
    assert_eq!(h.boxed(3), b32(-1.5));
    h.run(r_type(FSGNJ, 2, 1, 1, 3));
    assert_eq!(h.boxed(3), b32(1.5));
    h.run(r_type(FSGNJ, 2, 2, 2, 3)); // fabs of -2 (sgnjx rs1=rs2): 2
    assert_eq!(h.boxed(3), b32(2.0));
    h.run(r_type(FSGNJ, 2, 2, 1, 3)); // fneg of -2 (sgnjn rs1=rs2): 2
    assert_eq!(h.boxed(3), b32(2.0));
    h.run(r_type(FSGNJ, 1, 2, 1, 3)); // sgnjn(-2, +1.5): -2
    assert_eq!(h.boxed(3), b32(-2.0));
    // NaN payloads pass through untouched; no flags even for sNaN.
    h.fp.f[4] = nan_box(S_SNAN);
    h.run(r_type(FSGNJ, 2, 4, 0, 5));
    assert_eq!(h.boxed(5), S_SNAN | 0x8000_0000);
    assert_eq!(h.fp.fflags, 0);
    // Double.
    h.fp.f[6] = D_SNAN;
    h.fp.f[7] = b64(-1.0);
    h.run(r_type(FSGNJ | D, 7, 6, 0, 8));
    assert_eq!(h.fp.f[8], D_SNAN | 1 << 63);
    h.run(r_type(FSGNJ | D, 7, 8, 1, 8));
    assert_eq!(h.fp.f[8], D_SNAN);
    h.run(r_type(FSGNJ | D, 7, 7, 2, 9));
    assert_eq!(h.fp.f[9], b64(1.0));
    assert_eq!(h.fp.fflags, 0);
}

fn s_min(a: u32, b: u32) -> (u32, u8) {
    s2(FMINMAX, a, b, 0)
}
fn s_max(a: u32, b: u32) -> (u32, u8) {
    s2(FMINMAX, a, b, 1)
}
fn d_min(a: u64, b: u64) -> (u64, u8) {
    d2(FMINMAX, a, b, 0)
}
fn d_max(a: u64, b: u64) -> (u64, u8) {
    d2(FMINMAX, a, b, 1)
}

#[test]
fn min_max_corner_cases() {
    let (pz, nz) = (0u32, 0x8000_0000u32);
    assert_eq!(s_min(pz, nz), (nz, 0));
    assert_eq!(s_min(nz, pz), (nz, 0));
    assert_eq!(s_max(pz, nz), (pz, 0));
    assert_eq!(s_max(nz, pz), (pz, 0));
    assert_eq!(s_min(b32(1.0), b32(-3.0)), (b32(-3.0), 0));
    assert_eq!(s_max(b32(1.0), b32(-3.0)), (b32(1.0), 0));
    assert_eq!(s_min(b32(-1.0), b32(-3.0)), (b32(-3.0), 0));
    assert_eq!(s_max(b32(-1.0), b32(-3.0)), (b32(-1.0), 0));
    assert_eq!(
        s_min(S_INF | 0x8000_0000, b32(-3.0)),
        (S_INF | 0x8000_0000, 0)
    );
    assert_eq!(s_max(S_INF, S_MAX), (S_INF, 0));
    assert_eq!(s_min(1, 0), (0, 0), "subnormal vs zero");
    // One NaN: the other operand.
    assert_eq!(s_min(S_QNAN_PAYLOAD, b32(1.0)), (b32(1.0), 0));
    assert_eq!(s_max(b32(1.0), S_QNAN_PAYLOAD), (b32(1.0), 0));
    assert_eq!(s_min(S_SNAN, b32(1.0)), (b32(1.0), NV));
    assert_eq!(s_max(b32(-1.0), S_SNAN), (b32(-1.0), NV));
    // Two NaNs: canonical.
    assert_eq!(s_min(S_QNAN_PAYLOAD, S_QNAN_PAYLOAD), (CANON_S, 0));
    assert_eq!(s_max(S_SNAN, S_QNAN_PAYLOAD), (CANON_S, NV));
    // Double.
    let (pz, nz) = (0u64, 1u64 << 63);
    assert_eq!(d_min(pz, nz), (nz, 0));
    assert_eq!(d_max(nz, pz), (pz, 0));
    assert_eq!(d_min(b64(2.5), b64(2.25)), (b64(2.25), 0));
    assert_eq!(d_max(b64(-2.5), b64(-2.25)), (b64(-2.25), 0));
    assert_eq!(d_min(D_QNAN_PAYLOAD, b64(7.0)), (b64(7.0), 0));
    assert_eq!(d_max(D_SNAN, b64(7.0)), (b64(7.0), NV));
    assert_eq!(d_min(D_SNAN, D_SNAN), (CANON_D, NV));
    assert_eq!(d_max(D_QNAN_PAYLOAD, D_QNAN_PAYLOAD), (CANON_D, 0));
}

// ---------------------------------------------------------------- compares, classify

#[test]
fn comparisons() {
    const LE: u32 = 0;
    const LT: u32 = 1;
    const EQ: u32 = 2;
    let (one, two) = (b32(1.0), b32(2.0));
    assert_eq!(s_cmp(LT, one, two), (1, 0));
    assert_eq!(s_cmp(LT, two, one), (0, 0));
    assert_eq!(s_cmp(LT, one, one), (0, 0));
    assert_eq!(s_cmp(LE, one, one), (1, 0));
    assert_eq!(s_cmp(LE, two, one), (0, 0));
    assert_eq!(s_cmp(EQ, one, one), (1, 0));
    assert_eq!(s_cmp(EQ, one, two), (0, 0));
    assert_eq!(s_cmp(LT, b32(-2.0), b32(-1.0)), (1, 0));
    assert_eq!(s_cmp(LT, b32(-1.0), b32(-2.0)), (0, 0));
    assert_eq!(s_cmp(LT, b32(-1.0), b32(1.0)), (1, 0));
    // Zeros compare equal.
    assert_eq!(s_cmp(EQ, 0x8000_0000, 0), (1, 0));
    assert_eq!(s_cmp(LT, 0x8000_0000, 0), (0, 0));
    assert_eq!(s_cmp(LE, 0, 0x8000_0000), (1, 0));
    // Quiet vs signaling behaviour on NaN.
    assert_eq!(s_cmp(EQ, S_QNAN_PAYLOAD, one), (0, 0));
    assert_eq!(s_cmp(EQ, S_QNAN_PAYLOAD, S_QNAN_PAYLOAD), (0, 0));
    assert_eq!(s_cmp(EQ, one, S_SNAN), (0, NV));
    assert_eq!(s_cmp(LT, S_QNAN_PAYLOAD, one), (0, NV));
    assert_eq!(s_cmp(LE, one, S_QNAN_PAYLOAD), (0, NV));
    assert_eq!(s_cmp(LE, S_SNAN, one), (0, NV));
    // Infinities.
    assert_eq!(s_cmp(LT, S_MAX, S_INF), (1, 0));
    assert_eq!(s_cmp(LE, S_INF | 0x8000_0000, S_INF | 0x8000_0000), (1, 0));
    // Double.
    assert_eq!(d_cmp(LT, b64(1.0), b64(1.0) + 1), (1, 0));
    assert_eq!(d_cmp(LE, b64(-0.5), b64(-0.75)), (0, 0));
    assert_eq!(d_cmp(EQ, 1 << 63, 0), (1, 0));
    assert_eq!(d_cmp(LT, 1 << 63, 0), (0, 0));
    assert_eq!(d_cmp(EQ, D_QNAN_PAYLOAD, b64(0.0)), (0, 0));
    assert_eq!(d_cmp(EQ, D_SNAN, b64(0.0)), (0, NV));
    assert_eq!(d_cmp(LT, D_QNAN_PAYLOAD, b64(0.0)), (0, NV));
    assert_eq!(d_cmp(LE, b64(0.0), D_QNAN_PAYLOAD), (0, NV));
    assert_eq!(d_cmp(LT, 1, 2), (1, 0), "subnormals");
}

#[test]
fn classify_every_class() {
    let single = [
        (0xff80_0000, 0),
        (b32(-1.0), 1),
        (0x8000_0001, 2),
        (0x807f_ffff, 2),
        (0x8000_0000, 3),
        (0x0000_0000, 4),
        (0x0000_0001, 5),
        (0x0080_0000, 6),
        (S_MAX, 6),
        (S_INF, 7),
        (S_SNAN, 8),
        (0xffbf_ffff, 8),
        (CANON_S, 9),
        (S_QNAN_PAYLOAD, 9),
    ];
    for (v, bit) in single {
        assert_eq!(s_class(v), 1 << bit, "{v:#x}");
    }
    let double = [
        (D_INF | 1 << 63, 0),
        (b64(-1e300), 1),
        (1 << 63 | 1, 2),
        (1 << 63, 3),
        (0, 4),
        (0x000f_ffff_ffff_ffff, 5),
        (0x0010_0000_0000_0000, 6),
        (D_INF, 7),
        (D_SNAN, 8),
        (D_SNAN | 1 << 63, 8),
        (CANON_D, 9),
        (D_QNAN_PAYLOAD, 9),
    ];
    for (v, bit) in double {
        assert_eq!(d_class(v), 1 << bit, "{v:#x}");
    }
}

// ---------------------------------------------------------------- conversions

const I32_MAX: u64 = 0x7fff_ffff;
const I32_MIN: u64 = 0xffff_ffff_8000_0000;
const ONES: u64 = u64::MAX;
const I64_MAX: u64 = i64::MAX as u64;
const I64_MIN: u64 = i64::MIN as u64;

fn neg(v: i64) -> u64 {
    v as u64
}

#[test]
fn fcvt_to_int_rounding_and_ties() {
    // 2.5 and -2.5 in each mode: RNE, RTZ, RDN, RUP, RMM.
    let pos = [2, 2, 2, 3, 3];
    let neg_ = [-2, -2, -3, -2, -3];
    for (i, &rm) in ALL_RM.iter().enumerate() {
        for kind in [W, L] {
            assert_eq!(s_to_int(b32(2.5), kind, rm), (pos[i], NX), "rm={rm}");
            assert_eq!(d_to_int(b64(-2.5), kind, rm), (neg(neg_[i]), NX), "rm={rm}");
        }
        assert_eq!(d_to_int(b64(2.5), WU, rm), (pos[i], NX));
        assert_eq!(s_to_int(b32(2.5), LU, rm), (pos[i], NX));
    }
    assert_eq!(s_to_int(b32(3.5), W, RNE_), (4, NX));
    assert_eq!(s_to_int(b32(0.5), W, RNE_), (0, NX));
    assert_eq!(s_to_int(b32(0.5), W, RMM_), (1, NX));
    assert_eq!(d_to_int(b64(-7.0), L, RUP_), (neg(-7), 0));
    // The dynamic mode applies to conversions too.
    let mut h = Hart::default();
    h.fp.frm = RUP;
    h.fp.f[1] = b64(1.25);
    h.run(r_type(FCVT_TO_INT | D, W, 1, DYN, 5));
    assert_eq!((h.x[5], h.fp.fflags), (2, NX));
}

#[test]
fn fcvt_w_saturation() {
    for rm in ALL_RM {
        assert_eq!(s_to_int(CANON_S, W, rm), (I32_MAX, NV));
        assert_eq!(
            s_to_int(S_SNAN | 0x8000_0000, W, rm),
            (I32_MAX, NV),
            "negative NaN"
        );
        assert_eq!(s_to_int(S_INF, W, rm), (I32_MAX, NV));
        assert_eq!(s_to_int(S_INF | 0x8000_0000, W, rm), (I32_MIN, NV));
        assert_eq!(s_to_int(b32(2147483648.0), W, rm), (I32_MAX, NV));
        assert_eq!(s_to_int(b32(-2147483648.0), W, rm), (I32_MIN, 0));
        assert_eq!(s_to_int(b32(-3e9), W, rm), (I32_MIN, NV));
        assert_eq!(d_to_int(b64(2147483647.0), W, rm), (I32_MAX, 0));
        assert_eq!(d_to_int(D_QNAN_PAYLOAD, W, rm), (I32_MAX, NV));
        assert_eq!(d_to_int(0x8000_0000_0000_0000, W, rm), (0, 0), "-0.0");
    }
    // Rounding can overflow: 2147483647.5 rounds up to 2^31 in RNE.
    assert_eq!(d_to_int(b64(2147483647.5), W, RNE_), (I32_MAX, NV));
    assert_eq!(d_to_int(b64(2147483647.5), W, RTZ_), (I32_MAX, NX));
    assert_eq!(d_to_int(b64(-2147483648.5), W, RNE_), (I32_MIN, NX));
    assert_eq!(d_to_int(b64(-2147483648.5), W, RMM_), (I32_MIN, NV));
    assert_eq!(d_to_int(b64(-2147483648.5), W, RUP_), (I32_MIN, NX));
    // Small values.
    assert_eq!(d_to_int(b64(-0.4), W, RNE_), (0, NX));
    assert_eq!(d_to_int(b64(-0.4), W, RDN_), (neg(-1), NX));
    assert_eq!(d_to_int(1, W, RUP_), (1, NX), "tiny subnormal");
}

#[test]
fn fcvt_wu_saturation_and_sign_extension() {
    for rm in ALL_RM {
        assert_eq!(
            s_to_int(CANON_S, WU, rm),
            (ONES, NV),
            "NaN -> 2^32-1 sign-extended"
        );
        assert_eq!(d_to_int(D_SNAN, WU, rm), (ONES, NV));
        assert_eq!(s_to_int(S_INF, WU, rm), (ONES, NV));
        assert_eq!(s_to_int(S_INF | 0x8000_0000, WU, rm), (0, NV));
        assert_eq!(s_to_int(b32(-1.0), WU, rm), (0, NV));
        assert_eq!(d_to_int(b64(4294967296.0), WU, rm), (ONES, NV));
        assert_eq!(d_to_int(b64(4294967295.0), WU, rm), (ONES, 0));
        // 2^31 fits WU; the 32-bit result is sign-extended.
        assert_eq!(s_to_int(b32(2147483648.0), WU, rm), (I32_MIN, 0));
        assert_eq!(s_to_int(0x4f7f_ffff, WU, rm), (0xffff_ffff_ffff_ff00, 0));
        assert_eq!(s_to_int(0x8000_0000, WU, rm), (0, 0), "-0.0");
        assert_eq!(d_to_int(b64(7.0), WU, rm), (7, 0));
    }
    // Negative values that round to zero are inexact, not invalid.
    assert_eq!(s_to_int(b32(-0.3), WU, RTZ_), (0, NX));
    assert_eq!(s_to_int(b32(-0.3), WU, RNE_), (0, NX));
    assert_eq!(s_to_int(b32(-0.5), WU, RNE_), (0, NX));
    assert_eq!(s_to_int(b32(-0.3), WU, RUP_), (0, NX));
    assert_eq!(s_to_int(b32(-0.3), WU, RDN_), (0, NV));
    assert_eq!(s_to_int(b32(-0.5), WU, RMM_), (0, NV));
    assert_eq!(s_to_int(b32(-0.7), WU, RNE_), (0, NV));
    assert_eq!(d_to_int(b64(4294967295.5), WU, RNE_), (ONES, NV));
    assert_eq!(d_to_int(b64(4294967295.5), WU, RTZ_), (ONES, NX));
}

#[test]
fn fcvt_l_and_lu_boundaries() {
    let two63 = b64(9223372036854775808.0); // 2^63
    let below = 0x43df_ffff_ffff_ffff; // largest double below 2^63
    for rm in ALL_RM {
        assert_eq!(d_to_int(two63, L, rm), (I64_MAX, NV));
        assert_eq!(d_to_int(two63 | 1 << 63, L, rm), (I64_MIN, 0));
        assert_eq!(d_to_int(below, L, rm), (0x7fff_ffff_ffff_fc00, 0));
        assert_eq!(d_to_int(D_QNAN_PAYLOAD, L, rm), (I64_MAX, NV));
        assert_eq!(d_to_int(D_INF | 1 << 63, L, rm), (I64_MIN, NV));
        assert_eq!(d_to_int(D_INF, L, rm), (I64_MAX, NV));
        assert_eq!(d_to_int(b64(-1e19), L, rm), (I64_MIN, NV));
        assert_eq!(s_to_int(b32(9223372036854775808.0), L, rm), (I64_MAX, NV));
        assert_eq!(s_to_int(b32(-9223372036854775808.0), L, rm), (I64_MIN, 0));
        assert_eq!(s_to_int(0x5eff_ffff, L, rm), (0x7fff_ff80_0000_0000, 0));
        assert_eq!(s_to_int(S_SNAN, L, rm), (I64_MAX, NV));
        assert_eq!(d_to_int(1 << 63, L, rm), (0, 0), "-0.0");
        // LU.
        assert_eq!(d_to_int(two63, LU, rm), (1 << 63, 0));
        assert_eq!(d_to_int(b64(18446744073709551616.0), LU, rm), (ONES, NV));
        assert_eq!(
            d_to_int(0x43ef_ffff_ffff_ffff, LU, rm),
            (0xffff_ffff_ffff_f800, 0)
        );
        assert_eq!(d_to_int(b64(-1.0), LU, rm), (0, NV));
        assert_eq!(s_to_int(b32(-1.0), LU, rm), (0, NV));
        assert_eq!(s_to_int(b32(-1e30), LU, rm), (0, NV));
        assert_eq!(d_to_int(D_INF | 1 << 63, LU, rm), (0, NV));
        assert_eq!(d_to_int(D_INF, LU, rm), (ONES, NV));
        assert_eq!(d_to_int(CANON_D, LU, rm), (ONES, NV));
        assert_eq!(s_to_int(CANON_S | 0x8000_0000, LU, rm), (ONES, NV));
        assert_eq!(d_to_int(1 << 63, LU, rm), (0, 0), "-0.0");
    }
    assert_eq!(d_to_int(b64(-0.9), LU, RTZ_), (0, NX));
    assert_eq!(d_to_int(b64(-0.9), LU, RNE_), (0, NV));
    assert_eq!(d_to_int(b64(-0.25), LU, RNE_), (0, NX));
    assert_eq!(d_to_int(b64(1.5), L, RNE_), (2, NX));
    assert_eq!(d_to_int(b64(-1.5), L, RTZ_), (neg(-1), NX));
}

#[test]
fn fcvt_from_int() {
    // 2^24 + 1 is not representable in single.
    let v = 16_777_217;
    assert_eq!(int_to_s(v, W, RNE_), (b32(16777216.0), NX));
    assert_eq!(int_to_s(v, W, RUP_), (0x4b80_0001, NX));
    assert_eq!(int_to_s(v, L, RMM_), (0x4b80_0001, NX));
    assert_eq!(int_to_s(neg(-16_777_217), W, RDN_), (0xcb80_0001, NX));
    assert_eq!(int_to_s(neg(-16_777_217), W, RTZ_), (0xcb80_0000, NX));
    // W/WU only use the low 32 bits of the source.
    assert_eq!(int_to_s(0x1234_5678_ffff_ffff, W, RNE_), (b32(-1.0), 0));
    assert_eq!(
        int_to_s(0x1234_5678_ffff_ffff, WU, RNE_),
        (b32(4294967296.0), NX)
    );
    assert_eq!(int_to_s(0x1234_5678_ffff_ffff, WU, RTZ_), (0x4f7f_ffff, NX));
    assert_eq!(
        int_to_d(0xffff_ffff_ffff_ffff, WU, RNE_),
        (b64(4294967295.0), 0)
    );
    assert_eq!(
        int_to_d(0x0000_0000_8000_0000, W, RNE_),
        (b64(-2147483648.0), 0)
    );
    assert_eq!(int_to_d(0xffff_ffff_ffff_ffff, W, RNE_), (b64(-1.0), 0));
    // 64-bit sources.
    assert_eq!(int_to_s(I64_MIN, L, RNE_), (0xdf00_0000, 0));
    assert_eq!(int_to_s(ONES, LU, RNE_), (0x5f80_0000, NX));
    assert_eq!(int_to_s(ONES, LU, RTZ_), (0x5f7f_ffff, NX));
    assert_eq!(int_to_s(ONES, L, RNE_), (b32(-1.0), 0));
    assert_eq!(
        int_to_d((1 << 53) + 1, L, RNE_),
        (b64(9007199254740992.0), NX)
    );
    assert_eq!(
        int_to_d((1 << 53) + 1, L, RUP_),
        (b64(9007199254740994.0), NX)
    );
    assert_eq!(
        int_to_d((1 << 53) + 3, LU, RNE_),
        (b64(9007199254740996.0), NX)
    );
    assert_eq!(int_to_d(I64_MAX, L, RTZ_), (0x43df_ffff_ffff_ffff, NX));
    assert_eq!(int_to_d(I64_MAX, L, RNE_), (b64(9223372036854775808.0), NX));
    assert_eq!(int_to_d(I64_MIN, L, RNE_), (b64(-9223372036854775808.0), 0));
    assert_eq!(int_to_d(ONES, LU, RNE_), (b64(18446744073709551616.0), NX));
    assert_eq!(
        int_to_d(0, L, RDN_),
        (0, 0),
        "integer zero is +0 even rounding down"
    );
    assert_eq!(int_to_s(0, W, RDN_), (0, 0));
}

fn s_from_d(v: f64, rm: u32) -> (u32, u8) {
    s_from_d_bits(b64(v), rm)
}

fn s_from_d_bits(v: u64, rm: u32) -> (u32, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = v;
    h.run(r_type(FCVT_S_D, 1, 1, rm, 2));
    (h.boxed(2), h.fp.fflags)
}

fn d_from_s(v: u32) -> (u64, u8) {
    let mut h = Hart::default();
    h.fp.f[1] = nan_box(v);
    h.run(r_type(FCVT_D_S, 0, 1, RNE_, 2));
    (h.fp.f[2], h.fp.fflags)
}

#[test]
fn fcvt_between_formats() {
    assert_eq!(s_from_d(1.0 / 3.0, RNE_), (0x3eaa_aaab, NX));
    assert_eq!(s_from_d(1.0 / 3.0, RTZ_), (0x3eaa_aaaa, NX));
    assert_eq!(s_from_d(-1.0 / 3.0, RDN_), (0xbeaa_aaab, NX));
    assert_eq!(s_from_d(0.5, RNE_), (b32(0.5), 0));
    assert_eq!(
        s_from_d_bits(D_INF | 1 << 63, RNE_),
        (S_INF | 0x8000_0000, 0)
    );
    assert_eq!(s_from_d_bits(1 << 63, RNE_), (0x8000_0000, 0));
    assert_eq!(s_from_d_bits(1, RNE_), (0, UF | NX));
    assert_eq!(s_from_d_bits(1, RUP_), (1, UF | NX));
    // Widening is exact, subnormals become normal doubles.
    assert_eq!(d_from_s(b32(0.1)), (b64(f64::from(0.1f32)), 0));
    assert_eq!(d_from_s(1), (b64(2f64.powi(-149)), 0));
    assert_eq!(d_from_s(0x8000_0000), (1 << 63, 0));
    assert_eq!(d_from_s(S_INF), (D_INF, 0));
    // FCVT.D.S with the dynamic mode and a valid frm is legal; the rm is not used.
    let mut h = Hart::default();
    h.fp.frm = RMM;
    h.fp.f[1] = nan_box(b32(1.5));
    h.run(r_type(FCVT_D_S, 0, 1, DYN, 2));
    assert_eq!(h.fp.f[2], b64(1.5));
}

// ---------------------------------------------------------------- illegal encodings

#[test]
fn illegal_rounding_modes() {
    let legal_with_rm: Vec<Box<dyn Fn(u32) -> u32>> = vec![
        Box::new(|rm| r_type(FADD, 2, 1, rm, 3)),
        Box::new(|rm| r_type(FDIV | D, 2, 1, rm, 3)),
        Box::new(|rm| r_type(FSQRT, 0, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_S_D, 1, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_D_S, 0, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_TO_INT, WU, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_TO_INT | D, L, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_FROM_INT, LU, 1, rm, 3)),
        Box::new(|rm| r_type(FCVT_FROM_INT | D, W, 1, rm, 3)),
        Box::new(|rm| r4_type(MADD, S, 4, 2, 1, rm, 3)),
        Box::new(|rm| r4_type(NMADD, D, 4, 2, 1, rm, 3)),
    ];
    for enc in &legal_with_rm {
        for rm in 0..=4 {
            Hart::default().run(enc(rm));
        }
        for rm in [5, 6] {
            assert_illegal(&Hart::default(), enc(rm));
        }
        for frm in 0..=4u8 {
            let mut h = Hart::default();
            h.fp.frm = frm;
            h.run(enc(DYN));
        }
        for frm in 5..=7u8 {
            let mut h = Hart::default();
            h.fp.frm = frm;
            assert_illegal(&h, enc(DYN));
        }
    }
}

fn assert_illegal(h: &Hart, insn: u32) {
    let mut g = Hart {
        fp: h.fp.clone(),
        x: h.x,
    };
    g.fp.f[1] = nan_box(b32(1.0));
    g.fp.f[2] = b64(2.0);
    g.x[1] = 3;
    let before = (g.fp.clone(), g.x);
    assert_eq!(
        g.exec(insn),
        Err(IllegalFp),
        "{insn:#010x} should be illegal"
    );
    assert_eq!((g.fp, g.x), before, "illegal {insn:#010x} changed state");
}

#[test]
fn reserved_encodings_are_illegal() {
    let h = Hart::default();
    let cases = [
        r_type(FADD | 2, 2, 1, 0, 3), // half precision
        r_type(FADD | 3, 2, 1, 0, 3), // quad precision
        r_type(FSQRT, 1, 1, 0, 3),    // sqrt with rs2 != 0
        r_type(FSQRT | D, 31, 1, 0, 3),
        r_type(FSGNJ, 2, 1, 3, 3), // funct3 3
        r_type(FSGNJ | D, 2, 1, 7, 3),
        r_type(FMINMAX, 2, 1, 2, 3), // funct3 2
        r_type(FMINMAX | D, 2, 1, 4, 3),
        r_type(FCVT_S_D, 0, 1, 0, 3),        // fcvt.s.s
        r_type(FCVT_S_D, 2, 1, 0, 3),        // fcvt.s.h
        r_type(FCVT_D_S, 1, 1, 0, 3),        // fcvt.d.d
        r_type(FCVT_D_S, 3, 1, 0, 3),        // fcvt.d.q
        r_type(FCMP, 2, 1, 3, 3),            // funct3 3
        r_type(FCMP | D, 2, 1, 4, 3),        // fltq (Zfa)
        r_type(FCVT_TO_INT, 4, 1, 0, 3),     // rs2 4
        r_type(FCVT_TO_INT | D, 8, 1, 1, 3), // fcvtmod.w.d (Zfa)
        r_type(FCVT_FROM_INT, 5, 1, 0, 3),
        r_type(FCVT_FROM_INT | D, 31, 1, 0, 3),
        r_type(FMV_TO_X, 0, 1, 2, 3), // funct3 2
        r_type(FMV_TO_X, 1, 1, 0, 3), // rs2 != 0
        r_type(FMV_TO_X | D, 0, 1, 3, 3),
        r_type(FMV_FROM_X, 0, 1, 1, 3), // funct3 1
        r_type(FMV_FROM_X, 1, 1, 0, 3), // fli.s (Zfa)
        r_type(FMV_FROM_X | D, 0, 1, 1, 3),
        r_type(0x02, 2, 1, 0, 3), // unassigned funct7
        r_type(0x7f, 2, 1, 0, 3),
        r4_type(MADD, 2, 4, 2, 1, 0, 3),  // fmadd.h
        r4_type(NMSUB, 3, 4, 2, 1, 0, 3), // fnmsub.q
        0x0000_0013,                      // addi: not an FP opcode
        0x0000_2007,                      // flw: not handled here
        0x0000_0000,
        0xffff_ffff,
    ];
    for insn in cases {
        assert_illegal(&h, insn);
    }
}

// ---------------------------------------------------------------- random checks

/// xorshift64*: deterministic pseudo-random numbers for the tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A double biased towards interesting exponents and specials.
    fn f64_bits(&mut self) -> u64 {
        let r = self.next();
        match r % 8 {
            0 => [
                0,
                1 << 63,
                D_INF,
                D_INF | 1 << 63,
                CANON_D,
                D_SNAN,
                1,
                D_MAX,
            ][(r >> 8) as usize % 8],
            1 => r & 0x800f_ffff_ffff_ffff, // subnormal
            2 => (r & 0x800f_ffff_ffff_ffff) | (0x3fe << 52), // near 1
            _ => self.next(),
        }
    }

    fn f32_bits(&mut self) -> u32 {
        let r = self.next();
        match r % 8 {
            0 => [
                0,
                0x8000_0000,
                S_INF,
                S_INF | 0x8000_0000,
                CANON_S,
                S_SNAN,
                1,
                S_MAX,
            ][(r >> 8) as usize % 8],
            1 => (r as u32) & 0x807f_ffff,
            2 => ((r as u32) & 0x807f_ffff) | (0x7e << 23),
            _ => self.next() as u32,
        }
    }
}

fn same_s(got: u32, host: f32) -> bool {
    if host.is_nan() {
        got == CANON_S
    } else {
        got == host.to_bits()
    }
}

fn same_d(got: u64, host: f64) -> bool {
    if host.is_nan() {
        got == CANON_D
    } else {
        got == host.to_bits()
    }
}

#[test]
fn round_to_nearest_matches_host_arithmetic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let (a, b, c) = (rng.f32_bits(), rng.f32_bits(), rng.f32_bits());
        let (fa, fb, fc) = (f32::from_bits(a), f32::from_bits(b), f32::from_bits(c));
        assert!(same_s(s2(FADD, a, b, RNE_).0, fa + fb), "{a:#x}+{b:#x}");
        assert!(same_s(s2(FSUB, a, b, RNE_).0, fa - fb), "{a:#x}-{b:#x}");
        assert!(same_s(s2(FMUL, a, b, RNE_).0, fa * fb), "{a:#x}*{b:#x}");
        assert!(same_s(s2(FDIV, a, b, RNE_).0, fa / fb), "{a:#x}/{b:#x}");
        assert!(same_s(s_sqrt(a, RNE_).0, fa.sqrt()), "sqrt {a:#x}");
        assert!(
            same_s(s_fma(MADD, a, b, c, RNE_).0, fa.mul_add(fb, fc)),
            "fma {a:#x} {b:#x} {c:#x}"
        );
        assert!(
            same_s(s_fma(NMADD, a, b, c, RNE_).0, (-fa).mul_add(fb, -fc)),
            "fnmadd"
        );
        assert!(same_d(d_from_s(a).0, f64::from(fa)));

        let (a, b, c) = (rng.f64_bits(), rng.f64_bits(), rng.f64_bits());
        let (fa, fb, fc) = (f64::from_bits(a), f64::from_bits(b), f64::from_bits(c));
        assert!(same_d(d2(FADD, a, b, RNE_).0, fa + fb), "{a:#x}+{b:#x}");
        assert!(same_d(d2(FSUB, a, b, RNE_).0, fa - fb), "{a:#x}-{b:#x}");
        assert!(same_d(d2(FMUL, a, b, RNE_).0, fa * fb), "{a:#x}*{b:#x}");
        assert!(same_d(d2(FDIV, a, b, RNE_).0, fa / fb), "{a:#x}/{b:#x}");
        assert!(same_d(d_sqrt(a, RNE_).0, fa.sqrt()), "sqrt {a:#x}");
        assert!(
            same_d(d_fma(MADD, a, b, c, RNE_).0, fa.mul_add(fb, fc)),
            "fma"
        );
        assert!(
            same_d(d_fma(MSUB, a, b, c, RNE_).0, fa.mul_add(fb, -fc)),
            "fmsub"
        );
        assert!(same_s(s_from_d_bits(a, RNE_).0, fa as f32), "narrow {a:#x}");
    }
}

#[test]
fn compares_and_min_max_match_host() {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for _ in 0..20_000 {
        let (a, b) = (rng.f64_bits(), rng.f64_bits());
        let (fa, fb) = (f64::from_bits(a), f64::from_bits(b));
        assert_eq!(d_cmp(2, a, b).0, u64::from(fa == fb));
        assert_eq!(d_cmp(1, a, b).0, u64::from(fa < fb));
        assert_eq!(d_cmp(0, a, b).0, u64::from(fa <= fb));
        let (a, b) = (rng.f32_bits(), rng.f32_bits());
        let (fa, fb) = (f32::from_bits(a), f32::from_bits(b));
        assert_eq!(s_cmp(2, a, b).0, u64::from(fa == fb));
        assert_eq!(s_cmp(1, a, b).0, u64::from(fa < fb));
        assert_eq!(s_cmp(0, a, b).0, u64::from(fa <= fb));
        let ordered = !fa.is_nan() && !fb.is_nan();
        let zeros = fa == 0.0 && fb == 0.0; // host min/max may pick either zero
        if ordered && !zeros {
            assert_eq!(s_min(a, b).0, fa.min(fb).to_bits());
            assert_eq!(s_max(a, b).0, fa.max(fb).to_bits());
        }
    }
}

#[test]
fn integer_conversions_match_host() {
    // Rust's `as` truncates and saturates like RTZ FCVT (except for NaN), and
    // int-to-float `as` rounds to nearest even.
    let mut rng = Rng(0x0f0f_1234_4321_f0f0);
    for _ in 0..20_000 {
        let a = rng.f64_bits();
        let fa = f64::from_bits(a);
        if !fa.is_nan() {
            assert_eq!(d_to_int(a, L, RTZ_).0, fa as i64 as u64, "{a:#x}");
            assert_eq!(d_to_int(a, LU, RTZ_).0, fa as u64, "{a:#x}");
            assert_eq!(d_to_int(a, W, RTZ_).0, fa as i32 as i64 as u64, "{a:#x}");
            assert_eq!(
                d_to_int(a, WU, RTZ_).0,
                fa as u32 as i32 as i64 as u64,
                "{a:#x}"
            );
        }
        let s = rng.f32_bits();
        let fs = f32::from_bits(s);
        if !fs.is_nan() {
            assert_eq!(s_to_int(s, L, RTZ_).0, fs as i64 as u64, "{s:#x}");
            assert_eq!(
                s_to_int(s, WU, RTZ_).0,
                fs as u32 as i32 as i64 as u64,
                "{s:#x}"
            );
        }
        let v = rng.next() >> (rng.next() % 64);
        assert_eq!(int_to_d(v, L, RNE_).0, b64(v as i64 as f64));
        assert_eq!(int_to_d(v, LU, RNE_).0, b64(v as f64));
        assert_eq!(int_to_s(v, L, RNE_).0, b32(v as i64 as f32));
        assert_eq!(int_to_s(v, LU, RNE_).0, b32(v as f32));
        assert_eq!(int_to_s(v, W, RNE_).0, b32(v as i32 as f32));
        assert_eq!(int_to_s(v, WU, RNE_).0, b32(v as u32 as f32));
    }
}

#[test]
fn random_instruction_words_never_panic() {
    let mut rng = Rng(0xdead_beef_cafe_f00d);
    let opcodes = [OP_FP, MADD, MSUB, NMSUB, NMADD];
    let mut h = Hart::default();
    let mut legal = 0u32;
    for i in 0..400_000u32 {
        let r = rng.next();
        let mut insn = r as u32;
        if i % 4 != 0 {
            insn = (insn & !0x7f) | opcodes[(r >> 40) as usize % opcodes.len()];
        }
        if i % 64 == 0 {
            for k in 0..32 {
                h.fp.f[k] = if rng.next() & 1 == 0 {
                    nan_box(rng.f32_bits())
                } else {
                    rng.f64_bits()
                };
                h.x[k] = if k == 0 { 0 } else { rng.next() };
            }
            h.fp.frm = (rng.next() % 8) as u8;
            h.fp.fflags = 0;
        }
        let before = (h.fp.clone(), h.x);
        match h.exec(insn) {
            Ok(()) => legal += 1,
            Err(IllegalFp) => assert_eq!((h.fp.clone(), h.x), before, "{insn:#010x}"),
        }
        assert!(h.fp.fflags <= 0x1f);
        assert_eq!(h.fp.frm, before.0.frm, "execute never changes frm");
    }
    assert!(
        legal > 50_000,
        "fuzzer should hit many legal encodings, got {legal}"
    );
}
