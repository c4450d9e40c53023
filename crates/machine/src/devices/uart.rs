//! The console UART: an NS16550A as QEMU emulates it (byte registers at
//! stride 1, 16-byte FIFOs, Linux's 8250 autoconfig identifies it as a
//! 16550A). It owns the register file (IER, IIR, FCR, LCR, MCR, LSR, MSR,
//! SCR, the DLL/DLM divisor latch behind LCR.DLAB), the receive FIFO, the
//! host-side input queue that refills the FIFO as the guest drains it (the
//! "wire"; the board pushes console input there and may watch `rx_space`
//! for backpressure), and the output buffer the board drains. Transmission
//! is instantaneous, so THR/TSR are always empty again right after a write
//! (LSR.THRE and LSR.TEMT stay set) and, like QEMU, a THR write re-arms the
//! THR-empty interrupt. Nothing here depends on time: the character-timeout
//! interrupt is reported as soon as data sits below the FIFO trigger level.

use std::collections::VecDeque;

use super::MmioDevice;

/// Receive FIFO depth in FIFO mode.
pub const UART_FIFO_SIZE: usize = 16;

// Register offsets.
const RBR_THR_DLL: u64 = 0;
const IER_DLM: u64 = 1;
const IIR_FCR: u64 = 2;
const LCR: u64 = 3;
const MCR: u64 = 4;
const LSR: u64 = 5;
const MSR: u64 = 6;
const SCR: u64 = 7;

// IER bits.
const IER_RDI: u8 = 0x01;
const IER_THRI: u8 = 0x02;
const IER_RLSI: u8 = 0x04;

// IIR values.
const IIR_NO_INT: u8 = 0x01;
const IIR_THRI: u8 = 0x02;
const IIR_RDI: u8 = 0x04;
const IIR_RLSI: u8 = 0x06;
const IIR_CTI: u8 = 0x0c;
const IIR_FIFO_ENABLED: u8 = 0xc0;

// FCR bits.
const FCR_FE: u8 = 0x01;
const FCR_RFR: u8 = 0x02;
const FCR_XFR: u8 = 0x04;
/// Bits FCR keeps: enable, DMA mode, trigger level (as QEMU).
const FCR_STORED: u8 = 0xc9;

const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;
const MCR_MASK: u8 = 0x1f;

// LSR bits.
const LSR_DR: u8 = 0x01;
const LSR_OE: u8 = 0x02;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;

