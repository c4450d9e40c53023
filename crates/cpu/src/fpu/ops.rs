//! Value-level floating-point operations on raw IEEE-754 bit patterns. Each
//! operation takes its operands as bits (single precision as `u32`, double as
//! `u64`; already unboxed) and a resolved RISC-V rounding mode (0..=4), and
//! returns the result bits together with the exception flags it raised, in
//! `fflags` encoding. Rounded arithmetic and conversions go through SoftFloat,
//! whose thread-local rounding mode is set and whose thread-local flags are
//! cleared and collected around each call; sign injection, min/max, comparison
//! and classification are computed here directly from the bits.

use softfloat_sys as sf;

/// Inexact.
pub const NX: u8 = 0x01;
/// Underflow.
pub const UF: u8 = 0x02;
/// Overflow.
pub const OF: u8 = 0x04;
/// Divide by zero.
pub const DZ: u8 = 0x08;
/// Invalid operation.
pub const NV: u8 = 0x10;

/// Round to nearest, ties to even.
pub const RNE: u8 = 0;
/// Round towards zero.
pub const RTZ: u8 = 1;
/// Round down (towards -infinity).
pub const RDN: u8 = 2;
/// Round up (towards +infinity).
pub const RUP: u8 = 3;
/// Round to nearest, ties to max magnitude.
pub const RMM: u8 = 4;

/// The canonical single-precision NaN.
pub const CANON_S: u32 = 0x7fc0_0000;
/// The canonical double-precision NaN.
pub const CANON_D: u64 = 0x7ff8_0000_0000_0000;

const SIGN_S: u32 = 0x8000_0000;
const SIGN_D: u64 = 0x8000_0000_0000_0000;

// SoftFloat's rounding-mode numbers and flag bits coincide with RISC-V's frm
// and fflags encodings; these checks keep that assumption honest.
const _: () = {
    assert!(sf::softfloat_round_near_even == RNE);
    assert!(sf::softfloat_round_minMag == RTZ);
    assert!(sf::softfloat_round_min == RDN);
    assert!(sf::softfloat_round_max == RUP);
    assert!(sf::softfloat_round_near_maxMag == RMM);
    assert!(sf::softfloat_flag_inexact == NX);
    assert!(sf::softfloat_flag_underflow == UF);
    assert!(sf::softfloat_flag_overflow == OF);
    assert!(sf::softfloat_flag_infinite == DZ);
    assert!(sf::softfloat_flag_invalid == NV);
};

/// Runs `f` with SoftFloat's rounding mode set to `rm` and its exception flags
/// cleared; returns `f`'s result and the flags it raised.
#[inline(always)]
fn rounded<T>(rm: u8, f: impl FnOnce() -> T) -> (T, u8) {
    debug_assert!(rm <= RMM, "unresolved rounding mode {rm}");
    // SAFETY: the helpers only read or write SoftFloat's thread-local state
    // of the calling thread; there is no aliasing or lifetime concern.
    unsafe { sf::softfloat_roundingMode_write_helper(rm) };
    flagged(f)
}

/// Runs `f` with SoftFloat's exception flags cleared; returns `f`'s result and
/// the flags it raised. For operations whose rounding mode is an argument or
/// that never round.
#[inline(always)]
fn flagged<T>(f: impl FnOnce() -> T) -> (T, u8) {
    // SAFETY: as in `rounded`: thread-local SoftFloat state only.
    unsafe { sf::softfloat_exceptionFlags_write_helper(0) };
    let v = f();
    // SAFETY: as above.
    let flags = unsafe { sf::softfloat_exceptionFlags_read_helper() };
    (v, flags & super::FFLAGS_MASK)
}

#[inline(always)]
fn f32t(v: u32) -> sf::float32_t {
    sf::float32_t { v }
}

#[inline(always)]
fn f64t(v: u64) -> sf::float64_t {
    sf::float64_t { v }
}

macro_rules! binary {
    ($name:ident, $sf:ident, $t:ty, $wrap:ident, $doc:literal) => {
        #[doc = $doc]
        #[inline]
        pub fn $name(a: $t, b: $t, rm: u8) -> ($t, u8) {
            // SAFETY: pure SoftFloat arithmetic on plain values.
            rounded(rm, || unsafe { sf::$sf($wrap(a), $wrap(b)) }.v)
        }
    };
}

