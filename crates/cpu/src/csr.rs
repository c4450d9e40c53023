//! Control and status registers: their numbers, the machine- and
//! supervisor-level state they hold, and the read/write rules (privilege and
//! read-only checks, WARL masks, the `sstatus`/`sie`/`sip` views of the machine
//! registers, counter gating by `mcounteren`/`scounteren`). An access to a CSR
//! that does not exist raises illegal-instruction, which is how firmware
//! probes for optional features.

use serde::{Deserialize, Serialize};

use crate::hart::{Hart, Privilege};
use crate::trap::Trap;
use crate::Bus;

pub const FFLAGS: u16 = 0x001;
pub const FRM: u16 = 0x002;
pub const FCSR: u16 = 0x003;
pub const CYCLE: u16 = 0xc00;
pub const TIME: u16 = 0xc01;
pub const INSTRET: u16 = 0xc02;
pub const SSTATUS: u16 = 0x100;
pub const SIE: u16 = 0x104;
pub const STVEC: u16 = 0x105;
pub const SCOUNTEREN: u16 = 0x106;
pub const SENVCFG: u16 = 0x10a;
pub const SSCRATCH: u16 = 0x140;
pub const SEPC: u16 = 0x141;
pub const SCAUSE: u16 = 0x142;
pub const STVAL: u16 = 0x143;
pub const SIP: u16 = 0x144;
pub const SATP: u16 = 0x180;
pub const MVENDORID: u16 = 0xf11;
pub const MARCHID: u16 = 0xf12;
pub const MIMPID: u16 = 0xf13;
pub const MHARTID: u16 = 0xf14;
pub const MCONFIGPTR: u16 = 0xf15;
pub const MSTATUS: u16 = 0x300;
pub const MISA: u16 = 0x301;
pub const MEDELEG: u16 = 0x302;
pub const MIDELEG: u16 = 0x303;
pub const MIE: u16 = 0x304;
pub const MTVEC: u16 = 0x305;
pub const MCOUNTEREN: u16 = 0x306;
pub const MENVCFG: u16 = 0x30a;
pub const MCOUNTINHIBIT: u16 = 0x320;
pub const MSCRATCH: u16 = 0x340;
pub const MEPC: u16 = 0x341;
pub const MCAUSE: u16 = 0x342;
pub const MTVAL: u16 = 0x343;
pub const MIP: u16 = 0x344;
pub const PMPCFG0: u16 = 0x3a0;
pub const PMPADDR0: u16 = 0x3b0;
pub const MCYCLE: u16 = 0xb00;
pub const MINSTRET: u16 = 0xb02;
// Debug triggers (Sdtrig): present, with no trigger implemented.
pub const TSELECT: u16 = 0x7a0;
pub const TDATA1: u16 = 0x7a1;
pub const TDATA2: u16 = 0x7a2;
pub const TDATA3: u16 = 0x7a3;
pub const TINFO: u16 = 0x7a4;

/// `mcountinhibit` bits that stop a counter: CY (mcycle) and IR (minstret).
pub const COUNTINHIBIT_CY: u64 = 1 << 0;
pub const COUNTINHIBIT_IR: u64 = 1 << 2;

// mstatus bits.
pub const MSTATUS_SIE: u64 = 1 << 1;
pub const MSTATUS_MIE: u64 = 1 << 3;
pub const MSTATUS_SPIE: u64 = 1 << 5;
pub const MSTATUS_UBE: u64 = 1 << 6;
pub const MSTATUS_MPIE: u64 = 1 << 7;
pub const MSTATUS_SPP: u64 = 1 << 8;
pub const MSTATUS_VS: u64 = 3 << 9;
pub const MSTATUS_MPP_SHIFT: u32 = 11;
pub const MSTATUS_MPP: u64 = 3 << MSTATUS_MPP_SHIFT;
pub const MSTATUS_FS_SHIFT: u32 = 13;
pub const MSTATUS_FS: u64 = 3 << MSTATUS_FS_SHIFT;
pub const MSTATUS_XS: u64 = 3 << 15;
pub const MSTATUS_MPRV: u64 = 1 << 17;
pub const MSTATUS_SUM: u64 = 1 << 18;
pub const MSTATUS_MXR: u64 = 1 << 19;
pub const MSTATUS_TVM: u64 = 1 << 20;
pub const MSTATUS_TW: u64 = 1 << 21;
pub const MSTATUS_TSR: u64 = 1 << 22;
pub const MSTATUS_UXL: u64 = 3 << 32;
pub const MSTATUS_SXL: u64 = 3 << 34;
pub const MSTATUS_SD: u64 = 1 << 63;

