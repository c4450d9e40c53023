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

/// Calls `$m!` with every [`Kind`], each followed by the names of its two
/// [`Code`]s (2- and 4-byte instruction).
///
/// Besides the RISC-V operations (ADDIW, SLLIW, ... named as in the spec):
/// `Undecoded`, a slot not decoded yet; `Exit`, a slot not run from the page
/// (the one at offset 0xffe, and a 4-byte instruction at 0xffc, so that
/// sequential execution never passes the last slot); `Illegal`; `Slow`, an
/// instruction run by the general executor (SYSTEM, atomics, floating
/// point); `Nop` (FENCE, FENCE.I, and every instruction whose only effect is
/// writing x0); `J` and `Jr`, JAL and JALR that do not link.
macro_rules! kinds {
    ($m:ident) => {
        $m! {
            Undecoded Undecoded2 Undecoded4,
            Exit Exit2 Exit4,
            Illegal Illegal2 Illegal4,
            Slow Slow2 Slow4,
            Nop Nop2 Nop4,
            Lui Lui2 Lui4,
            Auipc Auipc2 Auipc4,
            Jal Jal2 Jal4,
            Jalr Jalr2 Jalr4,
            J J2 J4,
            Jr Jr2 Jr4,
            Beq Beq2 Beq4,
            Bne Bne2 Bne4,
            Blt Blt2 Blt4,
            Bge Bge2 Bge4,
            Bltu Bltu2 Bltu4,
            Bgeu Bgeu2 Bgeu4,
            Lb Lb2 Lb4,
            Lh Lh2 Lh4,
            Lw Lw2 Lw4,
            Ld Ld2 Ld4,
            Lbu Lbu2 Lbu4,
            Lhu Lhu2 Lhu4,
            Lwu Lwu2 Lwu4,
            Sb Sb2 Sb4,
            Sh Sh2 Sh4,
            Sw Sw2 Sw4,
            Sd Sd2 Sd4,
            Addi Addi2 Addi4,
            Slti Slti2 Slti4,
            Sltiu Sltiu2 Sltiu4,
            Xori Xori2 Xori4,
            Ori Ori2 Ori4,
            Andi Andi2 Andi4,
            Slli Slli2 Slli4,
            Srli Srli2 Srli4,
            Srai Srai2 Srai4,
            Addiw Addiw2 Addiw4,
            Slliw Slliw2 Slliw4,
            Srliw Srliw2 Srliw4,
            Sraiw Sraiw2 Sraiw4,
            Add Add2 Add4,
            Sub Sub2 Sub4,
            Sll Sll2 Sll4,
            Slt Slt2 Slt4,
            Sltu Sltu2 Sltu4,
            Xor Xor2 Xor4,
            Srl Srl2 Srl4,
            Sra Sra2 Sra4,
            Or Or2 Or4,
            And And2 And4,
            Mul Mul2 Mul4,
            Mulh Mulh2 Mulh4,
            Mulhsu Mulhsu2 Mulhsu4,
            Mulhu Mulhu2 Mulhu4,
            Div Div2 Div4,
            Divu Divu2 Divu4,
            Rem Rem2 Rem4,
            Remu Remu2 Remu4,
            Addw Addw2 Addw4,
            Subw Subw2 Subw4,
            Sllw Sllw2 Sllw4,
            Srlw Srlw2 Srlw4,
            Sraw Sraw2 Sraw4,
            Mulw Mulw2 Mulw4,
            Divw Divw2 Divw4,
            Divuw Divuw2 Divuw4,
            Remw Remw2 Remw4,
            Remuw Remuw2 Remuw4,
        }
    };
}
pub(crate) use kinds;

macro_rules! define_kinds {
    ($($k:ident $c2:ident $c4:ident),* $(,)?) => {
        /// What an [`Op`] does (see [`kinds`]).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub(crate) enum Kind {
            $($k),*
        }

        /// A [`Kind`] and an instruction length: what the interpreter
        /// dispatches on, so that the length is a constant in each handler.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        #[repr(u8)]
        pub(crate) enum Code {
            $($c2, $c4),*
        }

        impl Code {
            const ALL: &'static [Code] = &[$(Code::$c2, Code::$c4),*];
            const KINDS: &'static [Kind] = &[$(Kind::$k, Kind::$k),*];
        }
    };
}
kinds!(define_kinds);

impl Code {
    pub fn new(kind: Kind, len: u8) -> Code {
        Code::ALL[kind as usize * 2 + (len == 4) as usize]
    }

