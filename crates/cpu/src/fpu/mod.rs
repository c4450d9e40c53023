//! The floating-point unit: the RISC-V F and D extensions. This module owns the
//! floating-point architectural state (`f0`–`f31` and the `fcsr` fields
//! `fflags`/`frm`), the NaN-boxing rules for single-precision values held in
//! 64-bit registers, and the decode and execution of every F/D computational
//! instruction (major opcodes OP-FP, MADD, MSUB, NMSUB and NMADD). Arithmetic,
//! rounding and exception detection are delegated to Berkeley SoftFloat 3 built
//! with its RISC-V specialization (`softfloat-sys`), whose thread-local
//! rounding mode and exception flags are set and collected per instruction;
//! sign injection, min/max, comparisons and classification are exact bit-level
//! operations done here. Loads and stores (FLW/FLD/FSW/FSD) belong to the hart,
//! which uses [`nan_box`] and [`unbox`]; the hart also checks `mstatus.FS` and
//! raises illegal-instruction when [`execute`] returns [`IllegalFp`].

mod exec;
pub mod ops;
#[cfg(test)]
mod tests;

pub use exec::execute;

/// Mask of the five architectural exception flags (NV, DZ, OF, UF, NX).
pub const FFLAGS_MASK: u8 = 0x1f;

/// Floating-point architectural state: the f registers (64-bit; singles are NaN-boxed) and fcsr fields.
///
/// `fflags` holds the accrued exception flags in its low five bits
/// (NX=1, UF=2, OF=4, DZ=8, NV=16) and `frm` the dynamic rounding mode in its
/// low three bits; both use the same encoding as the `fcsr` CSR.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FpRegs {
    pub f: [u64; 32],
    pub fflags: u8,
    pub frm: u8,
}

impl FpRegs {
    /// The `fcsr` CSR value: `frm` in bits 7:5, `fflags` in bits 4:0, the rest zero.
    #[inline]
    pub fn fcsr(&self) -> u32 {
        (u32::from(self.frm & 7) << 5) | u32::from(self.fflags & FFLAGS_MASK)
    }

    /// Writes the `fcsr` CSR: bits 4:0 go to `fflags`, bits 7:5 to `frm`;
    /// the reserved upper bits are ignored.
    #[inline]
    pub fn set_fcsr(&mut self, v: u32) {
        self.fflags = (v as u8) & FFLAGS_MASK;
        self.frm = ((v >> 5) & 7) as u8;
    }
}

/// The instruction is not a valid F/D instruction (reserved encoding, or an invalid rounding mode: rm=5/6, or rm=7 with frm>=5). The hart raises illegal-instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IllegalFp;

impl std::fmt::Display for IllegalFp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("illegal floating-point instruction or rounding mode")
    }
}

impl std::error::Error for IllegalFp {}

/// NaN-boxes a single-precision value for an f register: `0xffff_ffff_0000_0000 | v`.
#[inline]
pub fn nan_box(v: u32) -> u64 {
    0xffff_ffff_0000_0000 | u64::from(v)
}

/// The single-precision value held in an f register, or the canonical NaN
/// `0x7fc0_0000` when the register is not properly NaN-boxed (upper 32 bits not all ones).
#[inline]
pub fn unbox(v: u64) -> u32 {
    if v >> 32 == 0xffff_ffff {
        v as u32
    } else {
        ops::CANON_S
    }
}
