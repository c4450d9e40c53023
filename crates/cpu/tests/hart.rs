//! Hart-level tests that need precise control of interrupt lines or
//! single steps, which bare-metal programs cannot arrange: each runs a few
//! hand-encoded instructions on a hart with a trivial bus.

use ftvm_cpu::csr::{IP_SEIP, IP_STIP, MIP};
use ftvm_cpu::{Bus, Exit, Hart, Ram};

const BASE: u64 = 0x8000_0000;

struct NoDevices;
impl Bus for NoDevices {
    fn mmio_read(&mut self, _: u64, _: u8, _: u64) -> Option<u64> {
        None
    }
    fn mmio_write(&mut self, _: u64, _: u8, _: u64, _: u64) -> bool {
        false
    }
    fn time(&self, icount: u64) -> u64 {
        icount
    }
}

fn load(words: &[u32]) -> (Hart, Ram) {
    let mut ram = Ram::new(BASE, 1 << 20);
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(ram.write_bytes(BASE, &bytes));
    (Hart::new(BASE, 0), ram)
}

/// csrrc/csrrs/csrrw x0-forms for `csr` with source register `rs1`.
fn csrrc(csr: u16, rs1: u32) -> u32 {
    ((csr as u32) << 20) | (rs1 << 15) | (3 << 12) | 0x73
}
fn csrrs(rd: u32, csr: u16, rs1: u32) -> u32 {
    ((csr as u32) << 20) | (rs1 << 15) | (2 << 12) | (rd << 7) | 0x73
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    ((imm as u32) << 20) | (rs1 << 15) | (rd << 7) | 0x13
}

#[test]
fn mip_read_modify_write_does_not_latch_the_external_seip_line() {
    // t0 = STIP; csrc mip, t0; csrr a0, mip
    let (mut h, mut ram) = load(&[addi(5, 0, IP_STIP as i32), csrrc(MIP, 5), csrrs(10, MIP, 0)]);
    h.set_irq_lines(false, false, false, true); // the PLIC asserts SEIP
    let mut bus = NoDevices;
    while h.icount < 3 {
        h.run(&mut ram, &mut bus, 3);
    }
    assert_eq!(h.x[10] & IP_SEIP, IP_SEIP, "a plain read shows the line");
    // The line drops: nothing may remain pending.
    h.set_irq_lines(false, false, false, false);
    assert_eq!(
        h.csr.mip_read() & IP_SEIP,
        0,
        "SEIP latched into the software bit"
    );
}

#[test]
fn run_stops_exactly_at_the_limit() {
    // A tight loop: addi a0, a0, 1; j .-4
    let (mut h, mut ram) = load(&[addi(10, 10, 1), 0xffdff06f]);
    let mut bus = NoDevices;
    for limit in [1u64, 2, 3, 1000, 1001, 123_457] {
        assert_eq!(h.run(&mut ram, &mut bus, limit), Exit::Limit);
        assert_eq!(h.icount, limit);
    }
    assert_eq!(h.x[10], 123_457u64.div_ceil(2));
}

// ------------------------------------------------------ self-modifying code
//
// The hart runs pre-decoded instructions; these check that every way RAM can
// change (a store through an existing store translation, the first store to
// a page, a store to the page being executed, a DMA-style `Ram::write_bytes`
// between runs) is seen by the next fetch, exactly as without the cache.

fn r_op(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}
fn i_op(imm: i32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}
fn sw(rs2: u32, rs1: u32, imm: i32) -> u32 {
    let imm = imm as u32;
    ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (2 << 12) | ((imm & 31) << 7) | 0x23
}
fn blt(rs1: u32, rs2: u32, offset: i32) -> u32 {
    let i = offset as u32;
    (((i >> 12) & 1) << 31)
        | (((i >> 5) & 0x3f) << 25)
        | (rs2 << 20)
        | (rs1 << 15)
        | (4 << 12)
        | (((i >> 1) & 0xf) << 8)
        | (((i >> 11) & 1) << 7)
        | 0x63
}
fn slli(rd: u32, rs1: u32, shamt: i32) -> u32 {
    i_op(shamt, rs1, 1, rd, 0x13)
}
fn or(rd: u32, rs1: u32, rs2: u32) -> u32 {
    r_op(0, rs2, rs1, 6, rd, 0x33)
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}
fn auipc(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x17
}
fn jalr(rd: u32, rs1: u32, imm: i32) -> u32 {
    i_op(imm, rs1, 0, rd, 0x67)
}
/// `j .` (jal x0, 0)
const SPIN: u32 = 0x0000_006f;
const A1: u32 = 11;
const T0: u32 = 5;
const T1: u32 = 6;
const T2: u32 = 7;
const S0: u32 = 8;
const S1: u32 = 9;
const RA: u32 = 1;

