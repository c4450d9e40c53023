//! Differential tests, engine against engine: the same random RV64GC
//! program runs under the interpreter and under the translator (each with
//! its own, different slicing into `run` calls and the same interrupt-line
//! schedule), and the complete architectural state (registers, pc,
//! privilege, CSRs, FP registers, step count, reservation, WFI), all of RAM
//! and the log of device accesses must be identical after every slice
//! boundary both reach.
//!
//! The programs mix RV64I/M arithmetic, compressed instructions, branches
//! and jumps across four code pages, loads and stores (aligned, misaligned,
//! page-crossing, to a device, to unmapped memory), stores into the code
//! itself and FENCE.I, CSR accesses (including `cycle`/`instret`, which
//! expose the exact step count), ECALL/EBREAK/illegal instructions, WFI,
//! atomics, floating point, and switches between two Sv39 page tables with
//! SFENCE.VMA while running in S-mode. Traps go to an M-mode handler that
//! skips the trapping instruction.

use ftvm_cpu::csr::*;
use ftvm_cpu::{Bus, Engine, Exit, Hart, Ram};
use proptest::prelude::*;

const BASE: u64 = 0x8000_0000;
const RAM: u64 = 1 << 20;
const CODE: u64 = BASE;
const CODE_LEN: u64 = 0x4000;
const HANDLER: u64 = BASE + 0x8000;
const PT_A: u64 = BASE + 0x10000;
const PT_B: u64 = BASE + 0x20000;
const DATA: u64 = BASE + 0x80000;
const DEV: u64 = 0x1000_0000;

/// A device that answers reads with a function of address and step and logs
/// every access with its step number.
#[derive(Default)]
struct Dev {
    log: Vec<(bool, u64, u8, u64, u64)>,
}

impl Bus for Dev {
    fn mmio_read(&mut self, paddr: u64, size: u8, icount: u64) -> Option<u64> {
        if !(DEV..DEV + 0x1000).contains(&paddr) {
            return None;
        }
        let v = paddr.wrapping_mul(0x9e37_79b9).wrapping_add(icount);
        self.log.push((false, paddr, size, 0, icount));
        Some(v)
    }
    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64, icount: u64) -> bool {
        if !(DEV..DEV + 0x1000).contains(&paddr) {
            return false;
        }
        self.log.push((true, paddr, size, value, icount));
        true
    }
    fn time(&self, icount: u64) -> u64 {
        icount / 3
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn reg(&mut self) -> u32 {
        8 + self.below(24) as u32
    }
}

// ------------------------------------------------------------ encodings