binary!(add_s, f32_add, u32, f32t, "`a + b` in single precision.");
binary!(sub_s, f32_sub, u32, f32t, "`a - b` in single precision.");
binary!(mul_s, f32_mul, u32, f32t, "`a * b` in single precision.");
binary!(div_s, f32_div, u32, f32t, "`a / b` in single precision.");
binary!(add_d, f64_add, u64, f64t, "`a + b` in double precision.");
binary!(sub_d, f64_sub, u64, f64t, "`a - b` in double precision.");
binary!(mul_d, f64_mul, u64, f64t, "`a * b` in double precision.");
binary!(div_d, f64_div, u64, f64t, "`a / b` in double precision.");

/// Square root in single precision.
#[inline]
pub fn sqrt_s(a: u32, rm: u8) -> (u32, u8) {
    // SAFETY: pure SoftFloat arithmetic on plain values.
    rounded(rm, || unsafe { sf::f32_sqrt(f32t(a)) }.v)
}

/// Square root in double precision.
#[inline]
pub fn sqrt_d(a: u64, rm: u8) -> (u64, u8) {
    // SAFETY: pure SoftFloat arithmetic on plain values.
    rounded(rm, || unsafe { sf::f64_sqrt(f64t(a)) }.v)
}

/// Fused `(±(a * b)) ± c` in single precision with one rounding:
/// `neg_product` negates the product, `neg_addend` negates `c`
/// (FMADD: neither, FMSUB: addend, FNMSUB: product, FNMADD: both).
#[inline]
pub fn fma_s(a: u32, b: u32, c: u32, neg_product: bool, neg_addend: bool, rm: u8) -> (u32, u8) {
    // Negating an operand is exact, and a NaN operand yields the canonical
    // NaN whatever its sign, so flipping sign bits implements the variants.
    let a = if neg_product { a ^ SIGN_S } else { a };
    let c = if neg_addend { c ^ SIGN_S } else { c };
    // SAFETY: pure SoftFloat arithmetic on plain values.
    rounded(
        rm,
        || unsafe { sf::f32_mulAdd(f32t(a), f32t(b), f32t(c)) }.v,
    )
}

/// Fused `(±(a * b)) ± c` in double precision with one rounding; see [`fma_s`].
#[inline]
pub fn fma_d(a: u64, b: u64, c: u64, neg_product: bool, neg_addend: bool, rm: u8) -> (u64, u8) {
    let a = if neg_product { a ^ SIGN_D } else { a };
    let c = if neg_addend { c ^ SIGN_D } else { c };
    // SAFETY: pure SoftFloat arithmetic on plain values.
    rounded(
        rm,
        || unsafe { sf::f64_mulAdd(f64t(a), f64t(b), f64t(c)) }.v,
    )
}

/// FCVT.S.D: double to single, rounded.
#[inline]
pub fn d_to_s(a: u64, rm: u8) -> (u32, u8) {
    // SAFETY: pure SoftFloat conversion on plain values.
    rounded(rm, || unsafe { sf::f64_to_f32(f64t(a)) }.v)
}

/// FCVT.D.S: single to double (exact; a signaling NaN raises NV).
#[inline]
pub fn s_to_d(a: u32) -> (u64, u8) {
    // SAFETY: pure SoftFloat conversion on plain values.
    flagged(|| unsafe { sf::f32_to_f64(f32t(a)) }.v)
}

/// The integer format of an FCVT, encoded in the rs2 field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntFmt {
    /// Signed 32-bit.
    W,
    /// Unsigned 32-bit.
    Wu,
    /// Signed 64-bit.
    L,
    /// Unsigned 64-bit.
    Lu,
}

impl IntFmt {
    /// The integer format selected by an FCVT's rs2 field, if valid.
    #[inline]
    pub fn from_rs2(rs2: u32) -> Option<IntFmt> {
        match rs2 {
            0 => Some(IntFmt::W),
            1 => Some(IntFmt::Wu),
            2 => Some(IntFmt::L),
            3 => Some(IntFmt::Lu),
            _ => None,
        }
    }
}

/// Sign-extends a 32-bit result to an x-register value.
#[inline(always)]
fn sext32(v: u32) -> u64 {
    v as i32 as i64 as u64
}

