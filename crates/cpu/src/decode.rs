//! Pre-decoded instructions.
//!
//! [`decode`] turns the bits of one instruction into an [`Op`]: a handler
//! [`Kind`], register numbers and a sign-extended immediate, so that running
//! it needs no field extraction, no RVC expansion and no nested matches. An
//! `Op` depends only on the instruction's bits; the program counter,
//! privilege level and CSRs are read when it runs.
//!
//! The hart keeps the decodings of a RAM page in a [`DecodedPage`], one slot
//! per 2-byte offset, filled on first execution. How the hart keeps those
//! slots equal to `decode(current bytes)` is described in `hart.rs`.

/// What an [`Op`] does. Instructions the fast path does not specialise
/// (SYSTEM, atomics, floating point) are [`Kind::Slow`] and run through the
/// general executor with their (expanded) 32-bit encoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// Not decoded yet.
    Undecoded = 0,
    /// Not run from the page: the slot at offset 0xffe, and a 4-byte
    /// instruction at 0xffc (so that sequential execution never passes the
    /// last slot).
    Exit = 1,
    Illegal,
    Slow,
    /// FENCE and FENCE.I (one hart, and decodings never go stale).
    Nop,
    Lui,
    Auipc,
    Jal,
    Jalr,
    /// JAL and JALR with rd = x0.
    J,
    Jr,
    Beq,
    Bne,
    Blt,
    Bge,
    Bltu,
    Bgeu,
    Lb,
    Lh,
    Lw,
    Ld,
    Lbu,
    Lhu,
    Lwu,
    Sb,
    Sh,
    Sw,
    Sd,
    Addi,
    Slti,
    Sltiu,
    Xori,
    Ori,
    Andi,
    Slli,
    Srli,
    Srai,
    Addiw,
    Slliw,
    Srliw,
    Sraiw,
    Add,
    Sub,
    Sll,
    Slt,
    Sltu,
    Xor,
    Srl,
    Sra,
    Or,
    And,
    Mul,
    Mulh,
    Mulhsu,
    Mulhu,
    Div,
    Divu,
    Rem,
    Remu,
    Addw,
    Subw,
    Sllw,
    Srlw,
    Sraw,
    Mulw,
    Divw,
    Divuw,
    Remw,
    Remuw,
}

/// One decoded instruction, 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub(crate) struct Op {
    pub kind: Kind,
    /// Destination register in bits 0-4; the instruction length (2 or 4) in
    /// bits 5-7.
    pub rd_len: u8,
    pub rs1: u8,
    pub rs2: u8,
    /// Sign-extended immediate; the shift amount of a shift by an immediate;
    /// the 32-bit encoding of a [`Kind::Slow`] instruction; the `xtval` of
    /// an [`Kind::Illegal`] one.
    pub imm: i32,
}

impl Op {
    pub const UNDECODED: Op = Op {
        kind: Kind::Undecoded,
        rd_len: 0,
        rs1: 0,
        rs2: 0,
        imm: 0,
    };

    pub const EXIT: Op = Op {
        kind: Kind::Exit,
        rd_len: 0,
        rs1: 0,
        rs2: 0,
        imm: 0,
    };

    #[inline(always)]
    pub fn rd(self) -> usize {
        (self.rd_len & 31) as usize
    }

    #[inline(always)]
    pub fn len(self) -> u64 {
        (self.rd_len >> 5) as u64
    }

    #[inline(always)]
    pub fn rs1(self) -> usize {
        (self.rs1 & 31) as usize
    }

    #[inline(always)]
    pub fn rs2(self) -> usize {
        (self.rs2 & 31) as usize
    }

    /// For [`Kind::Slow`]: the compressed encoding it was expanded from, if any.
    #[inline]
    pub fn compressed_bits(self) -> Option<u32> {
        (self.len() == 2).then_some(self.rs1 as u32 | (self.rs2 as u32) << 8)
    }
}

/// Decoded instructions of one 4 KiB page, indexed by offset / 2.
pub(crate) type DecodedPage = [Op; 2048];