fn r(f7: u32, rs2: u32, rs1: u32, f3: u32, rd: u32, opc: u32) -> u32 {
    (f7 << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | opc
}
fn i(imm: i32, rs1: u32, f3: u32, rd: u32, opc: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | opc
}
fn s(imm: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let imm = imm as u32;
    (((imm >> 5) & 0x7f) << 25) | (rs2 << 20) | (rs1 << 15) | (f3 << 12) | ((imm & 31) << 7) | 0x23
}
fn b(off: i32, rs2: u32, rs1: u32, f3: u32) -> u32 {
    let o = off as u32;
    (((o >> 12) & 1) << 31)
        | (((o >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (f3 << 12)
        | (((o >> 1) & 0xf) << 8)
        | (((o >> 11) & 1) << 7)
        | 0x63
}
fn jal(rd: u32, off: i32) -> u32 {
    let o = off as u32;
    (((o >> 20) & 1) << 31)
        | (((o >> 1) & 0x3ff) << 21)
        | (((o >> 11) & 1) << 20)
        | (((o >> 12) & 0xff) << 12)
        | (rd << 7)
        | 0x6f
}
fn csr(f3: u32, rd: u32, csr: u16, rs1: u32) -> u32 {
    ((csr as u32) << 20) | (rs1 << 15) | (f3 << 12) | (rd << 7) | 0x73
}

/// Registers with fixed roles (never a random destination): x1 link,
/// x2 data page, x3 data near a page end, x4 code, x5 device, x6/x7 the two
/// satp values.
fn random_insn(g: &mut Rng, pc: u64) -> Vec<u8> {
    let rd = g.reg();
    let rs1 = g.reg();
    let rs2 = g.reg();
    let word = |w: u32| w.to_le_bytes().to_vec();
    let half = |h: u16| h.to_le_bytes().to_vec();
    let base = [2u32, 3, 3, 4, 5][g.below(5) as usize];
    match g.below(100) {
        0..=19 => {
            // OP-IMM, OP-IMM-32
            let f3 = g.below(8) as u32;
            let imm = match f3 {
                1 | 5 => (g.below(64) as i32) | if g.below(2) == 0 { 0 } else { 0x400 },
                _ => (g.below(4096) as i32) - 2048,
            };
            if g.below(4) == 0 {
                let f3 = [0, 1, 5][g.below(3) as usize];
                let imm = if f3 == 0 {
                    imm
                } else {
                    (g.below(32) as i32) | if g.below(2) == 0 { 0 } else { 0x400 }
                };
                word(i(imm, rs1, f3, rd, 0x1b))
            } else {
                word(i(imm, rs1, f3, rd, 0x13))
            }
        }
        20..=34 => {
            // OP, OP-32, with M
            let f7 = [0, 0x20, 1][g.below(3) as usize];
            let opc = if g.below(3) == 0 { 0x3b } else { 0x33 };
            word(r(f7, rs2, rs1, g.below(8) as u32, rd, opc))
        }
        35..=37 => {
            word(((g.next() as u32) & 0xffff_f000) | (rd << 7) | [0x37, 0x17][g.below(2) as usize])
        }
        38..=45 => {
            // loads: base register with a small offset (also misaligned,
            // and over the end of a page for x3)
            let f3 = [0, 1, 2, 3, 4, 5, 6][g.below(7) as usize];
            let off = (g.below(32) as i32) - 8;
            word(i(off, base, f3, rd, 0x03))
        }
        46..=53 => {
            let f3 = g.below(4) as u32;
            let off = if base == 4 {
                // into the code: self-modifying
                (g.below(CODE_LEN.min(2048)) as i32) & !3
            } else {
                (g.below(32) as i32) - 8
            };
            word(s(off, rs2, base, f3))
        }
        54..=63 => {
            // branches within the code region
            let f3 = [0, 1, 4, 5, 6, 7][g.below(6) as usize];
            let mut off = ((g.below(256) as i32) - 160) & !1;
            let t = pc as i64 + off as i64;
            if t < CODE as i64 || t >= (CODE + CODE_LEN - 4) as i64 {
                off = 4;
            }
            word(b(off, rs2, rs1, f3))
        }
        64..=66 => {
            let mut off = ((g.below(8192) as i32) - 4096) & !1;
            let t = pc as i64 + off as i64;
            if t < CODE as i64 || t >= (CODE + CODE_LEN - 4) as i64 {
                off = 8;
            }
            word(jal([0, 1][g.below(2) as usize], off))
        }
        67 => word(i(
            (g.below(16) as i32) & !1,
            1,
            0,
            [0, 1][g.below(2) as usize],
            0x67,
        )),
        68..=77 => {
            // compressed: c.addi, c.li, c.mv, c.add, c.ldsp/c.sdsp, c.beqz
            // on x8-x15, c.j
            let rdc = (g.below(8) + 8) as u16;
            let imm = (g.below(64) as u16) & 0x3f;
            match g.below(7) {
                0 => half(0x0001 | ((imm & 0x20) << 7) | (rdc << 7) | ((imm & 0x1f) << 2)),
                1 => half(0x4001 | ((imm & 0x20) << 7) | (rdc << 7) | ((imm & 0x1f) << 2)),
                2 => half(0x8002 | ((rd as u16) << 7) | ((rs2 as u16) << 2)),
                3 => half(0x9002 | ((rd as u16) << 7) | ((rs2 as u16) << 2)),
                4 => half(0x6002 | ((rd as u16) << 7) | ((imm & 0x18) << 2)), // c.ldsp rd, off(x2)
                5 => half(0xe002 | ((rs2 as u16) << 2) | ((imm & 0x38) << 7)), // c.sdsp
                _ => half(0xc001 | (((rdc - 8) & 7) << 7) | (1 << 3)), // c.beqz rdc', +2.. small
            }
        }
        78..=82 => {
            // CSRs
            let c = [
                MSCRATCH, SSCRATCH, CYCLE, INSTRET, MIE, MIP, FCSR, MSTATUS, MEPC, 0x7c0,
            ][g.below(10) as usize];
            if c == MSTATUS || c == MIE {
                // set/clear a few low bits (SIE, MIE, SSIE, MSIE) by immediate
                let f3 = [6, 7][g.below(2) as usize];
                word(csr(f3, rd, c, g.below(32) as u32))
            } else {
                let f3 = [1, 2, 3, 5, 6, 7][g.below(6) as usize];
                word(csr(f3, rd, c, rs1))
            }
        }
        83 => {
            // switch page tables (from S-mode; in M it only changes satp)
            let mut v = word(csr(1, 0, SATP, [6, 7][g.below(2) as usize]));
            if g.below(2) == 0 {
                v.extend(word(0x1200_0073)); // sfence.vma
            }
            v
        }
        84 => word([0x0000_0073, 0x0010_0073, 0, 0x1050_0073, 0x0000_100f][g.below(5) as usize]),
        85..=88 => {
            // AMOs, LR/SC on the data page
            let f5 = [0, 1, 2, 3, 4, 8, 12, 16, 20, 24, 28][g.below(11) as usize];
            let f3 = 2 + g.below(2) as u32;
            let rs2 = if f5 == 2 { 0 } else { rs2 };
            word(r(f5 << 2, rs2, 2, f3, rd, 0x2f))
        }
        89..=95 => {
            // floating point: fadd/fmul/fdiv/fsqrt.{s,d}, fmv, fcvt, fld/fsd
            let frd = g.below(32) as u32;
            let fa = g.below(32) as u32;
            let fb = g.below(32) as u32;
            let rm = [0, 1, 2, 3, 4, 7][g.below(6) as usize];
            match g.below(8) {
                0 => word(r(0x01, fb, fa, rm, frd, 0x53)), // fadd.d
                1 => word(r(0x08, fb, fa, rm, frd, 0x53)), // fmul.s
                2 => word(r(0x0d, fb, fa, rm, frd, 0x53)), // fdiv.d
                3 => word(r(0x2d, 0, fa, rm, frd, 0x53)),  // fsqrt.d
                4 => word(r(0x79, 0, rs1, 0, frd, 0x53)),  // fmv.d.x
                5 => word(r(0x61, 0, fa, rm, rd, 0x53)),   // fcvt.w.d
                6 => word(i((g.below(16) as i32) * 8, 2, 3, frd, 0x07)), // fld
                _ => word(s((g.below(16) as i32) * 8, fb, 2, 3) & !0x7f | 0x27), // fsd
            }
        }
        _ => word(i((g.below(4096) as i32) - 2048, 0, 0, rd, 0x13)), // li
    }
}

/// Sv39 table at `root`: RAM identity-mapped through a 4 KiB level for its
/// first 2 MiB (with the data page remapped and the next page missing when
/// `alt`), the device gigapage identity-mapped.
fn page_table(ram: &mut Ram, root: u64, alt: bool) -> u64 {
    let l1 = root + 0x1000;
    let l0 = root + 0x2000;
    let pte = |pa: u64, flags: u64| ((pa >> 12) << 10) | flags;
    const V: u64 = 1;
    const RWX: u64 = 0b1110;
    const AD: u64 = 0xc0;
    let w = |ram: &mut Ram, at: u64, v: u64| assert!(ram.write_bytes(at, &v.to_le_bytes()));
    w(ram, root, pte(0, V | RWX | AD)); // gigapage 0: devices
    w(ram, root + 2 * 8, pte(l1, V));
    w(ram, l1, pte(l0, V));
    for k in 1..512u64 {
        w(ram, l1 + 8 * k, pte(BASE + (k << 21), V | RWX | AD));
    }
    for k in 0..512u64 {
        let va = BASE + (k << 12);
        let mut flags = V | RWX | if alt { 0x40 } else { AD }; // A only: stores set D
        let mut pa = va;
        if alt && va == DATA {
            pa = DATA + 0x10000;
        }
        if alt && va == DATA + 0x1000 {
            flags = 0;
        }
        w(ram, l0 + 8 * k, pte(pa, flags));
    }
    (SATP_MODE_SV39 << 60) | (root >> 12)
}

fn machine(seed: u64) -> (Hart, Ram) {
    let mut g = Rng(seed | 1);
    let mut ram = Ram::new(BASE, RAM);
    let mut code = Vec::new();
    while (code.len() as u64) < CODE_LEN - 8 {
        let pc = CODE + code.len() as u64;
        code.extend(random_insn(&mut g, pc));
    }
    code.truncate((CODE_LEN - 8) as usize);
    let back = -((code.len() as i32) & !1);
    code.extend(jal(0, back).to_le_bytes());
    assert!(ram.write_bytes(CODE, &code));
    // Handler: skip the trapping instruction (4 bytes), return.
    let handler = [
        csr(2, 31, MEPC, 0),   // csrr x31, mepc
        i(4, 31, 0, 31, 0x13), // addi x31, x31, 4
        csr(1, 0, MEPC, 31),   // csrw mepc, x31
        0x3020_0073,           // mret
    ];
    let hb: Vec<u8> = handler.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(ram.write_bytes(HANDLER, &hb));
    let satp_a = page_table(&mut ram, PT_A, false);
    let satp_b = page_table(&mut ram, PT_B, true);
    let mut data = vec![0u8; 0x2000];
    for c in data.chunks_mut(8) {
        c.copy_from_slice(&g.next().to_le_bytes());
    }
    assert!(ram.write_bytes(DATA, &data));
    assert!(ram.write_bytes(DATA + 0x10000, &data[..0x1000]));

    let mut h = Hart::new(CODE, 0);
    for k in 8..32 {
        h.x[k] = if g.below(4) == 0 {
            g.below(64)
        } else {
            g.next()
        };
    }
    h.x[1] = CODE + 0x100;
    h.x[2] = DATA + 0x100;
    h.x[3] = DATA + 0xffc;
    h.x[4] = CODE + 0x800;
    h.x[5] = DEV + 0x10;
    h.x[6] = satp_a;
    h.x[7] = satp_b;
    h.csr.mtvec = HANDLER;
    h.csr.mie = IP_MTIP | IP_MSIP;
    h.csr.mstatus |= MSTATUS_FS;
    if seed & 2 != 0 {
        // Start in S-mode with paging on.
        h.csr.satp = satp_a;
        h.csr.mstatus |= 1 << MSTATUS_MPP_SHIFT;
        h.csr.mepc = CODE;
        h.pc = HANDLER + 12; // the handler's mret
    }
    (h, ram)
}

fn slices(seed: u64, total: u64) -> Vec<u64> {
    let mut g = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut v = Vec::new();
    let mut at = 0;
    while at < total {
        at += match g.below(4) {
            0 => 1 + g.below(3),
            1 => 1 + g.below(100),
            2 => 1 + g.below(5000),
            _ => 1 + g.below(50_000),
        };
        v.push(at.min(total));
    }
    v
}

/// The interrupt lines at step `icount`: a fixed schedule.
fn lines(icount: u64) -> (bool, bool) {
    let msip = (icount / 7919) % 5 == 3;
    let mtip = (icount / (7919 * 13)) % 3 == 1;
    (msip, mtip)
}

struct Run {
    hart: Hart,
    ram: Ram,
    dev: Dev,
    /// State at each boundary in `checkpoints`.
    states: Vec<(u64, String)>,
}

fn state(h: &Hart, ram: &Ram) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in ram.as_bytes() {
        hash = (hash ^ byte as u64).wrapping_mul(0x100_0000_01b3);
    }
    format!(
        "pc {:#x} prv {:?} icount {} wfi {} res {:?}\nx {:x?}\nf {:?}\ncsr {:?}\nram {:#x}",
        h.pc, h.prv, h.icount, h.wfi, h.reservation, h.x, h.fp, h.csr, hash
    )
}

fn run(seed: u64, engine: Engine, slicing: u64, total: u64, checkpoints: &[u64]) -> Run {
    let (mut hart, mut ram) = machine(seed);
    hart.set_engine(engine);
    let mut dev = Dev::default();
    let mut states = Vec::new();
    let mut marks: Vec<u64> = slices(slicing, total);
    marks.extend_from_slice(checkpoints);
    marks.sort_unstable();
    marks.dedup();
    for limit in marks {
        while hart.icount < limit {
            let (msip, mtip) = lines(hart.icount);
            hart.set_irq_lines(msip, mtip, false, false);
            // Stop where the line schedule changes, as a board stops at deadlines.
            let next_change = (hart.icount / 7919 + 1) * 7919;
            match hart.run(&mut ram, &mut dev, limit.min(next_change)) {
                Exit::Wfi => {
                    // A spurious wake-up: WFI then acts as a NOP, at the
                    // same step whatever the slicing.
                    hart.wfi = false;
                }
                Exit::Limit | Exit::Device => {}
            }
        }
        if checkpoints.contains(&limit) {
            states.push((limit, state(&hart, &ram)));
        }
    }
    Run {
        hart,
        ram,
        dev,
        states,
    }
}

fn compare(seed: u64, total: u64) -> ftvm_cpu::JitStats {
    let checkpoints: Vec<u64> = (1..=8).map(|k| k * total / 8).collect();
    let a = run(seed, Engine::Interp, seed ^ 0x55, total, &checkpoints);
    let b = run(seed, Engine::Jit, seed ^ 0xaa, total, &checkpoints);
    for ((at, sa), (_, sb)) in a.states.iter().zip(&b.states) {
        assert_eq!(sa, sb, "seed {seed:#x}: states differ at step {at}");
    }
    assert_eq!(a.states.len(), b.states.len());
    assert_eq!(a.dev.log, b.dev.log, "seed {seed:#x}: device logs differ");
    assert_eq!(a.ram.as_bytes(), b.ram.as_bytes());
    assert_eq!(a.hart.icount, b.hart.icount);
    assert_eq!(a.hart.jit_stats().steps, 0);
    b.hart.jit_stats()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64)
    ))]

    #[test]
    fn random_programs_run_identically_under_both_engines(seed in any::<u64>()) {
        let st = compare(seed, 200_000);
        prop_assert!(st.blocks > 0 && st.steps > 0, "nothing translated: {st:?}");
    }
}

