//! The Goldfish real-time clock (`google,goldfish-rtc`, as in QEMU `virt`).
//! It owns the guest's view of wall-clock time as an offset from the board
//! time (so a guest that sets the RTC stays deterministic), the TIME_HIGH
//! latch filled by reading TIME_LOW, the alarm (in guest time, armed by
//! writing ALARM_LOW) and the interrupt state. It never reads a clock: the
//! board hands in its time in nanoseconds with `set_now_ns` before each
//! access and with `tick` whenever it wants a due alarm to fire; the board
//! can ask `next_alarm_ns` when that will be. The interrupt line is high
//! while an alarm interrupt is pending and interrupts are enabled.

use super::MmioDevice;

const TIME_LOW: u64 = 0x00;
const TIME_HIGH: u64 = 0x04;
const ALARM_LOW: u64 = 0x08;
const ALARM_HIGH: u64 = 0x0c;
const IRQ_ENABLED: u64 = 0x10;
const CLEAR_ALARM: u64 = 0x14;
const ALARM_STATUS: u64 = 0x18;
const CLEAR_INTERRUPT: u64 = 0x1c;

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GoldfishRtc {
    /// Board time (ns) as last handed in.
    now_ns: u64,
    /// Guest time minus board time, wrapping (two's complement).
    offset_ns: u64,
    /// TIME_HIGH as latched by the last TIME_LOW read.
    time_high: u32,
    /// Alarm time (guest ns) as written through ALARM_LOW/ALARM_HIGH.
    alarm_next: u64,
    /// Whether the alarm is armed and has not fired.
    alarm_running: bool,
    irq_enabled: bool,
    irq_pending: bool,
}

impl GoldfishRtc {
    /// A clock that reads the board time (offset 0) until the guest sets it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hands in the board's current time; call before each guest access.
    pub fn set_now_ns(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
    }

    /// Hands in the board's current time and fires the alarm if it is due.
    pub fn tick(&mut self, now_ns: u64) {
        self.now_ns = now_ns;
        if self.alarm_running && self.guest_now() >= self.alarm_next {
            self.fire();
        }
    }

    /// Board time at which the armed alarm fires, if one is armed.
    pub fn next_alarm_ns(&self) -> Option<u64> {
        self.alarm_running
            .then(|| self.alarm_next.wrapping_sub(self.offset_ns))
    }

    /// Guest time minus board time, in ns: 0 until the guest sets the clock.
    pub fn offset_ns(&self) -> i64 {
        self.offset_ns as i64
    }

    /// The time the guest reads now (board time plus offset).
    pub fn guest_now(&self) -> u64 {
        self.now_ns.wrapping_add(self.offset_ns)
    }

    /// The interrupt line towards the PLIC.
    pub fn irq_level(&self) -> bool {
        self.irq_pending && self.irq_enabled
    }

    fn fire(&mut self) {
        self.alarm_running = false;
        self.irq_pending = true;
    }

    fn arm(&mut self) {
        if self.alarm_next <= self.guest_now() {
            self.fire();
        } else {
            self.alarm_running = true;
        }
    }

    fn set_guest_time(&mut self, t: u64) {
        self.offset_ns = t.wrapping_sub(self.now_ns);
    }

    fn read32(&mut self, offset: u64) -> u32 {
        match offset {
            TIME_LOW => {
                let t = self.guest_now();
                self.time_high = (t >> 32) as u32;
                t as u32
            }
            TIME_HIGH => self.time_high,
            ALARM_LOW => self.alarm_next as u32,
            ALARM_HIGH => (self.alarm_next >> 32) as u32,
            IRQ_ENABLED => self.irq_enabled as u32,
            ALARM_STATUS => self.alarm_running as u32,
            _ => 0,
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        match offset {
            // Setting the clock replaces one half of the current guest time,
            // as QEMU does (Linux writes TIME_HIGH, then TIME_LOW).
            TIME_LOW => {
                let t = (self.guest_now() & !0xffff_ffff) | value as u64;
                self.set_guest_time(t);
            }
            TIME_HIGH => {
                let t = (self.guest_now() & 0xffff_ffff) | ((value as u64) << 32);
                self.set_guest_time(t);
            }
            ALARM_LOW => {
                self.alarm_next = (self.alarm_next & !0xffff_ffff) | value as u64;
                self.arm();
            }
            ALARM_HIGH => {
                self.alarm_next = (self.alarm_next & 0xffff_ffff) | ((value as u64) << 32);
            }
            IRQ_ENABLED => self.irq_enabled = value & 1 != 0,
            CLEAR_ALARM => self.alarm_running = false,
            CLEAR_INTERRUPT => self.irq_pending = false,
            _ => {}
        }
    }
}

impl MmioDevice for GoldfishRtc {
    /// Registers are 32 bits wide. An 8-byte access is two 32-bit accesses,
    /// low word first (so an 8-byte TIME_LOW read yields the whole time);
    /// narrower reads return bytes of the register, narrower writes are
    /// ignored.
    fn read(&mut self, offset: u64, size: u8) -> u64 {
        match size {
            8 => {
                let lo = self.read32(offset) as u64;
                let hi = self.read32(offset.wrapping_add(4)) as u64;
                lo | (hi << 32)
            }
            4 => self.read32(offset) as u64,
            1 | 2 => {
                let word = self.read32(offset & !3) as u64;
                let mask = if size == 1 { 0xff } else { 0xffff };
                (word >> ((offset & 3) * 8)) & mask
            }
            _ => 0,
        }
    }