/// A page with nothing decoded: every slot [`Kind::Undecoded`] but the last,
/// which is [`Kind::Exit`].
pub(crate) fn empty_page() -> Box<DecodedPage> {
    let mut p = Box::new([Op::UNDECODED; 2048]);
    p[2047] = Op::EXIT;
    p
}

/// Decodes one instruction given its bits: `raw` holds the 16 bits of a
/// compressed instruction or the 32 of a standard one (any bits above a
/// compressed instruction are ignored). `rvc` is [`crate::rvc::table`].
///
/// Mirrors the interpreter's `execute` exactly: every encoding it rejects
/// with illegal-instruction decodes to [`Kind::Illegal`], whose `xtval` is
/// the instruction's own bits (16 of them for a compressed instruction).
pub(crate) fn decode(raw: u32, rvc: &[u32; 1 << 16]) -> Op {
    if raw & 3 == 3 {
        decode32(raw, 4)
    } else {
        let bits = raw & 0xffff;
        match rvc[bits as usize] {
            0 => illegal(bits, 2),
            insn => {
                let mut op = decode32(insn, 2);
                match op.kind {
                    Kind::Illegal => op.imm = bits as i32,
                    Kind::Slow => {
                        op.rs1 = bits as u8;
                        op.rs2 = (bits >> 8) as u8;
                    }
                    _ => {}
                }
                op
            }
        }
    }
}

fn illegal(bits: u32, len: u8) -> Op {
    Op {
        kind: Kind::Illegal,
        rd_len: len << 5,
        rs1: 0,
        rs2: 0,
        imm: bits as i32,
    }
}

fn imm_i(insn: u32) -> i32 {
    (insn as i32) >> 20
}
fn imm_s(insn: u32) -> i32 {
    (((insn as i32) >> 25) << 5) | ((insn >> 7) & 0x1f) as i32
}
fn imm_b(insn: u32) -> i32 {
    ((((insn as i32) >> 31) << 12) as u32
        | ((insn & 0x80) << 4)
        | ((insn >> 20) & 0x7e0)
        | ((insn >> 7) & 0x1e)) as i32
}
fn imm_j(insn: u32) -> i32 {
    ((((insn as i32) >> 31) << 20) as u32
        | (insn & 0xff000)
        | ((insn >> 9) & 0x800)
        | ((insn >> 20) & 0x7fe)) as i32
}

/// Decodes the 32-bit instruction `insn` of length `len` (2 if it is the
/// expansion of a compressed one). No op but a load, `Slow` or `Illegal`
/// writes x0: an instruction whose only effect is writing x0 becomes `Nop`.
fn decode32(insn: u32, len: u8) -> Op {
    let mut op = decode32_raw(insn, len);
    if op.rd() == 0 {
        let k = op.kind as u8;
        if (Kind::Addi as u8..=Kind::Remuw as u8).contains(&k)
            || op.kind == Kind::Lui
            || op.kind == Kind::Auipc
        {
            op.kind = Kind::Nop;
        } else if op.kind == Kind::Jal {
            op.kind = Kind::J;
        } else if op.kind == Kind::Jalr {
            op.kind = Kind::Jr;
        }
    }
    op
}