/// Modem status with nothing attached but a happy peer: DCD, DSR, CTS.
const MSR_IDLE: u8 = 0xb0;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    /// FCR as stored (masked with FCR_STORED; the reset bits self-clear).
    fcr: u8,
    dll: u8,
    dlm: u8,
    /// Last byte read from RBR (what a non-FIFO read of an empty RBR gives).
    rbr: u8,
    /// THR-empty interrupt condition (cleared by an IIR read that reports
    /// it, by disabling IER.THRI; set again by a THR write or IER.THRI
    /// rising while THR is empty).
    thr_ipending: bool,
    /// LSR.OE: a byte was lost because the FIFO was full (loopback only,
    /// host input waits in `input` instead).
    overrun: bool,
    rx_fifo: VecDeque<u8>,
    /// Host-side input not yet in the FIFO.
    input: VecDeque<u8>,
    /// Transmitted bytes not yet drained by the board.
    output: Vec<u8>,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    pub fn new() -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: 0,
            scr: 0,
            fcr: 0,
            dll: 0,
            dlm: 0,
            rbr: 0,
            thr_ipending: false,
            overrun: false,
            rx_fifo: VecDeque::new(),
            input: VecDeque::new(),
            output: Vec::new(),
        }
    }

    /// Console input from outside. Bytes enter the receive FIFO as the guest
    /// makes room; the rest waits here, in order, without limit.
    pub fn push_input(&mut self, bytes: &[u8]) {
        self.input.extend(bytes.iter().copied());
        self.refill();
    }

    /// Appends everything transmitted since the last drain to `out`.
    pub fn drain_output(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.output);
    }

    /// Everything transmitted since the last drain.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Whether transmitted bytes are waiting to be drained.
    pub fn has_output(&self) -> bool {
        !self.output.is_empty()
    }

    /// How many more bytes `push_input` could hand straight to the receive
    /// FIFO without queueing (0 while input is already waiting).
    pub fn rx_space(&self) -> usize {
        self.fifo_capacity()
            .saturating_sub(self.rx_fifo.len())
            .saturating_sub(self.input.len())
    }

    /// Host input bytes waiting for room in the receive FIFO.
    pub fn rx_queued(&self) -> usize {
        self.input.len()
    }

    /// The interrupt line towards the PLIC.
    pub fn irq_level(&self) -> bool {
        self.interrupt_id() != IIR_NO_INT
    }

    fn fifo_enabled(&self) -> bool {
        self.fcr & FCR_FE != 0
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    fn fifo_capacity(&self) -> usize {
        if self.fifo_enabled() {
            UART_FIFO_SIZE
        } else {
            1
        }
    }

    fn trigger_level(&self) -> usize {
        match self.fcr & 0xc0 {
            0x00 => 1,
            0x40 => 4,
            0x80 => 8,
            _ => 14,
        }
    }

    /// Moves waiting host input into the FIFO. In loopback mode the serial
    /// input is disconnected, so input waits.
    fn refill(&mut self) {
        if self.loopback() {
            return;
        }
        let cap = self.fifo_capacity();
        while self.rx_fifo.len() < cap {
            match self.input.pop_front() {
                Some(b) => self.rx_fifo.push_back(b),
                None => break,
            }
        }
    }

    fn lsr(&self) -> u8 {
        let mut lsr = LSR_THRE | LSR_TEMT;
        if !self.rx_fifo.is_empty() {
            lsr |= LSR_DR;
        }
        if self.overrun {
            lsr |= LSR_OE;
        }
        lsr
    }

    fn msr(&self) -> u8 {
        if self.loopback() {
            // Outputs wired to inputs: OUT2->DCD, OUT1->RI, DTR->DSR, RTS->CTS.
            ((self.mcr & 0x0c) << 4) | ((self.mcr & 0x02) << 3) | ((self.mcr & 0x01) << 5)
        } else {
            MSR_IDLE
        }
    }

    /// The highest-priority interrupt condition, as IIR bits 0-3.
    fn interrupt_id(&self) -> u8 {
        if self.ier & IER_RLSI != 0 && self.overrun {
            IIR_RLSI
        } else if self.ier & IER_RDI != 0 && !self.rx_fifo.is_empty() {
            if !self.fifo_enabled() || self.rx_fifo.len() >= self.trigger_level() {
                IIR_RDI
            } else {
                IIR_CTI
            }
        } else if self.ier & IER_THRI != 0 && self.thr_ipending {
            IIR_THRI
        } else {
            // No modem-status interrupt (IER bit 3): the modem lines never
            // change, so MSR has no delta bits to report.
            IIR_NO_INT
        }
    }

    fn iir(&self) -> u8 {
        let fifo = if self.fifo_enabled() {
            IIR_FIFO_ENABLED
        } else {
            0
        };
        self.interrupt_id() | fifo
    }

    fn receive_loopback(&mut self, byte: u8) {
        if self.rx_fifo.len() < self.fifo_capacity() {
            self.rx_fifo.push_back(byte);
        } else {
            self.overrun = true;
        }
    }

    fn write_fcr(&mut self, val: u8) {
        let mut val = val;
        if (val ^ self.fcr) & FCR_FE != 0 {
            // Enabling or disabling the FIFOs flushes them.
            val |= FCR_RFR | FCR_XFR;
        }
        if val & FCR_RFR != 0 {
            self.rx_fifo.clear();
        }
        if val & FCR_XFR != 0 {
            // The (always empty) transmitter is reset: THR empty again.
            self.thr_ipending = true;
        }
        self.fcr = val & FCR_STORED;
        self.refill();
    }

    fn write_ier(&mut self, val: u8) {
        let val = val & 0x0f;
        let changed = self.ier ^ val;
        self.ier = val;
        if changed & IER_THRI != 0 {
            // THR is always empty: enabling THRI raises the interrupt.
            self.thr_ipending = val & IER_THRI != 0;
        }
    }

    fn read_reg(&mut self, reg: u64) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR_DLL if dlab => self.dll,
            RBR_THR_DLL => match self.rx_fifo.pop_front() {
                Some(b) => {
                    self.rbr = b;
                    self.refill();
                    b
                }
                None if self.fifo_enabled() => 0,
                None => self.rbr,
            },
            IER_DLM if dlab => self.dlm,
            IER_DLM => self.ier,
            IIR_FCR => {
                let iir = self.iir();
                if iir & 0x0f == IIR_THRI {
                    self.thr_ipending = false;
                }
                iir
            }
            LCR => self.lcr,
            MCR => self.mcr,
            LSR => {
                let lsr = self.lsr();
                self.overrun = false;
                lsr
            }
            MSR => self.msr(),
            SCR => self.scr,
            _ => 0,
        }
    }

    fn write_reg(&mut self, reg: u64, val: u8) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match reg {
            RBR_THR_DLL if dlab => self.dll = val,
            RBR_THR_DLL => {
                if self.loopback() {
                    self.receive_loopback(val);
                } else {
                    self.output.push(val);
                }
                // Sent at once: THR is empty again.
                self.thr_ipending = true;
            }
            IER_DLM if dlab => self.dlm = val,
            IER_DLM => self.write_ier(val),
            IIR_FCR => self.write_fcr(val),
            LCR => self.lcr = val,
            MCR => {
                self.mcr = val & MCR_MASK;
                self.refill();
            }
            SCR => self.scr = val,
            // LSR and MSR are read-only.
            _ => {}
        }
    }

    /// The divisor latch value (for information only: the line speed does
    /// not change anything here).
    pub fn divisor(&self) -> u16 {
        u16::from_le_bytes([self.dll, self.dlm])
    }
}