/// Runs to `steps` in slices of `slice` steps.
fn run_sliced(h: &mut Hart, ram: &mut Ram, steps: u64, slice: u64) {
    let mut bus = NoDevices;
    while h.icount < steps {
        let limit = (h.icount + slice).min(steps);
        assert_eq!(h.run(ram, &mut bus, limit), Exit::Limit);
    }
}

/// The body of a loop that, for k = 1..=10, stores `addi a1, a1, k` to the
/// address in t0 (s0 = k, s1 = 10; t1, t2 scratch).
fn patch_loop_head() -> Vec<u32> {
    vec![
        i_op(1, S0, 0, S0, 0x13), // s0 += 1
        slli(T1, S0, 20),         // t1 = s0 << 20
        lui(T2, 0x58),            // t2 = 0x58593 = addi a1, a1, 0
        i_op(0x593, T2, 0, T2, 0x13),
        or(T1, T1, T2), // t1 = addi a1, a1, s0
        sw(T1, T0, 0),  // patch
    ]
}

/// Calls, for k = 1..=10, a routine at `BASE + target` after storing
/// `addi a1, a1, k` over its first instruction: a1 = 55 at the end. The
/// first store to the routine happens before it was ever executed, so when
/// it is in another page the later ones go through a store translation made
/// before that page held code.
fn patch_and_call_program(target: u32) -> Vec<u32> {
    let mut p = vec![
        auipc(T0, target >> 12), // t0 = routine
        i_op((target & 0xfff) as i32, T0, 0, T0, 0x13),
        i_op(0, 0, 0, A1, 0x13),  // a1 = 0
        i_op(0, 0, 0, S0, 0x13),  // s0 = 0
        i_op(10, 0, 0, S1, 0x13), // s1 = 10
    ];
    p.extend(patch_loop_head()); // loop:
    p.push(jalr(RA, T0, 0)); // call the routine
    p.push(blt(S0, S1, -28));
    p.push(SPIN);
    p.resize((target / 4) as usize, 0);
    p.push(i_op(0, A1, 0, A1, 0x13)); // routine: addi a1, a1, 0
    p.push(jalr(0, RA, 0)); //            ret
    p
}

#[test]
fn stores_to_code_in_another_page_are_seen_by_the_next_fetch() {
    for slice in [1, 3, 7, 1000] {
        let (mut h, mut ram) = load(&patch_and_call_program(0x2000));
        run_sliced(&mut h, &mut ram, 300, slice);
        assert_eq!(h.x[A1 as usize], 55, "slice {slice}");
        assert_eq!(h.pc, BASE + 13 * 4, "ends spinning");
    }
}

#[test]
fn stores_to_code_in_the_same_page_are_seen_by_the_next_fetch() {
    for slice in [1, 2, 5, 1000] {
        let (mut h, mut ram) = load(&patch_and_call_program(0x100));
        run_sliced(&mut h, &mut ram, 300, slice);
        assert_eq!(h.x[A1 as usize], 55, "slice {slice}");
        assert_eq!(h.pc, BASE + 13 * 4, "ends spinning");
    }
}