fn decode32_raw(insn: u32, len: u8) -> Op {
    use Kind::*;
    let rd = ((insn >> 7) & 31) as u8;
    let rs1 = ((insn >> 15) & 31) as u8;
    let rs2 = ((insn >> 20) & 31) as u8;
    let funct3 = (insn >> 12) & 7;
    let funct7 = insn >> 25;
    let op = |kind: Kind, imm: i32| Op {
        kind,
        rd_len: rd | len << 5,
        rs1,
        rs2,
        imm,
    };
    let bad = illegal(insn, len);
    match insn & 0x7f {
        0x37 => op(Lui, (insn & 0xffff_f000) as i32),
        0x17 => op(Auipc, (insn & 0xffff_f000) as i32),
        0x6f => op(Jal, imm_j(insn)),
        0x67 => {
            if funct3 != 0 {
                return bad;
            }
            op(Jalr, imm_i(insn))
        }
        0x63 => {
            let k = match funct3 {
                0 => Beq,
                1 => Bne,
                4 => Blt,
                5 => Bge,
                6 => Bltu,
                7 => Bgeu,
                _ => return bad,
            };
            op(k, imm_b(insn))
        }
        0x03 => {
            let k = match funct3 {
                0 => Lb,
                1 => Lh,
                2 => Lw,
                3 => Ld,
                4 => Lbu,
                5 => Lhu,
                6 => Lwu,
                _ => return bad,
            };
            op(k, imm_i(insn))
        }
        0x23 => {
            let k = match funct3 {
                0 => Sb,
                1 => Sh,
                2 => Sw,
                3 => Sd,
                _ => return bad,
            };
            op(k, imm_s(insn))
        }
        0x13 => {
            let shamt = ((insn >> 20) & 0x3f) as i32;
            match funct3 {
                0 => op(Addi, imm_i(insn)),
                1 => {
                    if insn >> 26 != 0 {
                        return bad;
                    }
                    op(Slli, shamt)
                }
                2 => op(Slti, imm_i(insn)),
                3 => op(Sltiu, imm_i(insn)),
                4 => op(Xori, imm_i(insn)),
                5 => match insn >> 26 {
                    0 => op(Srli, shamt),
                    0x10 => op(Srai, shamt),
                    _ => bad,
                },
                6 => op(Ori, imm_i(insn)),
                _ => op(Andi, imm_i(insn)),
            }
        }
        0x1b => {
            let shamt = ((insn >> 20) & 0x1f) as i32;
            match (funct3, funct7) {
                (0, _) => op(Addiw, imm_i(insn)),
                (1, 0) => op(Slliw, shamt),
                (5, 0) => op(Srliw, shamt),
                (5, 0x20) => op(Sraiw, shamt),
                _ => bad,
            }
        }
        0x33 => {
            let k = match (funct7, funct3) {
                (0, 0) => Add,
                (0x20, 0) => Sub,
                (0, 1) => Sll,
                (0, 2) => Slt,
                (0, 3) => Sltu,
                (0, 4) => Xor,
                (0, 5) => Srl,
                (0x20, 5) => Sra,
                (0, 6) => Or,
                (0, 7) => And,
                (1, 0) => Mul,
                (1, 1) => Mulh,
                (1, 2) => Mulhsu,
                (1, 3) => Mulhu,
                (1, 4) => Div,
                (1, 5) => Divu,
                (1, 6) => Rem,
                (1, 7) => Remu,
                _ => return bad,
            };
            op(k, 0)
        }
        0x3b => {
            let k = match (funct7, funct3) {
                (0, 0) => Addw,
                (0x20, 0) => Subw,
                (0, 1) => Sllw,
                (0, 5) => Srlw,
                (0x20, 5) => Sraw,
                (1, 0) => Mulw,
                (1, 4) => Divw,
                (1, 5) => Divuw,
                (1, 6) => Remw,
                (1, 7) => Remuw,
                _ => return bad,
            };
            op(k, 0)
        }
        0x0f => match funct3 {
            0 | 1 => op(Nop, 0),
            _ => bad,
        },
        0x73 | 0x2f | 0x07 | 0x27 | 0x43 | 0x47 | 0x4b | 0x4f | 0x53 => Op {
            kind: Slow,
            rd_len: rd | len << 5,
            rs1: 0,
            rs2: 0,
            imm: insn as i32,
        },
        _ => bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_is_eight_bytes() {
        assert_eq!(std::mem::size_of::<Op>(), 8);
    }

    #[test]
    fn compressed_instructions_keep_their_bits_for_xtval() {
        let rvc = crate::rvc::table();
        // c.unimp and a reserved encoding: illegal with the 16 bits as xtval.
        assert_eq!(decode(0xffff_0000, rvc), illegal(0, 2));
        let fld = decode(0x2000, rvc); // c.fld f8, 0(s0)
        assert_eq!(
            (fld.kind, fld.len(), fld.compressed_bits()),
            (Kind::Slow, 2, Some(0x2000))
        );
        let addi = decode(0x0505, rvc); // c.addi a0, 1
        assert_eq!(
            (addi.kind, addi.rd(), addi.rs1(), addi.imm, addi.len()),
            (Kind::Addi, 10, 10, 1, 2)
        );
    }
}