#[test]
fn the_translator_really_runs_blocks() {
    // A loop of plain arithmetic: must give the interpreter's result, and
    // (checked through timing-free means) the jit engine is selected.
    let mut ram = Ram::new(BASE, RAM);
    let prog = [
        i(1, 10, 0, 10, 0x13),     // addi a0, a0, 1
        r(1, 10, 11, 0, 11, 0x33), // mul a1, a1, a0
        i(3, 11, 0, 11, 0x13),     // addi a1, a1, 3
        b(-12, 0, 0, 0),           // beq x0, x0, -12
    ];
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(ram.write_bytes(BASE, &bytes));
    let mut results = Vec::new();
    for engine in [Engine::Interp, Engine::Jit] {
        let mut ram = ram.clone();
        let mut h = Hart::new(BASE, 0);
        h.set_engine(engine);
        assert_eq!(h.engine(), engine);
        for limit in [1u64, 5, 6, 7, 1000, 1001, 1_000_003] {
            assert_eq!(h.run(&mut ram, &mut Dev::default(), limit), Exit::Limit);
            assert_eq!(h.icount, limit);
        }
        results.push((h.x, h.pc));
        let st = h.jit_stats();
        if engine == Engine::Jit {
            // All but a few steps (the budget tails) ran translated.
            assert!(st.steps > 990_000, "{st:?}");
        } else {
            assert_eq!(st, ftvm_cpu::JitStats::default());
        }
    }
    assert_eq!(results[0], results[1]);
}