/// FCVT.{W,WU,L,LU}.S: returns the x-register value (32-bit results, WU
/// included, sign-extended). Out-of-range and NaN inputs saturate and raise NV
/// (NaN gives the maximum value); NX is raised for inexact in-range results.
#[inline]
pub fn s_to_int(a: u32, to: IntFmt, rm: u8) -> (u64, u8) {
    debug_assert!(rm <= RMM);
    let a = f32t(a);
    // SAFETY: pure SoftFloat conversions on plain values; the rounding mode is an argument.
    flagged(|| unsafe {
        match to {
            IntFmt::W => sext32(sf::f32_to_i32(a, rm, true) as u32),
            IntFmt::Wu => sext32(sf::f32_to_ui32(a, rm, true) as u32),
            IntFmt::L => sf::f32_to_i64(a, rm, true) as u64,
            IntFmt::Lu => sf::f32_to_ui64(a, rm, true),
        }
    })
}

/// FCVT.{W,WU,L,LU}.D; see [`s_to_int`].
#[inline]
pub fn d_to_int(a: u64, to: IntFmt, rm: u8) -> (u64, u8) {
    debug_assert!(rm <= RMM);
    let a = f64t(a);
    // SAFETY: pure SoftFloat conversions on plain values; the rounding mode is an argument.
    flagged(|| unsafe {
        match to {
            IntFmt::W => sext32(sf::f64_to_i32(a, rm, true) as u32),
            IntFmt::Wu => sext32(sf::f64_to_ui32(a, rm, true) as u32),
            IntFmt::L => sf::f64_to_i64(a, rm, true) as u64,
            IntFmt::Lu => sf::f64_to_ui64(a, rm, true),
        }
    })
}

/// FCVT.S.{W,WU,L,LU}: `v` is the x-register value (only its low 32 bits are
/// used for W/WU); the result is rounded per `rm` (NX when inexact).
#[inline]
pub fn int_to_s(v: u64, from: IntFmt, rm: u8) -> (u32, u8) {
    // SAFETY: pure SoftFloat conversions on plain values.
    rounded(rm, || unsafe {
        match from {
            IntFmt::W => sf::i32_to_f32(v as i32),
            IntFmt::Wu => sf::ui32_to_f32(v as u32),
            IntFmt::L => sf::i64_to_f32(v as i64),
            IntFmt::Lu => sf::ui64_to_f32(v),
        }
        .v
    })
}

/// FCVT.D.{W,WU,L,LU}; see [`int_to_s`]. 32-bit sources convert exactly and
/// skip SoftFloat's flag handling.
#[inline]
pub fn int_to_d(v: u64, from: IntFmt, rm: u8) -> (u64, u8) {
    // SAFETY (all blocks): pure SoftFloat conversions on plain values.
    match from {
        IntFmt::W => (unsafe { sf::i32_to_f64(v as i32) }.v, 0),
        IntFmt::Wu => (unsafe { sf::ui32_to_f64(v as u32) }.v, 0),
        IntFmt::L => rounded(rm, || unsafe { sf::i64_to_f64(v as i64) }.v),
        IntFmt::Lu => rounded(rm, || unsafe { sf::ui64_to_f64(v) }.v),
    }
}

/// Bit layout of an IEEE binary format, for the operations done without
/// SoftFloat. Values are carried in a `u64` (single precision in the low 32 bits).
pub trait Format {
    /// The sign bit.
    const SIGN: u64;
    /// The exponent field.
    const EXP: u64;
    /// The fraction field.
    const FRAC: u64;
    /// The quiet bit (most significant fraction bit).
    const QUIET: u64;
    /// The canonical NaN.
    const CANON: u64;
    /// All bits of the format.
    const ALL: u64;
}

/// IEEE binary32.
#[derive(Clone, Copy, Debug)]
pub enum Single {}

/// IEEE binary64.
#[derive(Clone, Copy, Debug)]
pub enum Double {}

impl Format for Single {
    const SIGN: u64 = 0x8000_0000;
    const EXP: u64 = 0x7f80_0000;
    const FRAC: u64 = 0x007f_ffff;
    const QUIET: u64 = 0x0040_0000;
    const CANON: u64 = CANON_S as u64;
    const ALL: u64 = 0xffff_ffff;
}

impl Format for Double {
    const SIGN: u64 = SIGN_D;
    const EXP: u64 = 0x7ff0_0000_0000_0000;
    const FRAC: u64 = 0x000f_ffff_ffff_ffff;
    const QUIET: u64 = 0x0008_0000_0000_0000;
    const CANON: u64 = CANON_D;
    const ALL: u64 = u64::MAX;
}