const MSTATUS_WRITABLE: u64 = MSTATUS_SIE
    | MSTATUS_MIE
    | MSTATUS_SPIE
    | MSTATUS_MPIE
    | MSTATUS_SPP
    | MSTATUS_MPP
    | MSTATUS_FS
    | MSTATUS_MPRV
    | MSTATUS_SUM
    | MSTATUS_MXR
    | MSTATUS_TVM
    | MSTATUS_TW
    | MSTATUS_TSR;
const SSTATUS_VIEW: u64 = MSTATUS_SIE
    | MSTATUS_SPIE
    | MSTATUS_UBE
    | MSTATUS_SPP
    | MSTATUS_VS
    | MSTATUS_FS
    | MSTATUS_XS
    | MSTATUS_SUM
    | MSTATUS_MXR
    | MSTATUS_UXL
    | MSTATUS_SD;
const SSTATUS_WRITABLE: u64 =
    MSTATUS_SIE | MSTATUS_SPIE | MSTATUS_SPP | MSTATUS_FS | MSTATUS_SUM | MSTATUS_MXR;

// Interrupt bits in mip/mie.
pub const IP_SSIP: u64 = 1 << 1;
pub const IP_MSIP: u64 = 1 << 3;
pub const IP_STIP: u64 = 1 << 5;
pub const IP_MTIP: u64 = 1 << 7;
pub const IP_SEIP: u64 = 1 << 9;
pub const IP_MEIP: u64 = 1 << 11;
const S_INTERRUPTS: u64 = IP_SSIP | IP_STIP | IP_SEIP;
const ALL_INTERRUPTS: u64 = S_INTERRUPTS | IP_MSIP | IP_MTIP | IP_MEIP;
/// Exceptions that may be delegated: all but ecall-from-M (11) and the reserved codes.
const MEDELEG_WRITABLE: u64 = 0xb3ff;

/// `misa`: RV64 with I, M, A, F, D, C, S, U.
pub const MISA_VALUE: u64 = (2 << 62)
    | (1 << 0)   // A
    | (1 << 2)   // C
    | (1 << 3)   // D
    | (1 << 5)   // F
    | (1 << 8)   // I
    | (1 << 12)  // M
    | (1 << 18)  // S
    | (1 << 20); // U

pub const SATP_MODE_BARE: u64 = 0;
pub const SATP_MODE_SV39: u64 = 8;
pub const SATP_MODE_SV48: u64 = 9;

/// Machine- and supervisor-level CSR state (the F/D state lives in `FpRegs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csrs {
    /// mstatus without SD (computed on read).
    pub mstatus: u64,
    pub medeleg: u64,
    pub mideleg: u64,
    pub mie: u64,
    /// Software-visible pending bits; SEIP here is the software-written bit only.
    pub mip: u64,
    /// The external supervisor interrupt line from the PLIC (ORed into mip.SEIP on read).
    pub seip_line: bool,
    pub mtvec: u64,
    pub mcounteren: u64,
    pub menvcfg: u64,
    pub mcountinhibit: u64,
    pub mscratch: u64,
    pub mepc: u64,
    pub mcause: u64,
    pub mtval: u64,
    pub stvec: u64,
    pub scounteren: u64,
    pub senvcfg: u64,
    pub sscratch: u64,
    pub sepc: u64,
    pub scause: u64,
    pub stval: u64,
    pub satp: u64,
    pub pmpcfg: [u64; 8],
    pub pmpaddr: Vec<u64>,
    /// mcycle as the next step reads it = `icount` + `cycle_offset` while it
    /// counts; while `mcountinhibit.CY` stops it, `cycle_offset` holds the
    /// frozen value itself. See [`Hart::counter`].
    pub cycle_offset: u64,
    /// The same for minstret and `mcountinhibit.IR`.
    pub instret_offset: u64,
}