impl MmioDevice for Uart16550 {
    /// Registers are bytes at offsets 0..7; an access of any size addresses
    /// the register at `offset` (reads zero-extend, writes use the low byte).
    fn read(&mut self, offset: u64, _size: u8) -> u64 {
        self.read_reg(offset) as u64
    }

    fn write(&mut self, offset: u64, _size: u8, value: u64) {
        self.write_reg(offset, value as u8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rd(u: &mut Uart16550, r: u64) -> u8 {
        u.read(r, 1) as u8
    }
    fn wr(u: &mut Uart16550, r: u64, v: u8) {
        u.write(r, 1, v as u64)
    }

    #[test]
    fn reset_state() {
        let mut u = Uart16550::new();
        assert_eq!(rd(&mut u, LSR), 0x60);
        assert_eq!(rd(&mut u, IIR_FCR), 0x01);
        assert_eq!(rd(&mut u, MSR), 0xb0);
        assert!(!u.irq_level());
    }

    #[test]
    fn transmit_goes_to_output() {
        let mut u = Uart16550::new();
        for &b in b"hi\n" {
            wr(&mut u, 0, b);
        }
        assert_eq!(rd(&mut u, LSR) & 0x60, 0x60);
        let mut out = vec![b'>'];
        u.drain_output(&mut out);
        assert_eq!(out, b">hi\n");
        assert!(!u.has_output());
        wr(&mut u, 0, b'x');
        assert_eq!(u.take_output(), b"x");
        assert!(u.take_output().is_empty());
    }

    #[test]
    fn divisor_latch() {
        let mut u = Uart16550::new();
        wr(&mut u, IER_DLM, 0x05);
        wr(&mut u, LCR, 0x83);
        wr(&mut u, 0, 0x01);
        wr(&mut u, 1, 0x02);
        assert_eq!(rd(&mut u, 0), 0x01);
        assert_eq!(rd(&mut u, 1), 0x02);
        assert_eq!(u.divisor(), 0x0201);
        wr(&mut u, LCR, 0x03);
        assert_eq!(rd(&mut u, 1), 0x05, "IER unchanged");
        assert!(u.take_output().is_empty(), "DLL write is not a THR write");
    }

    #[test]
    fn thre_interrupt_like_linux_expects() {
        let mut u = Uart16550::new();
        // serial8250_do_startup's THRE re-assert test.
        wr(&mut u, IER_DLM, IER_THRI);
        assert!(u.irq_level());
        let iir1 = rd(&mut u, IIR_FCR);
        assert_eq!(iir1 & 0x0f, IIR_THRI);
        assert!(!u.irq_level(), "IIR read reporting THRI clears it");
        wr(&mut u, IER_DLM, 0);
        wr(&mut u, IER_DLM, IER_THRI);
        let iir2 = rd(&mut u, IIR_FCR);
        assert_eq!(iir2 & 0x01, 0, "THRE reasserted on IER rising edge");
        // Writing THR re-arms it (instant transmit).
        wr(&mut u, 0, b'a');
        assert!(u.irq_level());
        // Disabling THRI clears it.
        wr(&mut u, IER_DLM, 0);
        assert!(!u.irq_level());
        wr(&mut u, 0, b'b');
        assert!(!u.irq_level(), "masked");
    }

    #[test]
    fn receive_fifo_and_interrupts() {
        let mut u = Uart16550::new();
        wr(&mut u, IIR_FCR, 0x87); // FIFO on, reset, trigger 8
        assert_eq!(rd(&mut u, IIR_FCR), 0xc1);
        wr(&mut u, IER_DLM, IER_RDI | IER_RLSI);
        assert!(!u.irq_level());
        let data: Vec<u8> = (0..40).collect();
        u.push_input(&data);
        assert_eq!(u.rx_queued(), 24);
        assert_eq!(u.rx_space(), 0);
        assert_eq!(rd(&mut u, IIR_FCR), 0xc4, "above trigger level: RDI");
        for i in 0..33 {
            assert_eq!(rd(&mut u, LSR) & 1, 1);
            assert_eq!(rd(&mut u, 0), i);
        }
        // 7 left, below the trigger level of 8: character timeout.
        assert_eq!(rd(&mut u, IIR_FCR), 0xcc);
        for i in 33..40 {
            assert_eq!(rd(&mut u, 0), i);
        }
        assert_eq!(rd(&mut u, LSR) & 1, 0);
        assert!(!u.irq_level());
        assert_eq!(rd(&mut u, 0), 0, "empty FIFO reads 0");
        assert_eq!(u.rx_space(), UART_FIFO_SIZE);
    }

    #[test]
    fn fifo_reset_drops_only_fifo_contents() {
        let mut u = Uart16550::new();
        wr(&mut u, IIR_FCR, 0x01);
        u.push_input(&[b'a'; 20]);
        wr(&mut u, IIR_FCR, 0x03);
        // The 4 bytes still on the wire refill the FIFO.
        let mut n = 0;
        while rd(&mut u, LSR) & 1 != 0 {
            rd(&mut u, 0);
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn non_fifo_mode_holds_one_byte() {
        let mut u = Uart16550::new();
        u.push_input(b"xyz");
        assert_eq!(u.rx_queued(), 2);
        wr(&mut u, IER_DLM, IER_RDI);
        assert_eq!(rd(&mut u, IIR_FCR), 0x04);
        assert_eq!(rd(&mut u, 0), b'x');
        assert_eq!(rd(&mut u, 0), b'y');
        assert_eq!(rd(&mut u, 0), b'z');
        assert_eq!(rd(&mut u, 0), b'z', "RBR holds the last byte");
        assert!(!u.irq_level());
    }

    /// Linux 8250 `autoconfig()` steps, as they apply to an MMIO port.
    #[test]
    fn linux_autoconfig_finds_16550a() {
        let mut u = Uart16550::new();
        // IER scratch test.
        wr(&mut u, IER_DLM, 0);
        assert_eq!(rd(&mut u, IER_DLM) & 0x0f, 0);
        wr(&mut u, IER_DLM, 0x0f);
        assert_eq!(rd(&mut u, IER_DLM) & 0x0f, 0x0f);
        wr(&mut u, IER_DLM, 0);
        // Loopback test.
        let save_mcr = rd(&mut u, MCR);
        wr(&mut u, MCR, MCR_LOOP | 0x0a);
        assert_eq!(rd(&mut u, MSR) & 0xf0, 0x90);
        wr(&mut u, MCR, save_mcr);
        // FIFO detection.
        wr(&mut u, LCR, 0);
        wr(&mut u, IIR_FCR, FCR_FE);
        assert_eq!(rd(&mut u, IIR_FCR) >> 6, 3);
        // No EFR behind LCR=0xBF.
        wr(&mut u, LCR, 0xbf);
        assert_ne!(rd(&mut u, IIR_FCR), 0);
        // Not a TI16750: FCR bit 5 does not show in IIR.
        wr(&mut u, LCR, 0);
        wr(&mut u, IIR_FCR, FCR_FE | 0x20);
        assert_eq!(rd(&mut u, IIR_FCR) >> 5, 6);
        // Not an XScale: IER bit 6 does not stick.
        wr(&mut u, IER_DLM, 0x40);
        assert_eq!(rd(&mut u, IER_DLM) & 0x40, 0);
        // Scratch register.
        wr(&mut u, SCR, 0xa5);
        assert_eq!(rd(&mut u, SCR), 0xa5);
        assert!(u.take_output().is_empty());
    }

    #[test]
    fn loopback_receives_own_bytes_and_holds_host_input() {
        let mut u = Uart16550::new();
        wr(&mut u, MCR, MCR_LOOP);
        u.push_input(b"host");
        assert_eq!(rd(&mut u, LSR) & 1, 0, "wire disconnected in loopback");
        wr(&mut u, 0, 0x42);
        assert!(u.take_output().is_empty());
        assert_eq!(rd(&mut u, LSR) & 1, 1);
        assert_eq!(rd(&mut u, 0), 0x42);
        // Non-FIFO holding register overruns on the second byte.
        wr(&mut u, 0, 1);
        wr(&mut u, 0, 2);
        wr(&mut u, IER_DLM, IER_RLSI);
        assert_eq!(rd(&mut u, IIR_FCR), IIR_RLSI);
        assert_eq!(rd(&mut u, LSR) & (LSR_OE | LSR_DR), LSR_OE | LSR_DR);
        assert_eq!(rd(&mut u, LSR) & LSR_OE, 0, "OE cleared by reading LSR");
        assert_eq!(rd(&mut u, 0), 1);
        wr(&mut u, MCR, 0);
        assert_eq!(rd(&mut u, 0), b'h');
    }

    #[test]
    fn no_panic_anywhere() {
        let mut u = Uart16550::new();
        u.push_input(&[0xff; 100]);
        for o in [0u64, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0x100, u64::MAX] {
            for size in [0u8, 1, 2, 4, 8, 200] {
                for v in [0u64, 0x80, 0xff, u64::MAX] {
                    u.write(o, size, v);
                    u.read(o, size);
                }
            }
        }
        assert_eq!(u.read(8, 1), 0);
        u.take_output();
    }

    #[test]
    fn clone_compares_state() {
        let mut u = Uart16550::new();
        u.push_input(b"ab");
        let v = u.clone();
        assert_eq!(u, v);
        rd(&mut u, 0);
        assert_ne!(u, v);
    }
}
