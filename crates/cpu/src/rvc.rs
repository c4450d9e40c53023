//! Expansion of 16-bit compressed (RVC) instructions into their 32-bit RV64G
//! equivalents. This module owns the whole "C" extension as seen by an RV64GC
//! hart: it maps every legal compressed encoding (including the HINT code
//! points, which expand to their architecturally no-op 32-bit forms) to the
//! standard encoding the main decoder already understands, and reports every
//! illegal or reserved encoding as `None` so the caller can raise an
//! illegal-instruction exception. It is a pure function of the 16 input bits:
//! no state, no allocation, no panics, and therefore safe to memoise.

// Major opcodes of the 32-bit encodings we produce.
/// Every expansion, indexed by the 16-bit encoding; 0 marks an illegal one
/// (no 32-bit instruction is 0). Built once per process, 256 KiB, so the
/// interpreter's hot path is a single load instead of the decoder.
pub fn table() -> &'static [u32; 1 << 16] {
    static TABLE: std::sync::OnceLock<Box<[u32; 1 << 16]>> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = Box::new([0u32; 1 << 16]);
        for (i, slot) in t.iter_mut().enumerate() {
            *slot = expand(i as u16).unwrap_or(0);
        }
        t
    })
}

const LOAD: u32 = 0b000_0011;
const LOAD_FP: u32 = 0b000_0111;
const OP_IMM: u32 = 0b001_0011;
const OP_IMM_32: u32 = 0b001_1011;
const STORE: u32 = 0b010_0011;
const STORE_FP: u32 = 0b010_0111;
const OP: u32 = 0b011_0011;
const LUI: u32 = 0b011_0111;
const OP_32: u32 = 0b011_1011;
const BRANCH: u32 = 0b110_0011;
const JALR: u32 = 0b110_0111;
const JAL: u32 = 0b110_1111;
/// `ebreak` (SYSTEM, funct12 = 1).
const EBREAK: u32 = 0x0010_0073;

/// Stack pointer / return address register numbers.
const SP: u32 = 2;
const RA: u32 = 1;

/// Bits `hi..=lo` of `x`, shifted down to bit 0.
#[inline(always)]
const fn bits(x: u32, hi: u32, lo: u32) -> u32 {
    (x >> lo) & ((1 << (hi - lo + 1)) - 1)
}

/// Bits `hi..=lo` of `x`, moved so that bit `lo` lands at bit `to`.
#[inline(always)]
const fn place(x: u32, hi: u32, lo: u32, to: u32) -> u32 {
    bits(x, hi, lo) << to
}

/// Sign-extends the low `width` bits of `x`.
#[inline(always)]
const fn sext(x: u32, width: u32) -> i32 {
    let shift = 32 - width;
    ((x << shift) as i32) >> shift
}

#[inline(always)]
const fn r_type(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}

#[inline(always)]
const fn i_type(imm: i32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}

