//! The virtio-mmio transport and its devices (blk, net, rng) driven by a
//! hostile guest: the input is a script of register writes and reads, RAM
//! writes (descriptor tables, rings, buffers), notifications, device
//! processing and backend completions. Whatever the guest puts in its
//! rings, the queue walker must neither panic nor loop, and must never
//! touch memory outside guest RAM.

use ftvm_cpu::Ram;
use ftvm_machine::devices::virtio::mmio as reg;
use ftvm_machine::devices::virtio::VirtioMmio;
use ftvm_machine::layout::RAM_BASE;
use ftvm_machine::{BlkOp, DeviceConfig, Input, Output};

use crate::Bytes;

const RAM_SIZE: u64 = 64 << 10;
const SLOT: u8 = 0;

fn addr_in_ram(b: &mut Bytes) -> u64 {
    RAM_BASE + (b.u16() as u64 % RAM_SIZE)
}

pub fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let cfg = match b.u8() % 3 {
        0 => DeviceConfig::Blk {
            capacity_bytes: 64 << 10,
            read_only: b.u8() & 1 == 1,
        },
        1 => DeviceConfig::Net {
            mac: [0x52, 0x54, 0, 0x12, 0x34, 0x56],
        },
        _ => DeviceConfig::Rng,
    };
    let mut dev = VirtioMmio::new(SLOT, cfg);
    let mut ram = Ram::new(RAM_BASE, RAM_SIZE);
    let mut pending: Vec<Output> = Vec::new();
    let mut ops = 0;
    while !b.is_empty() && ops < 512 {
        ops += 1;
        match b.u8() % 10 {
            0 => {
                let off = (b.u16() as u64) & 0x1ff;
                let size = [1u8, 2, 4, 8][(b.u8() & 3) as usize];
                dev.write(off, size, b.u32() as u64);
            }
            1 => {
                let off = (b.u16() as u64) & 0x1ff;
                let size = [1u8, 2, 4, 8][(b.u8() & 3) as usize];
                let _ = dev.read(off, size);
            }
            2 => {
                let at = addr_in_ram(&mut b);
                let len = b.u8() as usize;
                let bytes = b.take(len).to_vec();
                let _ = ram.write_bytes(at, &bytes);
            }
            3 => {
                // What Linux's virtio_mmio does to bring a queue up, with
                // the features and ring addresses taken from the input.
                dev.write(reg::STATUS, 4, 1 | 2);
                dev.write(reg::DRIVER_FEATURES_SEL, 4, 0);
                dev.write(reg::DRIVER_FEATURES, 4, b.u32() as u64);
                dev.write(reg::DRIVER_FEATURES_SEL, 4, 1);
                dev.write(reg::DRIVER_FEATURES, 4, (b.u8() as u64 & 0x3f) | 1);
                dev.write(reg::STATUS, 4, 1 | 2 | 8);
                dev.write(reg::QUEUE_SEL, 4, (b.u8() & 1) as u64);
                dev.write(reg::QUEUE_NUM, 4, 1u64 << (b.u8() % 9));
                for r in [
                    reg::QUEUE_DESC_LOW,
                    reg::QUEUE_DRIVER_LOW,
                    reg::QUEUE_DEVICE_LOW,
                ] {
                    let a = addr_in_ram(&mut b) & !0xf;
                    dev.write(r, 4, a & 0xffff_ffff);
                    dev.write(r + 4, 4, a >> 32);
                }
                dev.write(reg::QUEUE_READY, 4, 1);
                dev.write(reg::STATUS, 4, 1 | 2 | 8 | 4);
            }
            4 => dev.write(reg::QUEUE_NOTIFY, 4, (b.u8() & 1) as u64),
            5 => {
                let mut rounds = 0;
                while dev.has_work() && rounds < 16 {
                    dev.process(&mut ram, &mut pending);
                    rounds += 1;
                }
                let _ = dev.irq_level();
            }
            6 => complete(&mut b, &mut dev, &mut ram, &mut pending),
            7 => {
                let len = b.u16() as usize % 2048;
                let frame = b.take(len).to_vec();
                dev.apply(&Input::NetRx { slot: SLOT, frame }, &mut ram);
            }
            8 => {
                // A completion for a request that was never made, or a stale one.
                let id = b.u8() as u64;
                let len = b.u8() as usize;
                let data = b.take(len).to_vec();
                let input = if b.u8() & 1 == 0 {
                    Input::BlkDone {
                        slot: SLOT,
                        id,
                        status: b.u8() % 4,
                        data,
                    }
                } else {
                    Input::RngData {
                        slot: SLOT,
                        id,
                        data,
                    }
                };
                dev.apply(&input, &mut ram);
            }
            _ => dev.write(reg::INTERRUPT_ACK, 4, b.u8() as u64 & 3),
        }
    }
}

/// Answers the oldest outstanding request the way a backend would (or
/// with a wrong length or an error status, as the input decides).
fn complete(b: &mut Bytes, dev: &mut VirtioMmio, ram: &mut Ram, pending: &mut Vec<Output>) {
    if pending.is_empty() {
        return;
    }
    let out = pending.remove(0);
    let skew = b.u8();
    let fit = |len: u64| -> usize {
        let len = len.min(1 << 20) as usize;
        if skew & 0x80 != 0 {
            len.saturating_sub(skew as usize & 0x7f)
        } else {
            len
        }
    };
    let input = match out {
        Output::Blk { id, op, .. } => {
            let data = match op {
                BlkOp::Read { len, .. } => vec![skew; fit(len as u64)],
                _ => Vec::new(),
            };
            Input::BlkDone {
                slot: SLOT,
                id,
                status: if skew & 0x40 != 0 { skew % 4 } else { 0 },
                data,
            }
        }
        Output::Rng { id, len, .. } => Input::RngData {
            slot: SLOT,
            id,
            data: vec![skew; fit(len as u64)],
        },
        _ => return,
    };
    dev.apply(&input, ram);
}