#[test]
fn a_handful_of_long_random_runs() {
    let mut steps = 0;
    for seed in [1u64, 2, 3, 6, 7, 0xdead_beef, 0x1234_5678_9abc] {
        let st = compare(seed, 2_000_000);
        eprintln!("seed {seed:#x}: {st:?}");
        steps += st.steps;
    }
    assert!(steps > 1_000_000, "the translator ran only {steps} steps");
}

#[test]
fn host_writes_into_translated_code_are_seen() {
    // addi a0, a0, K; j .-4 — translated, then rewritten from outside
    // between runs in each way the board can: DMA-style `write_bytes`,
    // untracked `as_bytes_mut`, and handing the hart another RAM object.
    let addi_k = |k: i32| i(k, 10, 0, 10, 0x13);
    let mut ram = Ram::new(BASE, RAM);
    let prog = [addi_k(1), jal(0, -4)];
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(ram.write_bytes(BASE, &bytes));
    let mut h = Hart::new(BASE, 0);
    h.set_engine(Engine::Jit);
    let mut dev = Dev::default();
    assert_eq!(h.run(&mut ram, &mut dev, 1000), Exit::Limit);
    assert_eq!(h.x[10], 500);
    let translated = h.jit_stats().steps;
    assert!(translated > 900, "{:?}", h.jit_stats());

    assert!(ram.write_bytes(BASE, &addi_k(2).to_le_bytes()));
    h.run(&mut ram, &mut dev, 2000);
    assert_eq!(h.x[10], 500 + 2 * 500, "a DMA write was missed");

    ram.as_bytes_mut()[..4].copy_from_slice(&addi_k(3).to_le_bytes());
    h.run(&mut ram, &mut dev, 3000);
    assert_eq!(h.x[10], 1500 + 3 * 500, "an untracked write was missed");

    let mut other = ram.clone();
    assert!(other.write_bytes(BASE, &addi_k(4).to_le_bytes()));
    h.run(&mut other, &mut dev, 4000);
    assert_eq!(h.x[10], 3000 + 4 * 500, "another RAM object was missed");

    h.flush_caches();
    h.run(&mut other, &mut dev, 5000);
    assert_eq!(h.x[10], 5000 + 4 * 500);
    assert!(h.jit_stats().steps > 0, "translation resumes after a flush");
}
