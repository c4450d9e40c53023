//! The SiFive test ("finisher") device at TEST_BASE: the guest writes a
//! status to offset 0 to power off (0x5555, pass), report failure (0x3333,
//! with an exit code in the upper 16 bits) or reboot (0x7777); Linux reaches
//! it through the `syscon-poweroff` / `syscon-reboot` nodes. The device only
//! records the request; the board collects it with `take_finisher` and acts.
//! Reads return 0.

use super::MmioDevice;

const FINISHER_FAIL: u16 = 0x3333;
const FINISHER_PASS: u16 = 0x5555;
const FINISHER_RESET: u16 = 0x7777;

/// What the guest asked the board to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Finisher {
    /// Power off, success.
    Pass,
    /// Power off with a failure code.
    Fail(u16),
    /// Reboot.
    Reset,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SifiveTest {
    /// The first request not yet collected by the board; later ones are
    /// ignored until it is taken.
    finisher: Option<Finisher>,
}

impl SifiveTest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pending request, if any, clearing it.
    pub fn take_finisher(&mut self) -> Option<Finisher> {
        self.finisher.take()
    }

    /// The pending request, if any, without clearing it.
    pub fn finisher(&self) -> Option<Finisher> {
        self.finisher
    }
}

impl MmioDevice for SifiveTest {
    fn read(&mut self, _offset: u64, _size: u8) -> u64 {
        0
    }

    /// Only writes at offset 0 of at least 2 bytes count; the value is
    /// truncated to the access size, so a 16-bit write carries code 0.
    fn write(&mut self, offset: u64, size: u8, value: u64) {
        if offset != 0 || self.finisher.is_some() {
            return;
        }
        let value = match size {
            2 => value & 0xffff,
            4 | 8 => value & 0xffff_ffff,
            _ => return,
        };
        let request = match value as u16 {
            FINISHER_PASS => Finisher::Pass,
            FINISHER_FAIL => Finisher::Fail((value >> 16) as u16),
            FINISHER_RESET => Finisher::Reset,
            _ => return,
        };
        self.finisher = Some(request);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finisher_codes() {
        let mut t = SifiveTest::new();
        assert_eq!(t.take_finisher(), None);
        t.write(0, 4, 0x5555);
        assert_eq!(t.take_finisher(), Some(Finisher::Pass));
        assert_eq!(t.take_finisher(), None);
        t.write(0, 4, (42 << 16) | 0x3333);
        assert_eq!(t.finisher(), Some(Finisher::Fail(42)));
        t.write(0, 4, 0x7777);
        assert_eq!(t.take_finisher(), Some(Finisher::Fail(42)), "first wins");
        t.write(0, 4, 0x7777);
        assert_eq!(t.take_finisher(), Some(Finisher::Reset));
        t.write(0, 4, 0x1234_5555);
        assert_eq!(t.take_finisher(), Some(Finisher::Pass));
        t.write(0, 8, 0xffff_0000_0001_3333);
        assert_eq!(t.take_finisher(), Some(Finisher::Fail(1)));
    }

    #[test]
    fn other_writes_ignored() {
        let mut t = SifiveTest::new();
        for (off, size, v) in [
            (0u64, 4u8, 0x1234u64),
            (4, 4, 0x5555),
            (0, 1, 0x55),
            (0, 1, 0x5555),
            (0, 0, 0x5555),
            (0, 3, 0x5555),
            (u64::MAX, 8, 0x5555),
            (0x1000, 4, 0x5555),
        ] {
            t.write(off, size, v);
            assert_eq!(t.take_finisher(), None, "{off:#x}/{size}/{v:#x}");
        }
        t.write(0, 2, 0x3333);
        assert_eq!(t.take_finisher(), Some(Finisher::Fail(0)));
        assert_eq!(t.read(0, 4), 0);
        assert_eq!(t.read(u64::MAX, 8), 0);
    }
}
