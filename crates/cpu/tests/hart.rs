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