/// Whether `x` is a NaN (quiet or signaling).
#[inline(always)]
pub fn is_nan<F: Format>(x: u64) -> bool {
    x & F::EXP == F::EXP && x & F::FRAC != 0
}

/// Whether `x` is a signaling NaN.
#[inline(always)]
pub fn is_snan<F: Format>(x: u64) -> bool {
    is_nan::<F>(x) && x & F::QUIET == 0
}

/// NV if either operand is a signaling NaN.
#[inline(always)]
fn snan_flag<F: Format>(a: u64, b: u64) -> u8 {
    if is_snan::<F>(a) || is_snan::<F>(b) {
        NV
    } else {
        0
    }
}

/// A key whose unsigned order is the numeric order of non-NaN values, with
/// -0.0 just below +0.0.
#[inline(always)]
fn order_key<F: Format>(x: u64) -> u64 {
    if x & F::SIGN != 0 {
        !x & F::ALL
    } else {
        x | F::SIGN
    }
}

/// Both operands are zeros (of either sign).
#[inline(always)]
fn both_zero<F: Format>(a: u64, b: u64) -> bool {
    (a | b) & !F::SIGN & F::ALL == 0
}

/// FMIN/FMAX: -0.0 orders below +0.0; a single NaN operand yields the other
/// operand, two NaNs the canonical NaN; a signaling NaN raises NV.
#[inline]
pub fn min_max<F: Format>(a: u64, b: u64, max: bool) -> (u64, u8) {
    let flags = snan_flag::<F>(a, b);
    let v = match (is_nan::<F>(a), is_nan::<F>(b)) {
        (true, true) => F::CANON,
        (true, false) => b,
        (false, true) => a,
        (false, false) => {
            if (order_key::<F>(a) < order_key::<F>(b)) != max {
                a
            } else {
                b
            }
        }
    };
    (v, flags)
}

/// FEQ: quiet equality (NV only for a signaling NaN; unordered gives false).
#[inline]
pub fn feq<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return (false, snan_flag::<F>(a, b));
    }
    (a == b || both_zero::<F>(a, b), 0)
}

/// FLT: signaling less-than (NV for any NaN; unordered gives false).
#[inline]
pub fn flt<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return (false, NV);
    }
    (
        order_key::<F>(a) < order_key::<F>(b) && !both_zero::<F>(a, b),
        0,
    )
}

/// FLE: signaling less-or-equal (NV for any NaN; unordered gives false).
#[inline]
pub fn fle<F: Format>(a: u64, b: u64) -> (bool, u8) {
    if is_nan::<F>(a) || is_nan::<F>(b) {
        return (false, NV);
    }
    (
        order_key::<F>(a) <= order_key::<F>(b) || both_zero::<F>(a, b),
        0,
    )
}

/// FCLASS: the one-hot 10-bit class mask (bit 0 -inf, 1 -normal, 2 -subnormal,
/// 3 -0, 4 +0, 5 +subnormal, 6 +normal, 7 +inf, 8 signaling NaN, 9 quiet NaN).
#[inline]
pub fn classify<F: Format>(x: u64) -> u64 {
    let neg = x & F::SIGN != 0;
    let exp = x & F::EXP;
    let frac = x & F::FRAC;
    let bit = if exp == F::EXP {
        if frac == 0 {
            if neg {
                0
            } else {
                7
            }
        } else if frac & F::QUIET == 0 {
            8
        } else {
            9
        }
    } else if exp == 0 {
        match (frac == 0, neg) {
            (true, true) => 3,
            (true, false) => 4,
            (false, true) => 2,
            (false, false) => 5,
        }
    } else if neg {
        1
    } else {
        6
    };
    1 << bit
}

/// FSGNJ: `a`'s magnitude with `b`'s sign.
#[inline(always)]
pub fn sgnj<F: Format>(a: u64, b: u64) -> u64 {
    (a & !F::SIGN) | (b & F::SIGN)
}

/// FSGNJN: `a`'s magnitude with the opposite of `b`'s sign.
#[inline(always)]
pub fn sgnjn<F: Format>(a: u64, b: u64) -> u64 {
    (a & !F::SIGN) | (!b & F::SIGN)
}

/// FSGNJX: `a` with its sign XORed with `b`'s sign.
#[inline(always)]
pub fn sgnjx<F: Format>(a: u64, b: u64) -> u64 {
    a ^ (b & F::SIGN)
}
