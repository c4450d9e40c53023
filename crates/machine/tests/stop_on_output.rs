//! `Machine::run_until_output` stops right after the device access that
//! produced an output. An FT primary stops there, logs inputs and takes
//! digests; its backup reaches the same step with `Machine::run` and a
//! step limit. The two must be in the very same state at that step (the
//! digest compares everything, devices included), and must go on alike.
//!
//! The workload is a hand-encoded bare-metal loop that counts, does a few
//! ALU steps and writes the counter's low byte to the UART.

use ftvm_machine::layout::UART_BASE;
use ftvm_machine::{Input, Machine, MachineConfig, Output, Stop};

fn i_op(imm: i32, rs1: u32, funct3: u32, rd: u32) -> u32 {
    ((imm as u32 & 0xfff) << 20) | (rs1 << 15) | (funct3 << 12) | (rd << 7) | 0x13
}
fn addi(rd: u32, rs1: u32, imm: i32) -> u32 {
    i_op(imm, rs1, 0, rd)
}
fn lui(rd: u32, imm20: u32) -> u32 {
    (imm20 << 12) | (rd << 7) | 0x37
}
fn sb(rs2: u32, rs1: u32) -> u32 {
    (rs2 << 20) | (rs1 << 15) | 0x23
}
fn j(offset: i32) -> u32 {
    let i = offset as u32;
    (((i >> 20) & 1) << 31)
        | (((i >> 1) & 0x3ff) << 21)
        | (((i >> 11) & 1) << 20)
        | (((i >> 12) & 0xff) << 12)
        | 0x6f
}

const T0: u32 = 5;
const T1: u32 = 6;
const A2: u32 = 12;

fn machine() -> Machine {
    let mut p = vec![lui(T0, (UART_BASE >> 12) as u32), addi(A2, 0, 0)];
    let top = p.len();
    p.extend([
        addi(A2, A2, 1),
        addi(T1, A2, 7),
        addi(T1, T1, -3),
        addi(T1, T1, 5),
        sb(A2, T0),
    ]);
    let back = -4 * (p.len() - top) as i32;
    p.push(j(back));
    let image: Vec<u8> = p.iter().flat_map(|w| w.to_le_bytes()).collect();
    Machine::new(&MachineConfig::new(8 << 20, image)).expect("build machine")
}

#[test]
fn stopping_at_an_output_leaves_the_state_a_step_limit_leaves() {
    let mut primary = machine();
    let mut backup = machine();
    let mut stops = 0;
    while primary.icount() < 200_000 {
        let limit = primary.icount() + 10_000;
        assert_eq!(primary.run_until_output(limit), Stop::Limit);
        let at = primary.icount();
        if at < limit {
            stops += 1;
            assert!(
                primary.has_outputs(),
                "stopped early at {at} with no output"
            );
        }
        // As a driver does at a stop: take the outputs, apply an input.
        let outs = primary.take_outputs();
        assert!(outs.iter().all(|o| matches!(o, Output::Console(_))));
        let t = primary.guest_time() + 3;
        primary.apply(&Input::Time(t));
        assert_eq!(backup.run(at), Stop::Limit);
        assert_eq!(backup.icount(), at);
        backup.apply(&Input::Time(t));
        backup.take_outputs();
        let (a, b) = (primary.digest(), backup.digest());
        assert!(
            a.differences(&b).is_empty(),
            "states differ at step {at}: {:?}",
            a.differences(&b)
        );
    }
    assert!(stops > 1000, "only {stops} stops at outputs");
}

#[test]
fn a_digest_right_at_an_output_stop_matches() {
    // No input at the stop: the digest is taken straight after it.
    let mut primary = machine();
    let mut backup = machine();
    for _ in 0..500 {
        let limit = primary.icount() + 10_000;
        primary.run_until_output(limit);
        primary.take_outputs();
        let at = primary.icount();
        backup.run(at);
        backup.take_outputs();
        let (a, b) = (primary.digest(), backup.digest());
        assert!(
            a.differences(&b).is_empty(),
            "at {at}: {:?}",
            a.differences(&b)
        );
    }
}
