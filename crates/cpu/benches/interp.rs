//! Interpreter micro-benchmarks: guest MIPS on small synthetic loops.
//! `cargo bench -p ftvm-cpu --bench interp` (plain harness, no dependencies).

use std::time::Instant;

use ftvm_cpu::{Bus, Hart, Ram};

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

fn i_op(imm: i32, rs1: u32, funct3: u32, rd: u32, opcode: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | opcode
}
fn r_op(funct7: u32, rs2: u32, rs1: u32, funct3: u32, rd: u32) -> u32 {
    (funct7 << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x33
}
fn s_op(imm: i32, rs2: u32, rs1: u32, funct3: u32) -> u32 {
    let imm = imm as u32;
    ((imm >> 5) << 25) | (rs2 << 20) | (rs1 << 15) | (funct3 << 12) | ((imm & 31) << 7) | 0x23
}
/// jal x0, offset
fn j(offset: i32) -> u32 {
    let i = offset as u32;
    (((i >> 20) & 1) << 31)
        | (((i >> 1) & 0x3ff) << 21)
        | (((i >> 11) & 1) << 20)
        | (((i >> 12) & 0xff) << 12)
        | 0x6f
}

/// CPU time of this thread in seconds (Linux), else wall time: the machine
/// may be shared.
fn now() -> f64 {
    if let Ok(s) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
        {
            return ns as f64 * 1e-9;
        }
    }
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_secs_f64()
}

fn bench(name: &str, body: &[u32], steps: u64) {
    let mut prog = body.to_vec();
    prog.push(j(-4 * body.len() as i32));
    let mut ram = Ram::new(BASE, 16 << 20);
    let bytes: Vec<u8> = prog.iter().flat_map(|w| w.to_le_bytes()).collect();
    assert!(ram.write_bytes(BASE, &bytes));
    let mut h = Hart::new(BASE, 0);
    h.x[2] = BASE + (8 << 20); // sp: data
    let mut bus = NoDevices;
    h.run(&mut ram, &mut bus, 10_000); // warm up
    let t = now();
    let mut limit = h.icount;
    while h.icount < steps {
        limit += 1_000_000;
        h.run(&mut ram, &mut bus, limit);
    }
    let dt = now() - t;
    println!(
        "{name:<24} {:8.1} MIPS",
        (h.icount - 10_000) as f64 / dt / 1e6
    );
}

fn main() {
    let n = 200_000_000;
    // Independent ALU ops.
    let alu: Vec<u32> = (0..64)
        .map(|i| i_op(i, 10 + (i as u32 % 6), 0, 10 + (i as u32 % 6), 0x13))
        .collect();
    bench("addi x64", &alu, n);
    // A dependent chain.
    let chain: Vec<u32> = (0..64).map(|_| i_op(1, 10, 0, 10, 0x13)).collect();
    bench("addi chain x64", &chain, n);
    // Mixed: add, load, store, shift.
    let mut mixed = Vec::new();
    for i in 0..16 {
        mixed.push(r_op(0, 11, 10, 0, 12)); // add a2, a0, a1
        mixed.push(i_op(8 * i, 2, 3, 13, 0x03)); // ld a3, 8i(sp)
        mixed.push(s_op(8 * i, 12, 2, 3)); // sd a2, 8i(sp)
        mixed.push(i_op(3, 13, 1, 14, 0x13)); // slli a4, a3, 3
    }
    bench("add/ld/sd/slli x16", &mixed, n);
    // Tight loop: addi + backward jump.
    bench("2-insn loop", &[i_op(1, 10, 0, 10, 0x13)], n);
}