impl Default for Csrs {
    fn default() -> Self {
        Csrs {
            mstatus: MSTATUS_UXL & (2 << 32) | MSTATUS_SXL & (2 << 34),
            medeleg: 0,
            mideleg: 0,
            mie: 0,
            mip: 0,
            seip_line: false,
            mtvec: 0,
            mcounteren: 0,
            menvcfg: 0,
            mcountinhibit: 0,
            mscratch: 0,
            mepc: 0,
            mcause: 0,
            mtval: 0,
            stvec: 0,
            scounteren: 0,
            senvcfg: 0,
            sscratch: 0,
            sepc: 0,
            scause: 0,
            stval: 0,
            satp: 0,
            pmpcfg: [0; 8],
            pmpaddr: vec![0; 64],
            cycle_offset: 0,
            instret_offset: 0,
        }
    }
}

impl Csrs {
    /// mstatus as software reads it (SD summarises FS).
    #[inline]
    pub fn mstatus_read(&self) -> u64 {
        let dirty = (self.mstatus & MSTATUS_FS) == MSTATUS_FS;
        self.mstatus | if dirty { MSTATUS_SD } else { 0 }
    }

    /// mip as software reads it (the PLIC's SEIP line ORed in).
    #[inline]
    pub fn mip_read(&self) -> u64 {
        self.mip | if self.seip_line { IP_SEIP } else { 0 }
    }
}

/// What a CSR write changed, so the hart can resynchronise derived state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CsrEffect {
    /// Translation context changed: flush the TLB.
    pub flush_tlb: bool,
}

impl Hart {
    fn fs_enabled(&self) -> bool {
        self.csr.mstatus & MSTATUS_FS != 0
    }

    fn counter_allowed(&self, csr: u16) -> bool {
        let bit = 1u64 << (csr & 0x1f);
        match self.prv {
            Privilege::Machine => true,
            Privilege::Supervisor => self.csr.mcounteren & bit != 0,
            Privilege::User => self.csr.mcounteren & bit != 0 && self.csr.scounteren & bit != 0,
        }
    }

    /// The value of mcycle (`bit` = [`COUNTINHIBIT_CY`]) or minstret
    /// ([`COUNTINHIBIT_IR`]) as the executing instruction reads it: the
    /// steps taken *before* it plus the offset, or the frozen value while
    /// `mcountinhibit` stops the counter. During an instruction `icount`
    /// already counts that instruction, hence the `- 1`. Every step counts
    /// one cycle, so the two counters advance together.
    pub(crate) fn counter(&self, bit: u64) -> u64 {
        let c = &self.csr;
        let offset = if bit == COUNTINHIBIT_CY {
            c.cycle_offset
        } else {
            c.instret_offset
        };
        if c.mcountinhibit & bit != 0 {
            offset
        } else {
            self.icount.wrapping_sub(1).wrapping_add(offset)
        }
    }

    fn counter_offset(c: &mut Csrs, bit: u64) -> &mut u64 {
        if bit == COUNTINHIBIT_CY {
            &mut c.cycle_offset
        } else {
            &mut c.instret_offset
        }
    }