    fn write(&mut self, offset: u64, size: u8, value: u64) {
        match size {
            8 => {
                self.write32(offset, value as u32);
                self.write32(offset.wrapping_add(4), (value >> 32) as u32);
            }
            4 => self.write32(offset, value as u32),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_700_000_000_123_456_789;

    fn read_time(r: &mut GoldfishRtc) -> u64 {
        let lo = r.read(TIME_LOW, 4);
        let hi = r.read(TIME_HIGH, 4);
        (hi << 32) | lo
    }

    #[test]
    fn reads_board_time_with_latch() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(T0);
        let lo = r.read(TIME_LOW, 4);
        r.set_now_ns(T0 + (1 << 33));
        let hi = r.read(TIME_HIGH, 4);
        assert_eq!((hi << 32) | lo, T0, "TIME_HIGH latched at TIME_LOW read");
        assert_eq!(r.read(TIME_LOW, 8), T0 + (1 << 33));
    }

    #[test]
    fn guest_sets_clock_as_offset() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(T0);
        let want: u64 = 1_000_000_000_000_000_000;
        // Linux order: TIME_HIGH then TIME_LOW.
        r.write(TIME_HIGH, 4, want >> 32);
        r.set_now_ns(T0 + 10);
        r.write(TIME_LOW, 4, want & 0xffff_ffff);
        assert_eq!(r.offset_ns(), want as i64 - (T0 + 10) as i64);
        r.set_now_ns(T0 + 1_000);
        assert_eq!(read_time(&mut r), want + 990);
    }

    #[test]
    fn alarm_fires_on_tick() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(T0);
        let alarm = T0 + 5_000_000_000;
        r.write(ALARM_HIGH, 4, alarm >> 32);
        r.write(ALARM_LOW, 4, alarm & 0xffff_ffff);
        r.write(IRQ_ENABLED, 4, 1);
        assert_eq!(r.read(ALARM_STATUS, 4), 1);
        assert_eq!(r.read(ALARM_LOW, 4), alarm & 0xffff_ffff);
        assert_eq!(r.read(ALARM_HIGH, 4), alarm >> 32);
        assert_eq!(r.next_alarm_ns(), Some(alarm));
        r.tick(alarm - 1);
        assert!(!r.irq_level());
        r.tick(alarm);
        assert!(r.irq_level());
        assert_eq!(r.read(ALARM_STATUS, 4), 0);
        assert_eq!(r.next_alarm_ns(), None);
        r.write(CLEAR_INTERRUPT, 4, 1);
        assert!(!r.irq_level());
    }

    #[test]
    fn alarm_in_past_fires_at_once_and_enable_gates_line() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(T0);
        r.write(ALARM_HIGH, 4, T0 >> 32);
        r.write(ALARM_LOW, 4, 0);
        assert_eq!(r.read(ALARM_STATUS, 4), 0);
        assert!(!r.irq_level(), "interrupts disabled");
        r.write(IRQ_ENABLED, 4, 1);
        assert_eq!(r.read(IRQ_ENABLED, 4), 1);
        assert!(r.irq_level());
        r.write(IRQ_ENABLED, 4, 0);
        assert!(!r.irq_level());
    }

    #[test]
    fn alarm_follows_guest_time_and_can_be_cleared() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(1000);
        r.write(TIME_LOW, 8, 1_000_000); // guest time 1e6 at board 1000
        assert_eq!(r.offset_ns(), 999_000);
        r.write(ALARM_LOW, 8, 2_000_000);
        assert_eq!(r.next_alarm_ns(), Some(1_001_000));
        r.write(CLEAR_ALARM, 4, 1);
        assert_eq!(r.next_alarm_ns(), None);
        r.tick(u64::MAX / 2);
        r.write(IRQ_ENABLED, 4, 1);
        assert!(!r.irq_level());
    }

    #[test]
    fn no_panic_anywhere() {
        let mut r = GoldfishRtc::new();
        r.set_now_ns(u64::MAX);
        for o in [0u64, 2, 3, 0x1c, 0x20, 0xffc, 0xfff, 0x1000, u64::MAX] {
            for size in [0u8, 1, 2, 3, 4, 8, 9] {
                r.write(o, size, u64::MAX);
                r.read(o, size);
            }
        }
        r.tick(0);
        r.next_alarm_ns();
        assert_eq!(r.read(0x20, 4), 0);
    }
}