#[inline(always)]
const fn s_type(imm: i32, rs2: u32, rs1: u32, funct3: u32, opcode: u32) -> u32 {
    let imm = imm as u32;
    (bits(imm, 11, 5) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | (bits(imm, 4, 0) << 7)
        | opcode
}

#[inline(always)]
const fn b_type(imm: i32, rs2: u32, rs1: u32, funct3: u32) -> u32 {
    let imm = imm as u32;
    (bits(imm, 12, 12) << 31)
        | (bits(imm, 10, 5) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (funct3 << 12)
        | (bits(imm, 4, 1) << 8)
        | (bits(imm, 11, 11) << 7)
        | BRANCH
}

#[inline(always)]
const fn u_type(imm: i32, rd: u32, opcode: u32) -> u32 {
    (imm as u32 & 0xffff_f000) | (rd << 7) | opcode
}

#[inline(always)]
const fn j_type(imm: i32, rd: u32) -> u32 {
    let imm = imm as u32;
    (bits(imm, 20, 20) << 31)
        | (bits(imm, 10, 1) << 21)
        | (bits(imm, 11, 11) << 20)
        | (bits(imm, 19, 12) << 12)
        | (rd << 7)
        | JAL
}

/// Expands a 16-bit RV64C instruction (low two bits != 0b11) into the
/// equivalent 32-bit RV64G instruction encoding, or None if the encoding is
/// illegal or reserved on RV64 (including the all-zero instruction,
/// C.ADDI4SPN with nzuimm=0, C.LUI/C.ADDI16SP with imm=0, C.LUI with rd=x2
/// treated as ADDI16SP, C.JR with rs1=0, C.LDSP/C.LWSP with rd=0, C.ADDIW with
/// rd=0, and any other reserved cases from the spec's RVC tables).
///
/// An input whose low two bits are 0b11 is not a compressed instruction and
/// also yields `None`.
#[inline]
pub fn expand(insn: u16) -> Option<u32> {
    let c = u32::from(insn);
    let funct3 = bits(c, 15, 13);
    // Full 5-bit register fields (CI/CR/CSS formats).
    let rd = bits(c, 11, 7);
    let rs2 = bits(c, 6, 2);
    // Popular-register 3-bit fields (CIW/CL/CS/CA/CB formats): x8..x15.
    let rd_p = 8 + bits(c, 4, 2); // also rs2'
    let rs1_p = 8 + bits(c, 9, 7); // also rd' of CB/CA
                                   // CI-format signed 6-bit immediate: imm[5] = c[12], imm[4:0] = c[6:2].
    let imm6 = sext(place(c, 12, 12, 5) | bits(c, 6, 2), 6);
    // CI-format 6-bit shift amount, same bit positions, unsigned.
    let shamt = place(c, 12, 12, 5) | bits(c, 6, 2);

    match (c & 0b11, funct3) {
        // ---------------------------------------------------------- Q0
        (0b00, 0b000) => {
            // C.ADDI4SPN: nzuimm[5:4|9:6|2|3] = c[12:11|10:7|6|5].
            let nzuimm =
                place(c, 12, 11, 4) | place(c, 10, 7, 6) | place(c, 6, 6, 2) | place(c, 5, 5, 3);
            if nzuimm == 0 {
                // Includes the all-zero illegal instruction.
                return None;
            }
            Some(i_type(nzuimm as i32, SP, 0b000, rd_p, OP_IMM))
        }
        (0b00, 0b001) => Some(i_type(cl_d_off(c), rs1_p, 0b011, rd_p, LOAD_FP)), // C.FLD
        (0b00, 0b010) => Some(i_type(cl_w_off(c), rs1_p, 0b010, rd_p, LOAD)),    // C.LW
        (0b00, 0b011) => Some(i_type(cl_d_off(c), rs1_p, 0b011, rd_p, LOAD)),    // C.LD
        (0b00, 0b100) => None,                                                   // reserved
        (0b00, 0b101) => Some(s_type(cl_d_off(c), rd_p, rs1_p, 0b011, STORE_FP)), // C.FSD
        (0b00, 0b110) => Some(s_type(cl_w_off(c), rd_p, rs1_p, 0b010, STORE)),   // C.SW
        (0b00, 0b111) => Some(s_type(cl_d_off(c), rd_p, rs1_p, 0b011, STORE)),   // C.SD

        // ---------------------------------------------------------- Q1
        // C.ADDI (C.NOP when rd=0; rd=0 with imm!=0 and imm=0 are HINTs).
        (0b01, 0b000) => Some(i_type(imm6, rd, 0b000, rd, OP_IMM)),
        (0b01, 0b001) => {
            // C.ADDIW; rd=0 is reserved.
            if rd == 0 {
                return None;
            }
            Some(i_type(imm6, rd, 0b000, rd, OP_IMM_32))
        }
        // C.LI (rd=0 is a HINT).
        (0b01, 0b010) => Some(i_type(imm6, 0, 0b000, rd, OP_IMM)),
        (0b01, 0b011) => {
            if rd == SP {
                // C.ADDI16SP: nzimm[9] = c[12], nzimm[4|6|8:7|5] = c[6|5|4:3|2].
                let raw = place(c, 12, 12, 9)
                    | place(c, 6, 6, 4)
                    | place(c, 5, 5, 6)
                    | place(c, 4, 3, 7)
                    | place(c, 2, 2, 5);
                if raw == 0 {
                    return None;
                }
                Some(i_type(sext(raw, 10), SP, 0b000, SP, OP_IMM))
            } else {
                // C.LUI: nzimm[17] = c[12], nzimm[16:12] = c[6:2]. nzimm=0 is
                // reserved (for any rd); rd=0 with nzimm!=0 is a HINT.
                if imm6 == 0 {
                    return None;
                }
                Some(u_type(imm6 << 12, rd, LUI))
            }
        }
        (0b01, 0b100) => match bits(c, 11, 10) {
            // C.SRLI / C.SRAI: 6-bit shamt on RV64; shamt=0 is a HINT.
            0b00 => Some(i_type(shamt as i32, rs1_p, 0b101, rs1_p, OP_IMM)),
            0b01 => Some(i_type((0x400 | shamt) as i32, rs1_p, 0b101, rs1_p, OP_IMM)),
            // C.ANDI
            0b10 => Some(i_type(imm6, rs1_p, 0b111, rs1_p, OP_IMM)),
            // CA format: c[12] selects the W forms, c[6:5] the operation.
            _ => {
                let (funct7, funct3, opcode) = match (bits(c, 12, 12), bits(c, 6, 5)) {
                    (0, 0b00) => (0b010_0000, 0b000, OP),    // C.SUB
                    (0, 0b01) => (0, 0b100, OP),             // C.XOR
                    (0, 0b10) => (0, 0b110, OP),             // C.OR
                    (0, 0b11) => (0, 0b111, OP),             // C.AND
                    (1, 0b00) => (0b010_0000, 0b000, OP_32), // C.SUBW
                    (1, 0b01) => (0, 0b000, OP_32),          // C.ADDW
                    _ => return None,                        // reserved
                };
                Some(r_type(funct7, rd_p, rs1_p, funct3, rs1_p, opcode))
            }
        },
        (0b01, 0b101) => {
            // C.J: offset[11|4|9:8|10|6|7|3:1|5] = c[12|11|10:9|8|7|6|5:3|2].
            let raw = place(c, 12, 12, 11)
                | place(c, 11, 11, 4)
                | place(c, 10, 9, 8)
                | place(c, 8, 8, 10)
                | place(c, 7, 7, 6)
                | place(c, 6, 6, 7)
                | place(c, 5, 3, 1)
                | place(c, 2, 2, 5);
            Some(j_type(sext(raw, 12), 0))
        }
        (0b01, 0b110 | 0b111) => {
            // C.BEQZ / C.BNEZ: offset[8|4:3] = c[12|11:10],
            // offset[7:6|2:1|5] = c[6:5|4:3|2].
            let raw = place(c, 12, 12, 8)
                | place(c, 11, 10, 3)
                | place(c, 6, 5, 6)
                | place(c, 4, 3, 1)
                | place(c, 2, 2, 5);
            // funct3 110 -> BEQ (000), 111 -> BNE (001).
            Some(b_type(sext(raw, 9), 0, rs1_p, funct3 & 1))
        }

        // ---------------------------------------------------------- Q2
        // C.SLLI (rd=0 or shamt=0 are HINTs).
        (0b10, 0b000) => Some(i_type(shamt as i32, rd, 0b001, rd, OP_IMM)),
        (0b10, 0b001) => Some(i_type(ci_d_sp_off(c), SP, 0b011, rd, LOAD_FP)), // C.FLDSP
        (0b10, 0b010) => {
            // C.LWSP: uimm[5] = c[12], uimm[4:2|7:6] = c[6:4|3:2]; rd=0 reserved.
            if rd == 0 {
                return None;
            }
            let off = place(c, 12, 12, 5) | place(c, 6, 4, 2) | place(c, 3, 2, 6);
            Some(i_type(off as i32, SP, 0b010, rd, LOAD))
        }
        (0b10, 0b011) => {
            // C.LDSP; rd=0 reserved.
            if rd == 0 {
                return None;
            }
            Some(i_type(ci_d_sp_off(c), SP, 0b011, rd, LOAD))
        }
        (0b10, 0b100) => match (bits(c, 12, 12), rd, rs2) {
            (0, 0, 0) => None,                                    // C.JR x0: reserved
            (0, _, 0) => Some(i_type(0, rd, 0b000, 0, JALR)),     // C.JR
            (0, _, _) => Some(r_type(0, rs2, 0, 0b000, rd, OP)),  // C.MV (rd=0 HINT)
            (_, 0, 0) => Some(EBREAK),                            // C.EBREAK
            (_, _, 0) => Some(i_type(0, rd, 0b000, RA, JALR)),    // C.JALR
            (_, _, _) => Some(r_type(0, rs2, rd, 0b000, rd, OP)), // C.ADD (rd=0 HINT)
        },
        (0b10, 0b101) => Some(s_type(css_d_off(c), rs2, SP, 0b011, STORE_FP)), // C.FSDSP
        (0b10, 0b110) => {
            // C.SWSP: uimm[5:2|7:6] = c[12:9|8:7].
            let off = place(c, 12, 9, 2) | place(c, 8, 7, 6);
            Some(s_type(off as i32, rs2, SP, 0b010, STORE))
        }
        (0b10, 0b111) => Some(s_type(css_d_off(c), rs2, SP, 0b011, STORE)), // C.SDSP

        // Quadrant 3 is the 32-bit encoding space, not RVC.
        _ => None,
    }
}

/// CL/CS doubleword offset: uimm[5:3] = c[12:10], uimm[7:6] = c[6:5].
#[inline(always)]
const fn cl_d_off(c: u32) -> i32 {
    (place(c, 12, 10, 3) | place(c, 6, 5, 6)) as i32
}

/// CL/CS word offset: uimm[5:3] = c[12:10], uimm[2] = c[6], uimm[6] = c[5].
#[inline(always)]
const fn cl_w_off(c: u32) -> i32 {
    (place(c, 12, 10, 3) | place(c, 6, 6, 2) | place(c, 5, 5, 6)) as i32
}

/// CI stack-relative doubleword offset: uimm[5] = c[12],
/// uimm[4:3|8:6] = c[6:5|4:2].
#[inline(always)]
const fn ci_d_sp_off(c: u32) -> i32 {
    (place(c, 12, 12, 5) | place(c, 6, 5, 3) | place(c, 4, 2, 6)) as i32
}

/// CSS stack-relative doubleword offset: uimm[5:3|8:6] = c[12:10|9:7].
#[inline(always)]
const fn css_d_off(c: u32) -> i32 {
    (place(c, 12, 10, 3) | place(c, 9, 7, 6)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference pairs produced by `tests/data/gen_rvc_vectors.sh` with the
    /// GNU assembler: `<rvc hex> <expansion hex> <source> => <source>`.
    const VECTORS: &str = include_str!("../tests/data/rvc_vectors.txt");

    fn vectors() -> impl Iterator<Item = (u16, u32, &'static str)> {
        VECTORS
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|l| {
                let mut it = l.splitn(3, ' ');
                let c = u16::from_str_radix(it.next().unwrap(), 16).unwrap();
                let full = u32::from_str_radix(it.next().unwrap(), 16).unwrap();
                (c, full, it.next().unwrap_or(""))
            })
    }

    #[test]
    fn assembler_vectors() {
        let mut n = 0;
        let mut failures = Vec::new();
        for (c, full, src) in vectors() {
            n += 1;
            let got = expand(c);
            if got != Some(full) {
                failures.push(format!("{c:04x} {src}: got {got:08x?}, want {full:08x}"));
            }
        }
        assert!(n > 5000, "vector file looks truncated: {n} vectors");
        assert!(
            failures.is_empty(),
            "{} of {n} vectors failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }

    /// Every mnemonic family the generator is expected to cover is present,
    /// so a silently dropped loop in the script is noticed.
    #[test]
    fn vectors_cover_every_instruction() {
        let srcs: Vec<&str> = vectors().map(|(_, _, s)| s).collect();
        for m in [
            "c.addi4spn ",
            "c.fld ",
            "c.lw ",
            "c.ld ",
            "c.fsd ",
            "c.sw ",
            "c.sd ",
            "c.nop",
            "c.addi ",
            "c.addiw ",
            "c.li ",
            "c.addi16sp ",
            "c.lui ",
            "c.srli ",
            "c.srai ",
            "c.andi ",
            "c.sub ",
            "c.xor ",
            "c.or ",
            "c.and ",
            "c.subw ",
            "c.addw ",
            "c.j ",
            "c.beqz ",
            "c.bnez ",
            "c.slli ",
            "c.fldsp ",
            "c.lwsp ",
            "c.ldsp ",
            "c.jr ",
            "c.mv ",
            "c.ebreak",
            "c.jalr ",
            "c.add ",
            "c.fsdsp ",
            "c.swsp ",
            "c.sdsp ",
            ".insn ci 1, 4, ",
            ".insn ci 2, 0, ",
        ] {
            assert!(
                srcs.iter().any(|s| s.starts_with(m)),
                "no vectors for {m:?}"
            );
        }
    }

    /// Every value of every compressed bit position is exercised by the
    /// reference vectors (per quadrant/funct3 slot), i.e. no immediate bit
    /// goes untested.
    #[test]
    fn vectors_toggle_every_bit_in_every_slot() {
        // For each (quadrant, funct3): OR of all encodings and OR of all
        // complements, restricted to bits 12..2.
        let mut seen1 = [0u16; 24];
        let mut seen0 = [0u16; 24];
        for (c, _, _) in vectors() {
            let slot = usize::from(c & 3) * 8 + usize::from(c >> 13);
            seen1[slot] |= c;
            seen0[slot] |= !c;
        }
        for slot in 0..24 {
            let q = slot / 8;
            let f3 = slot % 8;
            if q == 3 || (q == 0 && f3 == 0b100) {
                continue; // not RVC / entirely reserved
            }
            let want = 0x1ffc;
            assert_eq!(
                seen1[slot] & want,
                want,
                "Q{q} funct3={f3:03b}: some bit never set"
            );
            assert_eq!(
                seen0[slot] & want,
                want,
                "Q{q} funct3={f3:03b}: some bit never clear"
            );
        }
    }

    /// Independent statement of the RV64C reserved/illegal code points,
    /// written from the spec's opcode-map tables.
    fn reserved(c: u16) -> bool {
        let c = u32::from(c);
        let rd = (c >> 7) & 31;
        let rs2 = (c >> 2) & 31;
        let ci_imm_zero = c & 0x107c == 0; // c[12] and c[6:2] all zero
        match (c & 3, c >> 13) {
            (3, _) => true,                                   // not compressed
            (0, 0) => (c >> 5) & 0xff == 0,                   // ADDI4SPN nzuimm=0 (incl. 0x0000)
            (0, 4) => true,                                   // reserved slot
            (1, 1) => rd == 0,                                // ADDIW rd=0
            (1, 3) => ci_imm_zero,                            // ADDI16SP / LUI with zero imm
            (1, 4) => c & 0x1c40 == 0x1c40,                   // CA: c[12]=1, c[11:10]=11, c[6]=1
            (2, 2) | (2, 3) => rd == 0,                       // LWSP/LDSP rd=0
            (2, 4) => c & 0x1000 == 0 && rd == 0 && rs2 == 0, // JR x0
            _ => false,
        }
    }

    #[test]
    fn exhaustive_legality_and_shape() {
        let mut legal = 0u32;
        for c in 0..=u16::MAX {
            let got = expand(c);
            assert_eq!(
                got.is_none(),
                reserved(c),
                "{c:04x}: legality mismatch ({got:08x?})"
            );
            if let Some(x) = got {
                legal += 1;
                assert_eq!(x & 3, 3, "{c:04x} -> {x:08x}: not a 32-bit encoding");
            }
        }
        // 3 * 2^14 compressed code points minus the reserved ones:
        //   ADDI4SPN nzuimm=0: 8, Q0 funct3=100: 2^11, ADDIW rd=0: 2^6,
        //   funct3=011 zero imm: 2^5, CA reserved: 2^7, LWSP/LDSP rd=0: 2*2^6,
        //   JR x0: 1.
        let reserved_count = 8 + 2048 + 64 + 32 + 128 + 128 + 1;
        assert_eq!(legal, 3 * 16384 - reserved_count);
    }

    /// Explicit spot checks of the reserved encodings listed in the brief.
    #[test]
    fn named_reserved_encodings() {
        let cases: &[(u16, &str)] = &[
            (0x0000, "all-zero instruction"),
            (0x0004, "c.addi4spn x9, sp, 0"),
            (0x001c, "c.addi4spn x15, sp, 0"),
            (0x8000, "Q0 funct3=100"),
            (0x9ffc, "Q0 funct3=100, all operand bits set"),
            (0x2001, "c.addiw x0, 0"),
            (0x207d, "c.addiw x0, -1"),
            (0x3005, "c.addiw x0, -31"),
            (0x6101, "c.addi16sp sp, 0"),
            (0x6001, "c.lui x0, 0"),
            (0x6501, "c.lui x10, 0"),
            (0x6f81, "c.lui x31, 0"),
            (0x9c41, "Q1 CA c[12]=1 funct2=10 (reserved)"),
            (0x9c61, "Q1 CA c[12]=1 funct2=11 (reserved)"),
            (0x9ffd, "Q1 CA reserved, all operand bits set"),
            (0x8002, "c.jr x0"),
            (0x4002, "c.lwsp x0, 0(sp)"),
            (0x507e, "c.lwsp x0, 252(sp)"),
            (0x6002, "c.ldsp x0, 0(sp)"),
            (0x707e, "c.ldsp x0, 504(sp)"),
            (0x0003, "32-bit encoding space"),
            (0xffff, "32-bit encoding space"),
        ];
        for &(c, what) in cases {
            assert_eq!(expand(c), None, "{c:04x} ({what}) should be reserved");
        }
    }

    /// HINT and edge encodings that must stay legal, with expansions
    /// derived by hand from the spec.
    #[test]
    fn hand_checked_edges() {
        let cases: &[(u16, u32, &str)] = &[
            (0x0001, 0x0000_0013, "c.nop -> addi x0, x0, 0"),
            (0x9002, 0x0010_0073, "c.ebreak"),
            (0x9082, 0x0000_80e7, "c.jalr x1 -> jalr x1, 0(x1)"),
            (0x8082, 0x0000_8067, "c.jr ra (ret)"),
            (0x0002, 0x0000_1013, "c.slli x0, 0 (HINT) -> slli x0, x0, 0"),
            (0x2081, 0x0000_809b, "c.addiw x1, 0 (sext.w)"),
            (0x1ffe, 0x03ff_9f93, "c.slli x31, 63"),
        ];
        for &(c, want, what) in cases {
            assert_eq!(expand(c), Some(want), "{c:04x} ({what})");
        }
    }
}