    /// Reads CSR `csr`, or the illegal-instruction trap for `insn`.
    pub(crate) fn csr_read<B: Bus>(&self, csr: u16, insn: u32, bus: &B) -> Result<u64, Trap> {
        let illegal = Trap::illegal(insn as u64);
        if (csr >> 8) & 3 > self.prv as u16 {
            return Err(illegal);
        }
        let c = &self.csr;
        Ok(match csr {
            FFLAGS | FRM | FCSR => {
                if !self.fs_enabled() {
                    return Err(illegal);
                }
                match csr {
                    FFLAGS => self.fp.fflags as u64,
                    FRM => self.fp.frm as u64,
                    _ => self.fp.fcsr() as u64,
                }
            }
            CYCLE..=0xc1f => {
                if !self.counter_allowed(csr) {
                    return Err(illegal);
                }
                match csr {
                    CYCLE => self.counter(COUNTINHIBIT_CY),
                    TIME => bus.time(self.icount),
                    INSTRET => self.counter(COUNTINHIBIT_IR),
                    _ => 0,
                }
            }
            SSTATUS => c.mstatus_read() & SSTATUS_VIEW,
            SIE => c.mie & c.mideleg,
            STVEC => c.stvec,
            SCOUNTEREN => c.scounteren,
            SENVCFG => c.senvcfg,
            SSCRATCH => c.sscratch,
            SEPC => c.sepc,
            SCAUSE => c.scause,
            STVAL => c.stval,
            SIP => c.mip_read() & c.mideleg,
            SATP => {
                if self.prv == Privilege::Supervisor && c.mstatus & MSTATUS_TVM != 0 {
                    return Err(illegal);
                }
                c.satp
            }
            MVENDORID | MARCHID | MIMPID | MHARTID | MCONFIGPTR => 0,
            MSTATUS => c.mstatus_read(),
            MISA => MISA_VALUE,
            MEDELEG => c.medeleg,
            MIDELEG => c.mideleg,
            MIE => c.mie,
            MTVEC => c.mtvec,
            MCOUNTEREN => c.mcounteren,
            MENVCFG => c.menvcfg,
            MCOUNTINHIBIT => c.mcountinhibit,
            MSCRATCH => c.mscratch,
            MEPC => c.mepc,
            MCAUSE => c.mcause,
            MTVAL => c.mtval,
            MIP => c.mip_read(),
            0x3a0..=0x3af => {
                if csr & 1 != 0 {
                    return Err(illegal);
                }
                c.pmpcfg[((csr - PMPCFG0) / 2) as usize]
            }
            0x3b0..=0x3ef => c.pmpaddr[(csr - PMPADDR0) as usize],
            MCYCLE => self.counter(COUNTINHIBIT_CY),
            MINSTRET => self.counter(COUNTINHIBIT_IR),
            // No triggers: tselect reads 0 whatever is written, tdata1 reads
            // type 0 ("no trigger here"), tinfo has only bit 0 (debug spec
            // 1.0, 5.7: the value for a trigger that does not exist).
            TSELECT | TDATA1 | TDATA2 | TDATA3 => 0,
            TINFO => 1,
            // mhpmcounter3..31 and mhpmevent3..31: present, hardwired to zero.
            0xb03..=0xb1f | 0x323..=0x33f => 0,
            _ => return Err(illegal),
        })
    }

