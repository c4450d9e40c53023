//! The board: the devices on the physical bus and the guest clock, and the
//! address decoding that connects the hart to them. It implements the hart's
//! [`Bus`] and turns device interrupt levels into the hart's interrupt lines.

use ftvm_cpu::Bus;
use serde::{Deserialize, Serialize};

use crate::clock::GuestClock;
use crate::devices::clint::Clint;
use crate::devices::plic::Plic;
use crate::devices::rtc::GoldfishRtc;
use crate::devices::sifive_test::{Finisher, SifiveTest};
use crate::devices::uart::Uart16550;
use crate::devices::virtio::{DeviceConfig, VirtioMmio};
use crate::devices::MmioDevice;
use crate::input::{Input, Output};
use crate::layout::*;
use ftvm_cpu::Ram;

/// Nanoseconds per guest tick.
const NS_PER_TICK: u64 = 1_000_000_000 / TIMEBASE_HZ;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Board {
    pub clock: GuestClock,
    pub clint: Clint,
    pub plic: Plic,
    pub uart: Uart16550,
    pub rtc: GoldfishRtc,
    pub test: SifiveTest,
    /// virtio-mmio slots; `None` where nothing is plugged in.
    pub virtio: Vec<Option<VirtioMmio>>,
    /// Wall-clock time (ns since the Unix epoch) at guest time zero.
    pub boot_wallclock_ns: u64,
    /// Outputs produced and not yet taken by the driver, in order.
    #[serde(skip)]
    pub outputs: Vec<Output>,
    /// A test-device finisher write, waiting for the machine loop.
    #[serde(skip)]
    pub finisher: Option<Finisher>,
}

impl Board {
    /// Whether restored state (a snapshot, a joiner's state: outside
    /// input) has the shape [`Board::new`] gives and the invariants the
    /// devices rely on: the clock's, the PLIC's arrays, each virtio
    /// device's queues and model.
    pub fn check(&self) -> Result<(), String> {
        self.clock.check()?;
        if self.virtio.len() != VIRTIO_SLOTS as usize {
            return Err(format!(
                "{} virtio slots, the board has {VIRTIO_SLOTS}",
                self.virtio.len()
            ));
        }
        self.plic.check()?;
        for (i, dev) in self.virtio.iter().enumerate() {
            if let Some(d) = dev {
                d.check(i as u8)?;
            }
        }
        Ok(())
    }

    /// A board with the given virtio devices in slots 0, 1, 2, ...
    pub fn new(clock: GuestClock, boot_wallclock_ns: u64, virtio: &[DeviceConfig]) -> Self {
        let mut slots: Vec<Option<VirtioMmio>> = (0..VIRTIO_SLOTS).map(|_| None).collect();
        for (i, cfg) in virtio.iter().enumerate().take(VIRTIO_SLOTS as usize) {
            slots[i] = Some(VirtioMmio::new(i as u8, cfg.clone()));
        }
        Board {
            virtio: slots,
            clock,
            clint: Clint::default(),
            plic: Plic::new(),
            uart: Uart16550::new(),
            rtc: GoldfishRtc::new(),
            test: SifiveTest::new(),
            boot_wallclock_ns,
            outputs: Vec::new(),
            finisher: None,
        }
    }

    /// Wall-clock time seen by the RTC at step `icount`.
    pub fn wallclock_ns(&self, icount: u64) -> u64 {
        self.boot_wallclock_ns + self.clock.now(icount) * NS_PER_TICK
    }

    /// Propagates device interrupt levels into the PLIC and returns the
    /// hart's lines: (msip, mtip, meip, seip).
    pub fn irq_lines(&mut self, icount: u64) -> (bool, bool, bool, bool) {
        let now = self.clock.now(icount);
        let wall = self.wallclock_ns(icount);
        self.rtc.tick(wall);
        self.plic.set_level(UART_IRQ, self.uart.irq_level());
        self.plic.set_level(RTC_IRQ, self.rtc.irq_level());
        for (i, dev) in self.virtio.iter().enumerate() {
            if let Some(d) = dev {
                self.plic
                    .set_level(VIRTIO_IRQ_BASE + i as u32, d.irq_level());
            }
        }
        (
            self.clint.msip,
            self.clint.mtip(now),
            self.plic.context_pending(0),
            self.plic.context_pending(1),
        )
    }

    /// Lets virtio devices act on notifications (with guest RAM at hand);
    /// their outputs join the output queue.
    pub fn process_virtio(&mut self, ram: &mut Ram) {
        for d in self.virtio.iter_mut().flatten() {
            if d.has_work() {
                d.process(ram, &mut self.outputs);
            }
        }
    }

