//! Core-local interruptor for the single hart: the machine software
//! interrupt bit (`msip`), the timer compare register (`mtimecmp`) and the
//! read-only view of guest time (`mtime`). `mtime` is not state of the CLINT:
//! it is the guest clock, passed in by the board on every access.

use serde::{Deserialize, Serialize};

const MSIP: u64 = 0x0;
const MTIMECMP: u64 = 0x4000;
const MTIME: u64 = 0xbff8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Clint {
    pub msip: bool,
    pub mtimecmp: u64,
}

impl Default for Clint {
    fn default() -> Self {
        Clint {
            msip: false,
            mtimecmp: u64::MAX,
        }
    }
}

/// Reads `size` bytes at byte `shift` of a 64-bit register.
fn part(reg: u64, shift: u64, size: u8) -> u64 {
    let v = reg >> (8 * shift);
    if size >= 8 {
        v
    } else {
        v & ((1u64 << (8 * size as u64)) - 1)
    }
}

/// Replaces `size` bytes at byte `shift` of a 64-bit register.
fn merge(reg: u64, shift: u64, size: u8, value: u64) -> u64 {
    let mask = if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size as u64)) - 1
    } << (8 * shift);
    (reg & !mask) | ((value << (8 * shift)) & mask)
}

impl Clint {
    /// Timer interrupt line at guest time `mtime`.
    pub fn mtip(&self, mtime: u64) -> bool {
        mtime >= self.mtimecmp
    }

    pub fn read(&self, offset: u64, size: u8, mtime: u64) -> u64 {
        match offset {
            MSIP..=0x3 => part(self.msip as u64, offset, size),
            MTIMECMP..=0x4007 => part(self.mtimecmp, offset - MTIMECMP, size),
            MTIME..=0xbfff => part(mtime, offset - MTIME, size),
            _ => 0,
        }
    }

    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        match offset {
            MSIP => self.msip = value & 1 != 0,
            MTIMECMP..=0x4007 => {
                self.mtimecmp = merge(self.mtimecmp, offset - MTIMECMP, size, value)
            }
            _ => {} // mtime is driven by the guest clock; writes are ignored
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mtimecmp_halves_and_timer_line() {
        let mut c = Clint::default();
        assert!(!c.mtip(1 << 40));
        c.write(MTIMECMP, 4, 0x1234);
        c.write(MTIMECMP + 4, 4, 0);
        assert_eq!(c.read(MTIMECMP, 8, 0), 0x1234);
        assert!(!c.mtip(0x1233));
        assert!(c.mtip(0x1234));
        assert_eq!(c.read(MTIME + 4, 4, 0xaabb_ccdd_0011_2233), 0xaabb_ccdd);
    }

    #[test]
    fn msip_bit() {
        let mut c = Clint::default();
        c.write(MSIP, 4, 0xff);
        assert!(c.msip);
        assert_eq!(c.read(MSIP, 4, 0), 1);
        c.write(MSIP, 4, 0);
        assert!(!c.msip);
    }
}