    /// Writes CSR `csr` (the caller already checked it may be read).
    pub(crate) fn csr_write(&mut self, csr: u16, value: u64, insn: u32) -> Result<CsrEffect, Trap> {
        let illegal = Trap::illegal(insn as u64);
        if csr >> 10 == 3 {
            return Err(illegal); // read-only CSR
        }
        let mut effect = CsrEffect::default();
        let c = &mut self.csr;
        match csr {
            FFLAGS => {
                self.fp.fflags = (value & 0x1f) as u8;
                c.mstatus |= MSTATUS_FS;
            }
            FRM => {
                self.fp.frm = (value & 7) as u8;
                c.mstatus |= MSTATUS_FS;
            }
            FCSR => {
                self.fp.set_fcsr(value as u32);
                c.mstatus |= MSTATUS_FS;
            }
            SSTATUS => {
                let old = c.mstatus;
                c.mstatus = (old & !SSTATUS_WRITABLE) | (value & SSTATUS_WRITABLE);
                effect.flush_tlb = (old ^ c.mstatus) & (MSTATUS_SUM | MSTATUS_MXR) != 0;
            }
            SIE => c.mie = (c.mie & !c.mideleg) | (value & c.mideleg),
            STVEC => c.stvec = warl_tvec(c.stvec, value),
            SCOUNTEREN => c.scounteren = value & 0xffff_ffff,
            SENVCFG => c.senvcfg = value & 1, // FIOM only
            SSCRATCH => c.sscratch = value,
            SEPC => c.sepc = value & !1,
            SCAUSE => c.scause = value,
            STVAL => c.stval = value,
            SIP => {
                let mask = IP_SSIP & c.mideleg;
                c.mip = (c.mip & !mask) | (value & mask);
            }
            SATP => {
                if self.prv == Privilege::Supervisor && c.mstatus & MSTATUS_TVM != 0 {
                    return Err(illegal);
                }
                let mode = value >> 60;
                // An unsupported mode makes the whole write have no effect. ASIDs
                // are not implemented (ASIDLEN = 0): the TLB is flushed on every write.
                if matches!(mode, SATP_MODE_BARE | SATP_MODE_SV39 | SATP_MODE_SV48) {
                    c.satp = value & ((0xf << 60) | ((1 << 44) - 1));
                    effect.flush_tlb = true;
                }
            }
            MSTATUS => {
                let old = c.mstatus;
                let mut v = (old & !MSTATUS_WRITABLE) | (value & MSTATUS_WRITABLE);
                if (v & MSTATUS_MPP) >> MSTATUS_MPP_SHIFT == 2 {
                    v = (v & !MSTATUS_MPP) | (old & MSTATUS_MPP); // reserved MPP: keep
                }
                c.mstatus = v;
                effect.flush_tlb =
                    (old ^ v) & (MSTATUS_SUM | MSTATUS_MXR | MSTATUS_MPRV | MSTATUS_MPP) != 0;
            }
            MISA => {} // WARL: not writable
            MEDELEG => c.medeleg = value & MEDELEG_WRITABLE,
            MIDELEG => c.mideleg = value & S_INTERRUPTS,
            MIE => c.mie = value & ALL_INTERRUPTS,
            MTVEC => c.mtvec = warl_tvec(c.mtvec, value),
            MCOUNTEREN => c.mcounteren = value & 0xffff_ffff,
            MENVCFG => c.menvcfg = value & 1,
            MCOUNTINHIBIT => {
                let new = value & 0xffff_fffd;
                for bit in [COUNTINHIBIT_CY, COUNTINHIBIT_IR] {
                    if (c.mcountinhibit ^ new) & bit != 0 {
                        // Switch the offset between its two meanings, so
                        // the counter neither jumps nor counts while stopped.
                        let offset = Self::counter_offset(c, bit);
                        *offset = if new & bit != 0 {
                            self.icount.wrapping_add(*offset) // freeze
                        } else {
                            offset.wrapping_sub(self.icount) // resume
                        };
                    }
                }
                c.mcountinhibit = new;
            }
            MSCRATCH => c.mscratch = value,
            MEPC => c.mepc = value & !1,
            MCAUSE => c.mcause = value,
            MTVAL => c.mtval = value,
            MIP => c.mip = (c.mip & !S_INTERRUPTS) | (value & S_INTERRUPTS),
            0x3a0..=0x3af => {
                if csr & 1 != 0 {
                    return Err(illegal);
                }
                let i = ((csr - PMPCFG0) / 2) as usize;
                // Locked entries (L bit) keep their configuration; the reserved
                // W=1,R=0 combination is mapped to no access.
                let old = c.pmpcfg[i];
                let mut new = 0u64;
                for b in 0..8 {
                    let o = (old >> (8 * b)) & 0xff;
                    let mut n = (value >> (8 * b)) & 0x9f;
                    if o & 0x80 != 0 {
                        n = o;
                    } else if n & 0b11 == 0b10 {
                        n &= !0b11;
                    }
                    new |= n << (8 * b);
                }
                c.pmpcfg[i] = new;
            }
            0x3b0..=0x3ef => {
                let i = (csr - PMPADDR0) as usize;
                let cfg = (c.pmpcfg[i / 8] >> (8 * (i % 8))) & 0xff;
                if cfg & 0x80 == 0 {
                    c.pmpaddr[i] = value & ((1 << 54) - 1);
                }
            }
            MCYCLE | MINSTRET => {
                let bit = if csr == MCYCLE {
                    COUNTINHIBIT_CY
                } else {
                    COUNTINHIBIT_IR
                };
                let stopped = c.mcountinhibit & bit != 0;
                // The written value is what the next step reads: the write
                // replaces the writing instruction's own increment.
                *Self::counter_offset(c, bit) = if stopped {
                    value
                } else {
                    value.wrapping_sub(self.icount)
                };
            }
            // Writes to a trigger that does not exist are ignored.
            TSELECT | TDATA1 | TDATA2 | TDATA3 | TINFO => {}
            0xb03..=0xb1f | 0x323..=0x33f => {}
            _ => return Err(illegal),
        }
        Ok(effect)
    }
}

/// `mtvec`/`stvec`: modes 0 (direct) and 1 (vectored); a reserved mode keeps the old mode.
fn warl_tvec(old: u64, value: u64) -> u64 {
    let mode = value & 3;
    if mode >= 2 {
        (value & !3) | (old & 3)
    } else {
        value
    }
}