    /// Hands a device input to the virtio device in its slot (ignored if
    /// the slot is empty).
    pub fn apply_virtio(&mut self, slot: u8, input: &Input, ram: &mut Ram) {
        if let Some(Some(d)) = self.virtio.get_mut(slot as usize) {
            d.apply(input, ram);
        }
    }

    fn virtio_slot(&mut self, paddr: u64) -> Option<(&mut VirtioMmio, u64)> {
        let rel = paddr.checked_sub(VIRTIO_BASE)?;
        let slot = (rel / VIRTIO_STRIDE) as usize;
        let dev = self.virtio.get_mut(slot)?.as_mut()?;
        Some((dev, rel % VIRTIO_STRIDE))
    }

    /// The first step after `icount` at which an interrupt line can change
    /// without an input: the timer compare or the RTC alarm being reached.
    pub fn next_deadline(&self, icount: u64) -> Option<u64> {
        let now = self.clock.now(icount);
        let mut best: Option<u64> = None;
        let mut consider = |t: u64| {
            if t > now {
                if let Some(s) = self.clock.step_reaching(t) {
                    best = Some(best.map_or(s, |b: u64| b.min(s)));
                }
            }
        };
        consider(self.clint.mtimecmp);
        if let Some(alarm_ns) = self.rtc.next_alarm_ns() {
            let ticks = alarm_ns
                .saturating_sub(self.boot_wallclock_ns)
                .div_ceil(NS_PER_TICK);
            consider(ticks);
        }
        best
    }

    /// Guest time at which a waiting hart will next be woken by a device,
    /// if any (the driver sleeps until then unless an input arrives first).
    pub fn next_wakeup_time(&self) -> Option<u64> {
        let mut t = None;
        if self.clint.mtimecmp != u64::MAX {
            t = Some(self.clint.mtimecmp);
        }
        if let Some(alarm_ns) = self.rtc.next_alarm_ns() {
            let ticks = alarm_ns
                .saturating_sub(self.boot_wallclock_ns)
                .div_ceil(NS_PER_TICK);
            t = Some(t.map_or(ticks, |x: u64| x.min(ticks)));
        }
        t
    }
}

impl Bus for Board {
    fn mmio_read(&mut self, paddr: u64, size: u8, icount: u64) -> Option<u64> {
        Some(match paddr {
            CLINT_BASE..=0x0200_ffff => {
                self.clint
                    .read(paddr - CLINT_BASE, size, self.clock.now(icount))
            }
            PLIC_BASE..=0x0c5f_ffff => self.plic.read(paddr - PLIC_BASE, size),
            UART_BASE..=0x1000_00ff => self.uart.read(paddr - UART_BASE, size),
            RTC_BASE..=0x0010_1fff => {
                let wall = self.wallclock_ns(icount);
                self.rtc.set_now_ns(wall);
                self.rtc.read(paddr - RTC_BASE, size)
            }
            TEST_BASE..=0x0010_0fff => self.test.read(paddr - TEST_BASE, size),
            VIRTIO_BASE..=0x1000_8fff => {
                let (dev, off) = self.virtio_slot(paddr)?;
                dev.read(off, size)
            }
            _ => return None,
        })
    }

    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64, icount: u64) -> bool {
        match paddr {
            CLINT_BASE..=0x0200_ffff => self.clint.write(paddr - CLINT_BASE, size, value),
            PLIC_BASE..=0x0c5f_ffff => self.plic.write(paddr - PLIC_BASE, size, value),
            UART_BASE..=0x1000_00ff => {
                self.uart.write(paddr - UART_BASE, size, value);
                if self.uart.has_output() {
                    let bytes = self.uart.take_output();
                    match self.outputs.last_mut() {
                        Some(Output::Console(c)) => c.extend_from_slice(&bytes),
                        _ => self.outputs.push(Output::Console(bytes)),
                    }
                }
            }
            RTC_BASE..=0x0010_1fff => {
                let wall = self.wallclock_ns(icount);
                self.rtc.set_now_ns(wall);
                self.rtc.write(paddr - RTC_BASE, size, value);
            }
            TEST_BASE..=0x0010_0fff => {
                self.test.write(paddr - TEST_BASE, size, value);
                if let Some(f) = self.test.take_finisher() {
                    self.finisher = Some(f);
                }
            }
            VIRTIO_BASE..=0x1000_8fff => match self.virtio_slot(paddr) {
                Some((dev, off)) => dev.write(off, size, value),
                None => return false,
            },
            _ => return false,
        }
        true
    }

    fn time(&self, icount: u64) -> u64 {
        self.clock.now(icount)
    }
}