    pub fn kind(self) -> Kind {
        Code::KINDS[self as usize]
    }
}

/// An integer register number. An enum so that indexing the register file
/// with it needs neither a mask nor a bounds check.
#[rustfmt::skip]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Reg {
    X0, X1, X2, X3, X4, X5, X6, X7, X8, X9, X10, X11, X12, X13, X14, X15,
    X16, X17, X18, X19, X20, X21, X22, X23, X24, X25, X26, X27, X28, X29, X30, X31,
}

impl Reg {
    #[rustfmt::skip]
    const ALL: [Reg; 32] = {
        use Reg::*;
        [
            X0, X1, X2, X3, X4, X5, X6, X7, X8, X9, X10, X11, X12, X13, X14, X15,
            X16, X17, X18, X19, X20, X21, X22, X23, X24, X25, X26, X27, X28, X29, X30, X31,
        ]
    };

    /// Register number `n & 31`.
    pub fn new(n: u32) -> Reg {
        Reg::ALL[(n & 31) as usize]
    }

    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One decoded instruction, 8 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(8))]
pub(crate) struct Op {
    pub code: Code,
    pub rd: Reg,
    pub rs1: Reg,
    pub rs2: Reg,
    /// Sign-extended immediate; the shift amount of a shift by an immediate;
    /// for `Slow`, the 32-bit encoding (the 16-bit one for a compressed
    /// instruction); for `Illegal`, the `xtval`.
    pub imm: i32,
}

impl Op {
    pub const UNDECODED: Op = Op::new(Code::Undecoded2, 0);
    pub const EXIT: Op = Op::new(Code::Exit2, 0);

    const fn new(code: Code, imm: i32) -> Op {
        Op {
            code,
            rd: Reg::X0,
            rs1: Reg::X0,
            rs2: Reg::X0,
            imm,
        }
    }

    #[inline(always)]
    pub fn kind(self) -> Kind {
        self.code.kind()
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
                if matches!(op.kind(), Kind::Illegal | Kind::Slow) {
                    op.imm = bits as i32;
                }
                op
            }
        }
    }
}

fn illegal(bits: u32, len: u8) -> Op {
    Op::new(Code::new(Kind::Illegal, len), bits as i32)
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
    if op.rd == Reg::X0 {
        let k = op.kind();
        if (Kind::Addi as u8..=Kind::Remuw as u8).contains(&(k as u8))
            || k == Kind::Lui
            || k == Kind::Auipc
        {
            op.code = Code::new(Kind::Nop, len);
        } else if k == Kind::Jal {
            op.code = Code::new(Kind::J, len);
        } else if k == Kind::Jalr {
            op.code = Code::new(Kind::Jr, len);
        }
    }
    op
}

fn decode32_raw(insn: u32, len: u8) -> Op {
    use Kind::*;
    let rd = Reg::new(insn >> 7);
    let rs1 = Reg::new(insn >> 15);
    let rs2 = Reg::new(insn >> 20);
    let funct3 = (insn >> 12) & 7;
    let funct7 = insn >> 25;
    let op = |kind: Kind, imm: i32| Op {
        code: Code::new(kind, len),
        rd,
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
        0x73 | 0x2f | 0x07 | 0x27 | 0x43 | 0x47 | 0x4b | 0x4f | 0x53 => {
            Op::new(Code::new(Slow, len), insn as i32)
        }
        _ => bad,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_op_is_eight_bytes_and_codes_pair_up() {
        assert_eq!(std::mem::size_of::<Op>(), 8);
        for (i, c) in Code::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
            assert_eq!(Code::new(c.kind(), 2 + 2 * (i as u8 & 1)), *c);
        }
        assert_eq!(Code::Undecoded2 as u8, 0);
    }

    #[test]
    fn compressed_instructions_keep_their_bits_for_xtval() {
        let rvc = crate::rvc::table();
        // c.unimp: illegal with the 16 bits as xtval.
        assert_eq!(decode(0xffff_0000, rvc), illegal(0, 2));
        let fld = decode(0x2000, rvc); // c.fld f8, 0(s0)
        assert_eq!((fld.code, fld.imm), (Code::Slow2, 0x2000));
        let addi = decode(0x0505, rvc); // c.addi a0, 1
        assert_eq!(
            (addi.code, addi.rd, addi.rs1, addi.imm),
            (Code::Addi2, Reg::X10, Reg::X10, 1)
        );
        let ret = decode(0x8082, rvc); // c.jr ra
        assert_eq!((ret.code, ret.rs1), (Code::Jr2, Reg::X1));
    }
}