#[test]
fn a_store_over_the_next_instruction_takes_effect_immediately() {
    // Each pass patches the instruction right after the store, which the
    // previous pass executed with another immediate.
    let mut p = vec![
        auipc(T0, 0), // t0 = the patched instruction
        i_op(4 * 10, T0, 0, T0, 0x13),
        i_op(0, 0, 0, A1, 0x13),  // a1 = 0
        i_op(0, 0, 0, S0, 0x13),  // s0 = 0
        i_op(10, 0, 0, S1, 0x13), // s1 = 10
    ];
    p.extend(patch_loop_head()); // loop:
    assert_eq!(p.len(), 11);
    p[1] = i_op(4 * 11, T0, 0, T0, 0x13);
    p.push(i_op(0, A1, 0, A1, 0x13)); // patched: addi a1, a1, k
    p.push(blt(S0, S1, -28));
    p.push(SPIN);
    for slice in [1, 4, 1000] {
        let (mut h, mut ram) = load(&p);
        run_sliced(&mut h, &mut ram, 200, slice);
        assert_eq!(h.x[A1 as usize], 55, "slice {slice}");
        assert_eq!(h.pc, BASE + 13 * 4, "ends spinning");
    }
}

#[test]
fn writes_between_runs_are_seen_by_the_next_fetch() {
    // addi a1, a1, 1; j .-4 : after each run, rewrite the increment.
    let (mut h, mut ram) = load(&[i_op(1, A1, 0, A1, 0x13), 0xffdff06f]);
    let mut bus = NoDevices;
    let mut expected = 0u64;
    for k in 1..20i32 {
        assert!(ram.write_bytes(BASE, &i_op(k, A1, 0, A1, 0x13).to_le_bytes()));
        let limit = h.icount + 10;
        assert_eq!(h.run(&mut ram, &mut bus, limit), Exit::Limit);
        expected += 5 * k as u64;
        assert_eq!(h.x[A1 as usize], expected);
    }
}

#[test]
fn a_hart_moved_to_other_ram_does_not_use_stale_decodings() {
    let prog = |k: i32| [i_op(k, A1, 0, A1, 0x13), 0xffdff06f];
    let (mut h, mut ram) = load(&prog(1));
    let mut bus = NoDevices;
    h.run(&mut ram, &mut bus, 10);
    assert_eq!(h.x[A1 as usize], 5);
    let (_, mut other) = load(&prog(100));
    h.run(&mut other, &mut bus, 20);
    assert_eq!(h.x[A1 as usize], 505);
    // A copy of the RAM is another RAM too.
    let mut copy = other.clone();
    assert!(copy.write_bytes(BASE, &i_op(1000, A1, 0, A1, 0x13).to_le_bytes()));
    h.run(&mut copy, &mut bus, 30);
    assert_eq!(h.x[A1 as usize], 5505);
    // Untracked writes through as_bytes_mut.
    copy.as_bytes_mut()[..4].copy_from_slice(&i_op(2, A1, 0, A1, 0x13).to_le_bytes());
    h.run(&mut copy, &mut bus, 40);
    assert_eq!(h.x[A1 as usize], 5515);
}

#[test]
fn run_stops_exactly_at_the_limit_in_long_straight_line_code() {
    // Three pages of c.addi a0, 1 then a jump back to the start: runs of up
    // to 2047 sequential steps within a page, and across page ends.
    let mut halves = vec![0x0505u16; 3 * 2048];
    let jump = (-(3 * 4096i32)) as u32; // jal x0, -3 pages
    let j = (((jump >> 20) & 1) << 31)
        | (((jump >> 1) & 0x3ff) << 21)
        | (((jump >> 11) & 1) << 20)
        | (((jump >> 12) & 0xff) << 12)
        | 0x6f;
    halves.push(j as u16);
    halves.push((j >> 16) as u16);
    let mut ram = Ram::new(BASE, 1 << 20);
    let bytes: Vec<u8> = halves.iter().flat_map(|h| h.to_le_bytes()).collect();
    assert!(ram.write_bytes(BASE, &bytes));
    let mut h = Hart::new(BASE, 0);
    let mut bus = NoDevices;
    let mut limit = 0;
    for step in [
        1u64, 2046, 1, 2047, 2048, 2049, 3, 4095, 4097, 6143, 2047, 2048, 5000, 100_000,
    ] {
        limit += step;
        assert_eq!(h.run(&mut ram, &mut bus, limit), Exit::Limit);
        assert_eq!(h.icount, limit);
        // One jump per 3 * 2048 + 1 steps; every other step adds one.
        let jumps = limit / (3 * 2048 + 1);
        assert_eq!(h.x[10], limit - jumps, "after {limit} steps");
    }
}
