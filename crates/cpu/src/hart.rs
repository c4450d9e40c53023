//! The hart: architectural state and the interpreter loop.
//!
//! `Hart::run` executes instructions until the step counter reaches a limit,
//! the hart waits for an interrupt, or an instruction touched a device (so
//! that the board can resample interrupt lines). Every step — an instruction
//! that retires or one that raises an exception — adds one to `icount`, the
//! clock of record. Interrupts are taken only between steps, and only at
//! points that follow deterministically from the step count: whenever the
//! interrupt-enable or pending state can change, the inner loop ends and the
//! outer loop re-examines it, so a pending and enabled interrupt is always
//! taken at the first boundary where it is so, however the caller slices the
//! run into calls.
//!
//! # Decoded pages
//!
//! Instructions are decoded once per RAM page into a [`DecodedPage`] (one
//! slot per 2-byte offset, filled on first execution) and run from there
//! without being fetched again. Only the steps the plain interpreter would
//! fetch through a TLB hit within one page (offsets up to 0xffc) run this
//! way; anything else (a TLB miss, offset 0xffe, where a 4-byte instruction
//! may straddle two pages) takes one ordinary step through [`Hart::step`].
//! Decoded pages are indexed by physical page, so address translation stays
//! exactly where it was: in the fetch TLB, which is consulted on entering a
//! page. The page is left after every trap and SYSTEM instruction (which may
//! change privilege, `satp` or the TLB) and whenever the inner loop would end.
//!
//! A decoding stays equal to the decoding of the bytes in RAM because every
//! write to a page holding decoded instructions is seen before the next
//! instruction runs:
//!
//! - the page is marked in [`Ram`]'s code bitmap before any of its decodings
//!   is used, and marking it drops every store translation to it; a store
//!   translation is only created after a write through [`Ram::write_bytes`]
//!   or [`Ram::mark_dirty`] (the slow store and AMO paths), so the fast path
//!   never writes a marked page;
//! - every other write (the slow store path, AMOs, the page walker's A/D
//!   updates, device DMA, loaders) goes through `write_bytes` or
//!   `mark_dirty`, which unmark a marked page and queue its number; the hart
//!   drops the queued pages after every memory access, on entering a page and
//!   at the start of `run`;
//! - writes through [`Ram::as_bytes_mut`] cannot be tracked and drop all
//!   decodings, as does running on another `Ram` object.
//!
//! Decoded pages are a cache, not machine state: they are not serialised and
//! a cloned or restored hart starts without them.

use serde::{Deserialize, Serialize};

use crate::bus::{self, Bus, Ram};
use crate::csr::*;
use crate::decode::{self, empty_page, kinds, Code, DecodedPage, Kind, Op};
use crate::fpu::{self, FpRegs};
use crate::jit::{Engine, JitCache};
use crate::mmu::{self, Regime, Tlb, CTX_UNCACHED, TLB_ENTRIES};
use crate::rvc;
use crate::trap::{Access, Exception, Trap};

/// Privilege level. The numeric values are the architectural encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Privilege {
    User = 0,
    Supervisor = 1,
    Machine = 3,
}

impl Privilege {
    fn from_bits(b: u64) -> Privilege {
        match b & 3 {
            0 => Privilege::User,
            1 => Privilege::Supervisor,
            _ => Privilege::Machine,
        }
    }
}

/// Why [`Hart::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// `icount` reached the limit.
    Limit,
    /// The hart executed WFI and no enabled interrupt is pending.
    Wfi,
    /// An instruction accessed a device: the board must resample interrupt lines.
    Device,
}

/// One RV64GC hart.
#[derive(Clone, Serialize, Deserialize)]
pub struct Hart {
    pub x: [u64; 32],
    pub pc: u64,
    pub fp: FpRegs,
    pub prv: Privilege,
    pub csr: Csrs,
    /// Steps taken: instructions retired plus exceptions raised.
    pub icount: u64,
    /// Address reserved by the last LR, if any.
    pub reservation: Option<u64>,
    /// Waiting in WFI.
    pub wfi: bool,
    #[serde(skip, default = "Tlb::new")]
    pub(crate) tlb: Tlb,
    #[serde(skip, default = "rvc::table")]
    rvc: &'static [u32; 1 << 16],
    #[serde(skip, default = "Icache::new")]
    pub(crate) icache: Icache,
    #[serde(skip)]
    pub(crate) fetch_ctx: usize,
    #[serde(skip)]
    pub(crate) data_ctx: usize,
    /// Which engine runs instructions: a host setting, not machine state
    /// (not serialised; a new or restored hart takes the process default,
    /// [`crate::set_default_engine`]).
    #[serde(skip, default = "crate::jit::default_engine")]
    engine: Engine,
    /// The inner loop must end after this step.
    #[serde(skip)]
    sync: bool,
    /// This step touched a device.
    #[serde(skip)]
    device: bool,
}

impl std::fmt::Debug for Hart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hart")
            .field("pc", &format_args!("{:#x}", self.pc))
            .field("prv", &self.prv)
            .field("icount", &self.icount)
            .field("x", &self.x)
            .finish()
    }
}

#[inline(always)]
fn imm_i(insn: u32) -> u64 {
    ((insn as i32) >> 20) as i64 as u64
}
#[inline(always)]
fn imm_s(insn: u32) -> u64 {
    ((((insn as i32) >> 25) << 5) as i64 as u64) | ((insn >> 7) & 0x1f) as u64
}
#[inline(always)]
fn imm_b(insn: u32) -> u64 {
    let v = (((insn as i32) >> 31) << 12) as u32
        | ((insn & 0x80) << 4)
        | ((insn >> 20) & 0x7e0)
        | ((insn >> 7) & 0x1e);
    v as i32 as i64 as u64
}
#[inline(always)]
fn imm_j(insn: u32) -> u64 {
    let v = (((insn as i32) >> 31) << 20) as u32
        | (insn & 0xff000)
        | ((insn >> 9) & 0x800)
        | ((insn >> 20) & 0x7fe);
    v as i32 as i64 as u64
}
#[inline(always)]
fn sext32(v: u64) -> u64 {
    v as i32 as i64 as u64
}

/// Interrupts in decreasing priority (privileged spec 3.1.9).
const IRQ_PRIORITY: [u64; 6] = [11, 3, 7, 9, 1, 5];

/// What the decoded-page loop does after an op.
enum Flow {
    /// Go on at this (sequential) pc.
    Next(u64),
    /// Go on at this jump target, which may lie outside the page.
    Jump(u64),
    /// Go on at this pc after a slow memory access, which may have reached a
    /// device or written code.
    Mem(u64),
    /// Leave the page: the instruction (SYSTEM, atomic or FP) may have
    /// changed the translation. It updated `self.pc` and `self.icount`.
    Done,
    /// The op is [`Kind::Undecoded`]: decode it and retry.
    Undecoded,
    /// The op is [`Kind::Exit`]: take one ordinary step and leave.
    Exit,
}

/// Steps that may remain before the limit for the page loop to run without
/// checking it after every step: one more than the most sequential steps in
/// a page (2047 slots before the `Exit` slot).
const MIN_UNCHECKED_RUN: u64 = 2048;

/// Most decoded pages kept at once (16 KiB each); beyond it all are dropped.
const MAX_DECODED_PAGES: usize = 8192;

/// The hart's decoded instructions, per RAM page (see `exec_page`). Derived
/// state: a copy or a restored hart starts empty.
pub(crate) struct Icache {
    /// Identifies this cache to [`Ram`]'s write tracking.
    token: u64,
    /// The RAM object the TLB's host pointers and these pages refer to.
    ram_id: u64,
    pub(crate) pages: Vec<Option<Box<DecodedPage>>>,
    /// Pages allocated (some possibly held by `run_page` outside `pages`).
    count: usize,
    /// The translator's blocks, per page: dropped whenever the page's
    /// decodings are.
    pub(crate) jit: JitCache,
}

impl Icache {
    fn new() -> Icache {
        Icache {
            token: bus::fresh_id(),
            ram_id: 0,
            pages: Vec::new(),
            count: 0,
            jit: JitCache::default(),
        }
    }

    fn clear(&mut self, pages: usize) {
        self.pages.clear();
        self.pages.resize_with(pages, || None);
        self.count = 0;
        self.jit.clear(pages);
    }

    /// A new empty page.
    pub(crate) fn alloc(&mut self) -> Box<DecodedPage> {
        if self.count >= MAX_DECODED_PAGES {
            for p in self.pages.iter_mut() {
                *p = None;
            }
            self.count = 0;
            self.jit.drop_all();
        }
        self.count += 1;
        empty_page()
    }
}

impl Clone for Icache {
    fn clone(&self) -> Self {
        Icache::new() // a cache: a copy starts cold
    }
}

impl Hart {
    /// A hart in M-mode about to execute at `pc`, with a0 = hart id 0 and a1 = `a1`.
    pub fn new(pc: u64, a1: u64) -> Hart {
        let mut h = Hart {
            x: [0; 32],
            pc,
            fp: FpRegs::default(),
            prv: Privilege::Machine,
            csr: Csrs::default(),
            icount: 0,
            reservation: None,
            wfi: false,
            tlb: Tlb::new(),
            rvc: rvc::table(),
            icache: Icache::new(),
            fetch_ctx: 2,
            data_ctx: 2,
            engine: crate::jit::default_engine(),
            sync: false,
            device: false,
        };
        h.x[11] = a1;
        h.update_ctx();
        h
    }

    /// Restores derived state after deserialisation.
    pub fn after_restore(&mut self) {
        self.flush_caches();
    }

    /// Drops every cached translation (all TLBs, every context and access
    /// kind) and every decoded instruction page, and recomputes the
    /// translation contexts from the privilege level and `mstatus`: the hart
    /// then continues exactly as a copy restored from its serialised state
    /// would. The next [`Hart::run`] re-binds the decoded-page tracking of
    /// whatever RAM it is given.
    pub fn flush_caches(&mut self) {
        self.tlb = Tlb::new();
        self.icache = Icache::new();
        self.update_ctx();
    }

    /// Selects the execution engine. Both give identical results; the
    /// choice is not part of the hart's state (not serialised, not cloned
    /// into digests).
    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = engine;
    }

    /// The execution engine in use.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Sets the interrupt lines driven by the board: CLINT software and timer
    /// interrupts, and the PLIC's M-mode and S-mode external interrupts.
    pub fn set_irq_lines(&mut self, msip: bool, mtip: bool, meip: bool, seip: bool) {
        let m = &mut self.csr.mip;
        *m &= !(IP_MSIP | IP_MTIP | IP_MEIP);
        if msip {
            *m |= IP_MSIP;
        }
        if mtip {
            *m |= IP_MTIP;
        }
        if meip {
            *m |= IP_MEIP;
        }
        self.csr.seip_line = seip;
    }

    /// Invalidates cached translations of store accesses (see [`Tlb`]).
    pub fn flush_store_tlb(&mut self) {
        self.tlb.flush_stores();
    }

    fn update_ctx(&mut self) {
        let ctx = |p: Privilege| match p {
            Privilege::User => 0,
            Privilege::Supervisor => 1,
            Privilege::Machine => 2,
        };
        self.fetch_ctx = ctx(self.prv);
        self.data_ctx = if self.prv == Privilege::Machine && self.csr.mstatus & MSTATUS_MPRV != 0 {
            CTX_UNCACHED
        } else {
            ctx(self.prv)
        };
    }

    /// Runs until `icount` reaches `limit`, the hart idles in WFI, or a
    /// device was accessed.
    pub fn run<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, limit: u64) -> Exit {
        self.bind(ram);
        loop {
            self.check_interrupts();
            if self.wfi {
                return Exit::Wfi;
            }
            if self.engine == Engine::Jit {
                while self.icount < limit {
                    self.run_jit(ram, bus, limit);
                    if self.sync {
                        break;
                    }
                }
            } else {
                while self.icount < limit {
                    self.run_page(ram, bus, limit);
                    if self.sync {
                        break;
                    }
                }
            }
            if self.sync {
                self.sync = false;
                if self.device {
                    self.device = false;
                    self.check_interrupts();
                    return Exit::Device;
                }
                continue;
            }
            return Exit::Limit;
        }
    }

    /// Makes the derived state fit `ram`: host pointers into another RAM
    /// object are dropped, and decodings are dropped unless `ram` still
    /// tracks writes to them for this hart.
    fn bind(&mut self, ram: &mut Ram) {
        if ram.id() != self.icache.ram_id {
            // Only after a RAM swap without `after_restore`, where the
            // pointers would dangle; the TLB is cold in every other case.
            self.tlb = Tlb::new();
            self.icache.ram_id = ram.id();
            ram.code.owner = 0;
        }
        if ram.code.owner != self.icache.token {
            self.icache.clear(ram.pages());
            ram.code.reset(self.icache.token, ram.pages());
        }
        if !ram.code.written.is_empty() {
            self.drop_written(ram, usize::MAX);
        }
    }
    /// Takes the highest-priority pending and enabled interrupt, if any, and
    /// wakes the hart from WFI when any enabled interrupt is pending.
    fn check_interrupts(&mut self) {
        let pending = self.csr.mip_read() & self.csr.mie;
        if pending == 0 {
            return;
        }
        self.wfi = false;
        let mstatus = self.csr.mstatus;
        let m_enabled = self.prv < Privilege::Machine || mstatus & MSTATUS_MIE != 0;
        let s_enabled = self.prv < Privilege::Supervisor
            || (self.prv == Privilege::Supervisor && mstatus & MSTATUS_SIE != 0);
        let m_pending = pending & !self.csr.mideleg;
        let s_pending = pending & self.csr.mideleg;
        let take = if m_enabled && m_pending != 0 {
            m_pending
        } else if s_enabled && s_pending != 0 {
            s_pending
        } else {
            return;
        };
        for code in IRQ_PRIORITY {
            if take & (1 << code) != 0 {
                self.enter_trap(code, 0, true);
                return;
            }
        }
    }

    fn enter_trap(&mut self, code: u64, tval: u64, interrupt: bool) {
        self.reservation = None;
        let deleg = if interrupt {
            self.csr.mideleg
        } else {
            self.csr.medeleg
        };
        let cause = code | if interrupt { 1 << 63 } else { 0 };
        let c = &mut self.csr;
        if self.prv != Privilege::Machine && (deleg >> code) & 1 != 0 {
            c.scause = cause;
            c.sepc = self.pc;
            c.stval = tval;
            let mut s = c.mstatus & !(MSTATUS_SPP | MSTATUS_SPIE | MSTATUS_SIE);
            if self.prv == Privilege::Supervisor {
                s |= MSTATUS_SPP;
            }
            if c.mstatus & MSTATUS_SIE != 0 {
                s |= MSTATUS_SPIE;
            }
            c.mstatus = s;
            self.prv = Privilege::Supervisor;
            self.pc = trap_vector(c.stvec, code, interrupt);
        } else {
            c.mcause = cause;
            c.mepc = self.pc;
            c.mtval = tval;
            let mut s = c.mstatus & !(MSTATUS_MPP | MSTATUS_MPIE | MSTATUS_MIE);
            s |= (self.prv as u64) << MSTATUS_MPP_SHIFT;
            if c.mstatus & MSTATUS_MIE != 0 {
                s |= MSTATUS_MPIE;
            }
            c.mstatus = s;
            self.prv = Privilege::Machine;
            self.pc = trap_vector(c.mtvec, code, interrupt);
        }
        self.update_ctx();
    }

    /// One step: fetch, decode, execute, or take the exception it raises.
    #[inline(always)]
    fn step<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B) {
        self.icount = self.icount.wrapping_add(1);
        let raw = match self.fetch(ram) {
            Ok(i) => i,
            Err(t) => return self.enter_trap(t.cause as u64, t.tval, false),
        };
        let result = if raw & 3 == 3 {
            self.execute(ram, bus, raw, 4)
        } else {
            match self.rvc[(raw & 0xffff) as usize] {
                0 => Err(Trap::illegal((raw & 0xffff) as u64)),
                insn => self.execute(ram, bus, insn, 2).map_err(|mut t| {
                    if t.cause == Exception::IllegalInstruction {
                        t.tval = (raw & 0xffff) as u64;
                    }
                    t
                }),
            }
        };
        self.x[0] = 0;
        if let Err(t) = result {
            self.enter_trap(t.cause as u64, t.tval, false);
        }
    }

    // ------------------------------------------------------ decoded pages

    /// Executes at least one step: from the decoded page holding `pc` when
    /// the fetch would hit the TLB within the page, else one step of [`step`].
    ///
    /// [`step`]: Hart::step
    #[inline(always)]
    pub(crate) fn run_page<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, limit: u64) {
        let pc = self.pc;
        if (pc & 0xfff) > 0xffc {
            // A 4-byte instruction may straddle two pages.
            return self.step(ram, bus);
        }
        let vpn = pc >> 12;
        let mut e = self.tlb.fetch[self.fetch_ctx & 3][(vpn as usize) % TLB_ENTRIES];
        if e.vpn != vpn {
            // A TLB miss: walk as the fetch would (once; a second walk of
            // the same page for the upper half would find the same PTEs).
            if let Err(t) = self.fill_fetch_tlb(ram, pc) {
                self.icount = self.icount.wrapping_add(1);
                return self.enter_trap(t.cause as u64, t.tval, false);
            }
            e = self.tlb.fetch[self.fetch_ctx & 3][(vpn as usize) % TLB_ENTRIES];
        }
        if !ram.code.written.is_empty() {
            // Also after the walk, which may have set A in a PTE.
            self.drop_written(ram, usize::MAX);
        }
        let host_page = ((vpn << 12) as usize).wrapping_add(e.addend);
        let index = host_page.wrapping_sub(ram.host_ptr() as usize) >> 12;
        let Some(slot) = self.icache.pages.get_mut(index) else {
            return self.step(ram, bus);
        };
        let mut page = match slot.take() {
            Some(p) => p,
            None => self.icache.alloc(),
        };
        let keep = if limit - self.icount >= MIN_UNCHECKED_RUN {
            self.exec_page::<B, false>(ram, bus, limit, &mut page, index, vpn << 12)
        } else {
            self.exec_page::<B, true>(ram, bus, limit, &mut page, index, vpn << 12)
        };
        if keep {
            self.icache.pages[index] = Some(page);
        } else {
            self.icache.count = self.icache.count.saturating_sub(1);
            self.icache.jit.drop_page(index);
        }
    }

    /// The TLB fill of [`Hart::fetch_half`] for `pc`, without the fetch.
    #[cold]
    #[inline(never)]
    fn fill_fetch_tlb(&mut self, ram: &mut Ram, pc: u64) -> Result<(), Trap> {
        let pa = self.translate(ram, pc, Access::Fetch)?;
        match Self::ram_page(ram, pa) {
            Some(page) => {
                self.tlb.insert(Access::Fetch, self.fetch_ctx, pc, page);
                Ok(())
            }
            None => Err(Trap::new(Exception::InstructionAccessFault, pc)),
        }
    }

    /// Runs the decoded instructions of RAM page `index`, mapped at virtual
    /// `base` by the fetch TLB, while `pc` stays within its first 0xffe
    /// bytes. Returns false if the page was written (its decodings are stale).
    ///
    /// Every step taken here is one the interpreter would take through the
    /// TLB-hit path of [`fetch`] with the same bytes, and it leaves the page
    /// after anything that may change the fetch translation (a SYSTEM
    /// instruction, a trap) or that ends the inner loop (`sync`).
    ///
    /// [`fetch`]: Hart::fetch
    ///
    /// With `CHECKED` false, the step limit is only checked on entry and
    /// after jumps: between two jumps at most `MIN_UNCHECKED_RUN` - 1
    /// sequential steps fit in a page, so it is enough that that many remain.
    /// The loop then has no per-step limit test, which is worth a few percent.
    #[inline(never)]
    fn exec_page<B: Bus, const CHECKED: bool>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        limit: u64,
        page: &mut DecodedPage,
        index: usize,
        base: u64,
    ) -> bool {
        // `pc` and the step count live in registers. `self.pc` and
        // `self.icount` are brought up to date before anything that may read
        // them (a slow memory access, a SYSTEM instruction, a trap) and on
        // leaving.
        let mut pc = self.pc;
        let mut icount = self.icount;
        let keep = loop {
            if CHECKED && icount >= limit {
                break true;
            }
            // In range: checked on entry and after jumps; sequential
            // execution stops at the `Exit` slot at the latest.
            let i = ((pc >> 1) & 2047) as usize; // `base` is 4 KiB-aligned
            let op = &page[i];
            // One jump table over (kind, length): each handler is `exec`
            // specialised for a constant kind and length, so the next pc of a
            // sequential instruction is `pc` plus a constant and does not wait
            // for the op to be loaded.
            macro_rules! dispatch {
                ($($k:ident $c2:ident $c4:ident),* $(,)?) => {
                    match op.code {
                        $(
                            Code::$c2 => self.exec::<B, 2>(ram, bus, Kind::$k, op, pc, icount + 1),
                            Code::$c4 => self.exec::<B, 4>(ram, bus, Kind::$k, op, pc, icount + 1),
                        )*
                    }
                };
            }
            let flow = kinds!(dispatch);
            match flow {
                Ok(Flow::Next(next)) => {
                    icount += 1;
                    pc = next;
                }
                Ok(Flow::Jump(next)) => {
                    icount += 1;
                    pc = next;
                    if next.wrapping_sub(base) >= 0x1000 {
                        break true;
                    }
                    if !CHECKED && limit - icount < MIN_UNCHECKED_RUN {
                        break true;
                    }
                }
                Ok(Flow::Mem(next)) => {
                    // A slow memory access: it may have reached a device
                    // (`sync`) or written code.
                    self.x[0] = 0;
                    icount += 1;
                    pc = next;
                    if self.sync {
                        break true;
                    }
                    if !ram.code.written.is_empty() && self.drop_written(ram, index) {
                        break false;
                    }
                }
                Ok(Flow::Done) => {
                    // A SYSTEM, atomic or FP instruction, which brought
                    // `self` up to date.
                    self.x[0] = 0;
                    return true;
                }
                Ok(Flow::Undecoded) => {
                    page[i] = self.decode_at(ram, index, pc & 0xfff);
                    continue;
                }
                Ok(Flow::Exit) => {
                    self.pc = pc;
                    self.icount = icount;
                    self.step_cold(ram, bus);
                    return true;
                }
                Err(t) => {
                    self.x[0] = 0;
                    self.pc = pc;
                    self.icount = icount + 1;
                    self.enter_trap(t.cause as u64, t.tval, false);
                    return true;
                }
            }
        };
        self.pc = pc;
        self.icount = icount;
        keep
    }

    /// One ordinary step, with a full fetch, out of line.
    #[cold]
    #[inline(never)]
    fn step_cold<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B) {
        self.step(ram, bus);
    }

    /// Decodes the instruction at offset `off` (at most 0xffc) of RAM page
    /// `index`, first making sure writes to the page will be noticed: the
    /// page is marked as code, which no store translation may map.
    #[cold]
    #[inline(never)]
    pub(crate) fn decode_at(&mut self, ram: &mut Ram, index: usize, off: u64) -> Op {
        if !ram.code.contains(index) {
            ram.code.insert(index);
            let host_page = (ram.host_ptr() as usize).wrapping_add(index << 12);
            self.tlb.drop_stores_to(host_page);
        }
        let at = ram.base() + ((index as u64) << 12) + off;
        let mut b = [0u8; 4];
        if !ram.read_bytes(at, &mut b) {
            // Unreachable (the TLB maps whole pages); decoded as illegal zero bits.
            return decode::decode(0, self.rvc);
        }
        let raw = u32::from_le_bytes(b);
        if off == 0xffc && raw & 3 == 3 {
            return Op::EXIT;
        }
        decode::decode(raw, self.rvc)
    }

    /// Drops the decodings of the pages written since they were decoded.
    /// Returns true if `current` is one of them (the caller holds that page
    /// and drops it).
    #[cold]
    #[inline(never)]
    pub(crate) fn drop_written(&mut self, ram: &mut Ram, current: usize) -> bool {
        let mut hit = false;
        for p in ram.code.written.drain(..) {
            let p = p as usize;
            if p == current {
                hit = true;
            } else if let Some(slot) = self.icache.pages.get_mut(p) {
                self.icache.jit.drop_page(p);
                if slot.take().is_some() {
                    self.icache.count = self.icache.count.saturating_sub(1);
                }
            }
        }
        hit
    }

    /// Executes the decoded instruction `op` of length `LEN` at `pc` as
    /// step number `icount`. `self.pc` and `self.icount` may be stale, and
    /// are updated before anything that reads them.
    #[inline(always)]
    fn exec<B: Bus, const LEN: u64>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        kind: Kind,
        op: &Op,
        pc: u64,
        icount: u64,
    ) -> Result<Flow, Trap> {
        let rd = op.rd.index();
        let a = self.x[op.rs1.index()];
        let b = self.x[op.rs2.index()];
        let imm = op.imm as i64 as u64;
        let next = pc.wrapping_add(LEN);
        let (a32, b32) = (a as i32, b as i32);
        // Distinct flows for the two outcomes keep a branch a branch (not a
        // select that would make the next pc wait for the comparison).
        let branch = |taken: bool| {
            Ok(if taken {
                Flow::Jump(pc.wrapping_add(imm))
            } else {
                Flow::Next(next)
            })
        };
        match kind {
            Kind::Lui => self.x[rd] = imm,
            Kind::Auipc => self.x[rd] = pc.wrapping_add(imm),
            Kind::Jal => {
                self.x[rd] = next;
                return Ok(Flow::Jump(pc.wrapping_add(imm)));
            }
            Kind::Jalr => {
                self.x[rd] = next;
                return Ok(Flow::Jump(a.wrapping_add(imm) & !1));
            }
            Kind::J => return Ok(Flow::Jump(pc.wrapping_add(imm))),
            Kind::Jr => return Ok(Flow::Jump(a.wrapping_add(imm) & !1)),
            Kind::Beq => {
                return branch(a == b);
            }
            Kind::Bne => {
                return branch(a != b);
            }
            Kind::Blt => {
                return branch((a as i64) < (b as i64));
            }
            Kind::Bge => {
                return branch((a as i64) >= (b as i64));
            }
            Kind::Bltu => {
                return branch(a < b);
            }
            Kind::Bgeu => {
                return branch(a >= b);
            }
            Kind::Lb => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 1) {
                    Some(v) => {
                        self.x[rd] = v as i8 as u64;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 1)? as i8 as u64;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Lh => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 2) {
                    Some(v) => {
                        self.x[rd] = v as i16 as u64;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 2)? as i16 as u64;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Lw => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 4) {
                    Some(v) => {
                        self.x[rd] = v as i32 as u64;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 4)? as i32 as u64;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Ld => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 8) {
                    Some(v) => {
                        self.x[rd] = v;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 8)?;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Lbu => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 1) {
                    Some(v) => {
                        self.x[rd] = v;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 1)?;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Lhu => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 2) {
                    Some(v) => {
                        self.x[rd] = v;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 2)?;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Lwu => {
                let va = a.wrapping_add(imm);
                return Ok(match self.load_fast(va, 4) {
                    Some(v) => {
                        self.x[rd] = v;
                        self.x[0] = 0;
                        Flow::Next(next)
                    }
                    None => {
                        self.pc = pc;
                        self.icount = icount;
                        self.x[rd] = self.load_slow(ram, bus, va, 4)?;
                        self.x[0] = 0;
                        Flow::Mem(next)
                    }
                });
            }
            Kind::Sb => {
                let va = a.wrapping_add(imm);
                if self.store_fast(va, 1, b) {
                    return Ok(Flow::Next(next));
                }
                self.pc = pc;
                self.icount = icount;
                self.store_slow(ram, bus, va, 1, b)?;
                return Ok(Flow::Mem(next));
            }
            Kind::Sh => {
                let va = a.wrapping_add(imm);
                if self.store_fast(va, 2, b) {
                    return Ok(Flow::Next(next));
                }
                self.pc = pc;
                self.icount = icount;
                self.store_slow(ram, bus, va, 2, b)?;
                return Ok(Flow::Mem(next));
            }
            Kind::Sw => {
                let va = a.wrapping_add(imm);
                if self.store_fast(va, 4, b) {
                    return Ok(Flow::Next(next));
                }
                self.pc = pc;
                self.icount = icount;
                self.store_slow(ram, bus, va, 4, b)?;
                return Ok(Flow::Mem(next));
            }
            Kind::Sd => {
                let va = a.wrapping_add(imm);
                if self.store_fast(va, 8, b) {
                    return Ok(Flow::Next(next));
                }
                self.pc = pc;
                self.icount = icount;
                self.store_slow(ram, bus, va, 8, b)?;
                return Ok(Flow::Mem(next));
            }
            Kind::Addi => self.x[rd] = a.wrapping_add(imm),
            Kind::Slti => self.x[rd] = ((a as i64) < (imm as i64)) as u64,
            Kind::Sltiu => self.x[rd] = (a < imm) as u64,
            Kind::Xori => self.x[rd] = a ^ imm,
            Kind::Ori => self.x[rd] = a | imm,
            Kind::Andi => self.x[rd] = a & imm,
            Kind::Slli => self.x[rd] = a << (imm & 63),
            Kind::Srli => self.x[rd] = a >> (imm & 63),
            Kind::Srai => self.x[rd] = ((a as i64) >> (imm & 63)) as u64,
            Kind::Addiw => self.x[rd] = sext32(a.wrapping_add(imm)),
            Kind::Slliw => self.x[rd] = sext32(((a as u32) << (imm & 31)) as u64),
            Kind::Srliw => self.x[rd] = sext32(((a as u32) >> (imm & 31)) as u64),
            Kind::Sraiw => self.x[rd] = (a32 >> (imm & 31)) as i64 as u64,
            Kind::Add => self.x[rd] = a.wrapping_add(b),
            Kind::Sub => self.x[rd] = a.wrapping_sub(b),
            Kind::Sll => self.x[rd] = a << (b & 63),
            Kind::Slt => self.x[rd] = ((a as i64) < (b as i64)) as u64,
            Kind::Sltu => self.x[rd] = (a < b) as u64,
            Kind::Xor => self.x[rd] = a ^ b,
            Kind::Srl => self.x[rd] = a >> (b & 63),
            Kind::Sra => self.x[rd] = ((a as i64) >> (b & 63)) as u64,
            Kind::Or => self.x[rd] = a | b,
            Kind::And => self.x[rd] = a & b,
            Kind::Mul => self.x[rd] = a.wrapping_mul(b),
            Kind::Mulh => {
                self.x[rd] = (((a as i64 as i128) * (b as i64 as i128)) >> 64) as u64;
            }
            Kind::Mulhsu => {
                self.x[rd] = (((a as i64 as i128) * (b as u128 as i128)) >> 64) as u64;
            }
            Kind::Mulhu => self.x[rd] = (((a as u128) * (b as u128)) >> 64) as u64,
            Kind::Div => {
                self.x[rd] = if b == 0 {
                    u64::MAX
                } else {
                    (a as i64).wrapping_div(b as i64) as u64
                };
            }
            Kind::Divu => self.x[rd] = a.checked_div(b).unwrap_or(u64::MAX),
            Kind::Rem => {
                self.x[rd] = if b == 0 {
                    a
                } else {
                    (a as i64).wrapping_rem(b as i64) as u64
                };
            }
            Kind::Remu => self.x[rd] = if b == 0 { a } else { a % b },
            Kind::Addw => self.x[rd] = sext32(a.wrapping_add(b)),
            Kind::Subw => self.x[rd] = sext32(a.wrapping_sub(b)),
            Kind::Sllw => self.x[rd] = sext32(((a as u32) << (b & 31)) as u64),
            Kind::Srlw => self.x[rd] = sext32(((a as u32) >> (b & 31)) as u64),
            Kind::Sraw => self.x[rd] = (a32 >> (b & 31)) as i64 as u64,
            Kind::Mulw => self.x[rd] = a32.wrapping_mul(b32) as i64 as u64,
            Kind::Divw => {
                self.x[rd] = if b32 == 0 {
                    u64::MAX
                } else {
                    a32.wrapping_div(b32) as i64 as u64
                };
            }
            Kind::Divuw => {
                self.x[rd] = if b32 == 0 {
                    u64::MAX
                } else {
                    sext32(((a as u32) / (b as u32)) as u64)
                };
            }
            Kind::Remw => {
                self.x[rd] = if b32 == 0 {
                    a32 as i64 as u64
                } else {
                    a32.wrapping_rem(b32) as i64 as u64
                };
            }
            Kind::Remuw => {
                self.x[rd] = if b32 == 0 {
                    a32 as i64 as u64
                } else {
                    sext32(((a as u32) % (b as u32)) as u64)
                };
            }
            Kind::Nop => {}
            Kind::Illegal => return Err(Trap::illegal(op.imm as u32 as u64)),
            Kind::Slow => {
                self.pc = pc;
                self.icount = icount;
                self.exec_slow::<B, LEN>(ram, bus, op.imm)?;
                return Ok(Flow::Done);
            }
            Kind::Undecoded => return Ok(Flow::Undecoded),
            Kind::Exit => return Ok(Flow::Exit),
        }
        Ok(Flow::Next(next))
    }

    /// SYSTEM, atomics and floating point: the general executor, on the
    /// 32-bit encoding (an illegal-instruction trap reports the original bits).
    #[inline(never)]
    fn exec_slow<B: Bus, const LEN: u64>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        imm: i32,
    ) -> Result<(), Trap> {
        if LEN == 4 {
            return self.execute(ram, bus, imm as u32, 4);
        }
        let bits = imm as u32 & 0xffff;
        self.execute(ram, bus, self.rvc[bits as usize], 2)
            .map_err(|mut t| {
                if t.cause == Exception::IllegalInstruction {
                    t.tval = bits as u64;
                }
                t
            })
    }

    // ---------------------------------------------------------------- memory

    fn translate(&mut self, ram: &mut Ram, vaddr: u64, access: Access) -> Result<u64, Trap> {
        let mstatus = self.csr.mstatus;
        let eff = if access != Access::Fetch
            && self.prv == Privilege::Machine
            && mstatus & MSTATUS_MPRV != 0
        {
            Privilege::from_bits(mstatus >> MSTATUS_MPP_SHIFT)
        } else {
            self.prv
        };
        if eff == Privilege::Machine {
            return Ok(vaddr);
        }
        let regime = Regime {
            satp: self.csr.satp,
            user: eff == Privilege::User,
            sum: mstatus & MSTATUS_SUM != 0,
            mxr: mstatus & MSTATUS_MXR != 0,
        };
        mmu::walk(ram, &regime, vaddr, access)
    }

    /// Host pointer to the RAM page holding `paddr`, if it is RAM.
    #[inline]
    fn ram_page(ram: &mut Ram, paddr: u64) -> Option<*mut u8> {
        let off = ram.offset_of(paddr & !0xfff, 0x1000)?;
        // SAFETY: off + 0x1000 <= RAM size, checked by offset_of.
        Some(unsafe { ram.host_ptr().add(off) })
    }

    #[inline(always)]
    fn fetch(&mut self, ram: &mut Ram) -> Result<u32, Trap> {
        let pc = self.pc;
        let vpn = pc >> 12;
        let e = self.tlb.fetch[self.fetch_ctx][(vpn as usize) % TLB_ENTRIES];
        if e.vpn == vpn && (pc & 0xfff) <= 0xffc {
            let p = (pc as usize).wrapping_add(e.addend) as *const u32;
            // SAFETY: the TLB only maps whole RAM pages and the 4 bytes lie within one.
            return Ok(unsafe { p.read_unaligned() });
        }
        self.fetch_slow(ram)
    }

    #[cold]
    fn fetch_slow(&mut self, ram: &mut Ram) -> Result<u32, Trap> {
        let lo = self.fetch_half(ram, self.pc)? as u32;
        if lo & 3 != 3 {
            return Ok(lo);
        }
        let hi = self.fetch_half(ram, self.pc.wrapping_add(2))? as u32;
        Ok(lo | (hi << 16))
    }

    fn fetch_half(&mut self, ram: &mut Ram, va: u64) -> Result<u16, Trap> {
        let pa = self.translate(ram, va, Access::Fetch)?;
        match Self::ram_page(ram, pa) {
            Some(page) => {
                self.tlb.insert(Access::Fetch, self.fetch_ctx, va, page);
                // SAFETY: va is 2-aligned so the 2 bytes lie within the page.
                Ok(unsafe { (page.add((pa & 0xfff) as usize) as *const u16).read_unaligned() })
            }
            None => Err(Trap::new(Exception::InstructionAccessFault, va)),
        }
    }

    /// The TLB-hit path of [`Hart::load`]: `None` on a miss.
    #[inline(always)]
    fn load_fast(&self, va: u64, size: u64) -> Option<u64> {
        let vpn = va >> 12;
        let e = self.tlb.load[self.data_ctx & 3][(vpn as usize) % TLB_ENTRIES];
        if e.vpn == vpn && (va & 0xfff) + size <= 0x1000 {
            let p = (va as usize).wrapping_add(e.addend);
            // SAFETY: the TLB maps whole RAM pages and the access lies within one.
            unsafe {
                return Some(match size {
                    1 => *(p as *const u8) as u64,
                    2 => (p as *const u16).read_unaligned() as u64,
                    4 => (p as *const u32).read_unaligned() as u64,
                    _ => (p as *const u64).read_unaligned(),
                });
            }
        }
        None
    }

    /// The TLB-hit path of [`Hart::store`]: false on a miss.
    #[inline(always)]
    fn store_fast(&mut self, va: u64, size: u64, v: u64) -> bool {
        let vpn = va >> 12;
        let e = self.tlb.store[self.data_ctx & 3][(vpn as usize) % TLB_ENTRIES];
        if e.vpn == vpn && (va & 0xfff) + size <= 0x1000 {
            let p = (va as usize).wrapping_add(e.addend);
            // SAFETY: the TLB maps whole RAM pages and the access lies within one.
            unsafe {
                match size {
                    1 => *(p as *mut u8) = v as u8,
                    2 => (p as *mut u16).write_unaligned(v as u16),
                    4 => (p as *mut u32).write_unaligned(v as u32),
                    _ => (p as *mut u64).write_unaligned(v),
                }
            }
            return true;
        }
        false
    }

    #[inline(always)]
    fn load<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        va: u64,
        size: u64,
    ) -> Result<u64, Trap> {
        match self.load_fast(va, size) {
            Some(v) => Ok(v),
            None => self.load_slow(ram, bus, va, size),
        }
    }

    #[cold]
    fn load_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        va: u64,
        size: u64,
    ) -> Result<u64, Trap> {
        if (va & 0xfff) + size > 0x1000 {
            // Misaligned across a page boundary: byte by byte.
            let mut v = 0u64;
            for i in 0..size {
                v |= self.load(ram, bus, va.wrapping_add(i), 1)? << (8 * i);
            }
            return Ok(v);
        }
        let pa = self.translate(ram, va, Access::Load)?;
        if let Some(page) = Self::ram_page(ram, pa) {
            self.tlb.insert(Access::Load, self.data_ctx, va, page);
            let mut b = [0u8; 8];
            ram.read_bytes(pa, &mut b[..size as usize]);
            return Ok(u64::from_le_bytes(b));
        }
        if va & (size - 1) != 0 {
            return Err(Trap::new(Exception::LoadMisaligned, va));
        }
        self.sync = true;
        self.device = true;
        bus.mmio_read(pa, size as u8, self.icount)
            .ok_or(Trap::new(Exception::LoadAccessFault, va))
    }

    #[inline(always)]
    fn store<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        va: u64,
        size: u64,
        v: u64,
    ) -> Result<(), Trap> {
        if self.store_fast(va, size, v) {
            return Ok(());
        }
        self.store_slow(ram, bus, va, size, v)
    }

    #[cold]
    fn store_slow<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        va: u64,
        size: u64,
        v: u64,
    ) -> Result<(), Trap> {
        if (va & 0xfff) + size > 0x1000 {
            // Check both pages before writing anything, so a fault leaves memory untouched.
            let second = (va | 0xfff).wrapping_add(1);
            self.translate(ram, va, Access::Store)?;
            self.translate(ram, second, Access::Store)?;
            for i in 0..size {
                self.store(ram, bus, va.wrapping_add(i), 1, v >> (8 * i))?;
            }
            return Ok(());
        }
        let pa = self.translate(ram, va, Access::Store)?;
        if let Some(page) = Self::ram_page(ram, pa) {
            self.tlb.insert(Access::Store, self.data_ctx, va, page);
            ram.write_bytes(pa, &v.to_le_bytes()[..size as usize]); // also marks the page dirty
            return Ok(());
        }
        if va & (size - 1) != 0 {
            return Err(Trap::new(Exception::StoreMisaligned, va));
        }
        self.sync = true;
        self.device = true;
        if bus.mmio_write(pa, size as u8, v, self.icount) {
            Ok(())
        } else {
            Err(Trap::new(Exception::StoreAccessFault, va))
        }
    }

    /// Host pointer for an atomic access: needs store permission and RAM.
    fn amo_ptr(&mut self, ram: &mut Ram, va: u64, size: u64) -> Result<*mut u8, Trap> {
        if va & (size - 1) != 0 {
            return Err(Trap::new(Exception::StoreMisaligned, va));
        }
        let vpn = va >> 12;
        let e = self.tlb.store[self.data_ctx][(vpn as usize) % TLB_ENTRIES];
        if e.vpn == vpn {
            return Ok((va as usize).wrapping_add(e.addend) as *mut u8);
        }
        let pa = self.translate(ram, va, Access::Store)?;
        match Self::ram_page(ram, pa) {
            Some(page) => {
                self.tlb.insert(Access::Store, self.data_ctx, va, page);
                ram.mark_dirty(pa);
                // SAFETY: aligned access inside the page.
                Ok(unsafe { page.add((pa & 0xfff) as usize) })
            }
            None => Err(Trap::new(Exception::StoreAccessFault, va)),
        }
    }

    // --------------------------------------------------------------- execute

    #[inline(always)]
    fn execute<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        insn: u32,
        len: u64,
    ) -> Result<(), Trap> {
        let rd = ((insn >> 7) & 31) as usize;
        let rs1 = ((insn >> 15) & 31) as usize;
        let rs2 = ((insn >> 20) & 31) as usize;
        let funct3 = (insn >> 12) & 7;
        let funct7 = insn >> 25;
        let pc = self.pc;
        let mut next = pc.wrapping_add(len);
        let illegal = Trap::illegal(insn as u64);
        match insn & 0x7f {
            0x37 => self.x[rd] = sext32((insn & 0xffff_f000) as u64),
            0x17 => self.x[rd] = pc.wrapping_add(sext32((insn & 0xffff_f000) as u64)),
            0x6f => {
                self.x[rd] = next;
                next = pc.wrapping_add(imm_j(insn));
            }
            0x67 => {
                if funct3 != 0 {
                    return Err(illegal);
                }
                let target = self.x[rs1].wrapping_add(imm_i(insn)) & !1;
                self.x[rd] = next;
                next = target;
            }
            0x63 => {
                let a = self.x[rs1];
                let b = self.x[rs2];
                let taken = match funct3 {
                    0 => a == b,
                    1 => a != b,
                    4 => (a as i64) < (b as i64),
                    5 => (a as i64) >= (b as i64),
                    6 => a < b,
                    7 => a >= b,
                    _ => return Err(illegal),
                };
                if taken {
                    next = pc.wrapping_add(imm_b(insn));
                }
            }
            0x03 => {
                let va = self.x[rs1].wrapping_add(imm_i(insn));
                let v = match funct3 {
                    0 => self.load(ram, bus, va, 1)? as i8 as i64 as u64,
                    1 => self.load(ram, bus, va, 2)? as i16 as i64 as u64,
                    2 => self.load(ram, bus, va, 4)? as i32 as i64 as u64,
                    3 => self.load(ram, bus, va, 8)?,
                    4 => self.load(ram, bus, va, 1)?,
                    5 => self.load(ram, bus, va, 2)?,
                    6 => self.load(ram, bus, va, 4)?,
                    _ => return Err(illegal),
                };
                self.x[rd] = v;
            }
            0x23 => {
                let va = self.x[rs1].wrapping_add(imm_s(insn));
                let v = self.x[rs2];
                match funct3 {
                    0 => self.store(ram, bus, va, 1, v)?,
                    1 => self.store(ram, bus, va, 2, v)?,
                    2 => self.store(ram, bus, va, 4, v)?,
                    3 => self.store(ram, bus, va, 8, v)?,
                    _ => return Err(illegal),
                }
            }
            0x13 => {
                let a = self.x[rs1];
                let imm = imm_i(insn);
                let shamt = (insn >> 20) & 0x3f;
                self.x[rd] = match funct3 {
                    0 => a.wrapping_add(imm),
                    1 => {
                        if insn >> 26 != 0 {
                            return Err(illegal);
                        }
                        a << shamt
                    }
                    2 => ((a as i64) < (imm as i64)) as u64,
                    3 => (a < imm) as u64,
                    4 => a ^ imm,
                    5 => match insn >> 26 {
                        0 => a >> shamt,
                        0x10 => ((a as i64) >> shamt) as u64,
                        _ => return Err(illegal),
                    },
                    6 => a | imm,
                    _ => a & imm,
                };
            }
            0x1b => {
                let a = self.x[rs1];
                let shamt = (insn >> 20) & 0x1f;
                self.x[rd] = match (funct3, funct7) {
                    (0, _) => sext32(a.wrapping_add(imm_i(insn))),
                    (1, 0) => sext32(((a as u32) << shamt) as u64),
                    (5, 0) => sext32(((a as u32) >> shamt) as u64),
                    (5, 0x20) => ((a as i32) >> shamt) as i64 as u64,
                    _ => return Err(illegal),
                };
            }
            0x33 => {
                let a = self.x[rs1];
                let b = self.x[rs2];
                self.x[rd] = match (funct7, funct3) {
                    (0, 0) => a.wrapping_add(b),
                    (0x20, 0) => a.wrapping_sub(b),
                    (0, 1) => a << (b & 63),
                    (0, 2) => ((a as i64) < (b as i64)) as u64,
                    (0, 3) => (a < b) as u64,
                    (0, 4) => a ^ b,
                    (0, 5) => a >> (b & 63),
                    (0x20, 5) => ((a as i64) >> (b & 63)) as u64,
                    (0, 6) => a | b,
                    (0, 7) => a & b,
                    (1, 0) => a.wrapping_mul(b),
                    (1, 1) => (((a as i64 as i128) * (b as i64 as i128)) >> 64) as u64,
                    (1, 2) => (((a as i64 as i128) * (b as u128 as i128)) >> 64) as u64,
                    (1, 3) => (((a as u128) * (b as u128)) >> 64) as u64,
                    (1, 4) => {
                        if b == 0 {
                            u64::MAX
                        } else {
                            (a as i64).wrapping_div(b as i64) as u64
                        }
                    }
                    (1, 5) => a.checked_div(b).unwrap_or(u64::MAX),
                    (1, 6) => {
                        if b == 0 {
                            a
                        } else {
                            (a as i64).wrapping_rem(b as i64) as u64
                        }
                    }
                    (1, 7) => {
                        if b == 0 {
                            a
                        } else {
                            a % b
                        }
                    }
                    _ => return Err(illegal),
                };
            }
            0x3b => {
                let a = self.x[rs1];
                let b = self.x[rs2];
                let (a32, b32) = (a as i32, b as i32);
                self.x[rd] = match (funct7, funct3) {
                    (0, 0) => sext32(a.wrapping_add(b)),
                    (0x20, 0) => sext32(a.wrapping_sub(b)),
                    (0, 1) => sext32(((a as u32) << (b & 31)) as u64),
                    (0, 5) => sext32(((a as u32) >> (b & 31)) as u64),
                    (0x20, 5) => (a32 >> (b & 31)) as i64 as u64,
                    (1, 0) => a32.wrapping_mul(b32) as i64 as u64,
                    (1, 4) => {
                        if b32 == 0 {
                            u64::MAX
                        } else {
                            a32.wrapping_div(b32) as i64 as u64
                        }
                    }
                    (1, 5) => {
                        if b32 == 0 {
                            u64::MAX
                        } else {
                            sext32(((a as u32) / (b as u32)) as u64)
                        }
                    }
                    (1, 6) => {
                        if b32 == 0 {
                            a32 as i64 as u64
                        } else {
                            a32.wrapping_rem(b32) as i64 as u64
                        }
                    }
                    (1, 7) => {
                        if b32 == 0 {
                            a32 as i64 as u64
                        } else {
                            sext32(((a as u32) % (b as u32)) as u64)
                        }
                    }
                    _ => return Err(illegal),
                };
            }
            0x0f => match funct3 {
                0 | 1 => {} // FENCE, FENCE.I: one hart, no instruction cache
                _ => return Err(illegal),
            },
            0x73 => return self.system(ram, bus, insn, next),
            0x2f => self.amo(ram, bus, insn)?,
            0x07 => {
                self.require_fs(insn)?;
                let va = self.x[rs1].wrapping_add(imm_i(insn));
                let v = match funct3 {
                    2 => fpu::nan_box(self.load(ram, bus, va, 4)? as u32),
                    3 => self.load(ram, bus, va, 8)?,
                    _ => return Err(illegal),
                };
                self.fp.f[rd] = v;
                self.csr.mstatus |= MSTATUS_FS;
            }
            0x27 => {
                self.require_fs(insn)?;
                let va = self.x[rs1].wrapping_add(imm_s(insn));
                let v = self.fp.f[rs2];
                match funct3 {
                    2 => self.store(ram, bus, va, 4, v)?,
                    3 => self.store(ram, bus, va, 8, v)?,
                    _ => return Err(illegal),
                }
            }
            0x43 | 0x47 | 0x4b | 0x4f | 0x53 => {
                self.require_fs(insn)?;
                fpu::execute(&mut self.fp, &mut self.x, insn).map_err(|_| illegal)?;
                self.csr.mstatus |= MSTATUS_FS;
            }
            _ => return Err(illegal),
        }
        self.pc = next;
        Ok(())
    }

    #[inline(always)]
    fn require_fs(&self, insn: u32) -> Result<(), Trap> {
        if self.csr.mstatus & MSTATUS_FS == 0 {
            Err(Trap::illegal(insn as u64))
        } else {
            Ok(())
        }
    }

    fn amo<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, insn: u32) -> Result<(), Trap> {
        let rd = ((insn >> 7) & 31) as usize;
        let rs1 = ((insn >> 15) & 31) as usize;
        let rs2 = ((insn >> 20) & 31) as usize;
        let size = match (insn >> 12) & 7 {
            2 => 4u64,
            3 => 8u64,
            _ => return Err(Trap::illegal(insn as u64)),
        };
        let va = self.x[rs1];
        let src = self.x[rs2];
        let funct5 = insn >> 27;
        let fix = |v: u64| if size == 4 { sext32(v) } else { v };
        match funct5 {
            0b00010 => {
                if rs2 != 0 {
                    return Err(Trap::illegal(insn as u64));
                }
                if va & (size - 1) != 0 {
                    return Err(Trap::new(Exception::LoadMisaligned, va));
                }
                let v = self.load(ram, bus, va, size)?;
                self.reservation = Some(va);
                self.x[rd] = fix(v);
            }
            0b00011 => {
                if va & (size - 1) != 0 {
                    return Err(Trap::new(Exception::StoreMisaligned, va));
                }
                let ok = self.reservation == Some(va);
                self.reservation = None;
                if ok {
                    self.store(ram, bus, va, size, src)?;
                }
                self.x[rd] = (!ok) as u64;
            }
            _ => {
                let p = self.amo_ptr(ram, va, size)?;
                // SAFETY: amo_ptr returned an aligned pointer to `size` bytes of RAM.
                let old = unsafe {
                    if size == 4 {
                        sext32((p as *const u32).read() as u64)
                    } else {
                        (p as *const u64).read()
                    }
                };
                let (o, s) = if size == 4 {
                    (old, sext32(src))
                } else {
                    (old, src)
                };
                let new = match funct5 {
                    0b00001 => s,
                    0b00000 => o.wrapping_add(s),
                    0b00100 => o ^ s,
                    0b01100 => o & s,
                    0b01000 => o | s,
                    0b10000 => (o as i64).min(s as i64) as u64,
                    0b10100 => (o as i64).max(s as i64) as u64,
                    0b11000 => {
                        if size == 4 {
                            (o as u32).min(s as u32) as u64
                        } else {
                            o.min(s)
                        }
                    }
                    0b11100 => {
                        if size == 4 {
                            (o as u32).max(s as u32) as u64
                        } else {
                            o.max(s)
                        }
                    }
                    _ => return Err(Trap::illegal(insn as u64)),
                };
                // SAFETY: as above.
                unsafe {
                    if size == 4 {
                        (p as *mut u32).write(new as u32);
                    } else {
                        (p as *mut u64).write(new);
                    }
                }
                self.x[rd] = old;
            }
        }
        Ok(())
    }

    fn system<B: Bus>(
        &mut self,
        ram: &mut Ram,
        bus: &mut B,
        insn: u32,
        next: u64,
    ) -> Result<(), Trap> {
        let _ = ram;
        let rd = ((insn >> 7) & 31) as usize;
        let rs1 = ((insn >> 15) & 31) as usize;
        let funct3 = (insn >> 12) & 7;
        let illegal = Trap::illegal(insn as u64);
        if funct3 == 0 {
            match insn {
                0x0000_0073 => {
                    let cause = match self.prv {
                        Privilege::User => Exception::EcallFromU,
                        Privilege::Supervisor => Exception::EcallFromS,
                        Privilege::Machine => Exception::EcallFromM,
                    };
                    return Err(Trap::new(cause, 0));
                }
                0x0010_0073 => return Err(Trap::new(Exception::Breakpoint, self.pc)),
                0x1020_0073 => {
                    // SRET
                    if self.prv == Privilege::User
                        || (self.prv == Privilege::Supervisor
                            && self.csr.mstatus & MSTATUS_TSR != 0)
                    {
                        return Err(illegal);
                    }
                    let s = self.csr.mstatus;
                    let target = if s & MSTATUS_SPP != 0 {
                        Privilege::Supervisor
                    } else {
                        Privilege::User
                    };
                    let mut n = s & !(MSTATUS_SIE | MSTATUS_SPP);
                    if s & MSTATUS_SPIE != 0 {
                        n |= MSTATUS_SIE;
                    }
                    n |= MSTATUS_SPIE;
                    if target != Privilege::Machine {
                        n &= !MSTATUS_MPRV;
                    }
                    self.csr.mstatus = n;
                    self.prv = target;
                    self.pc = self.csr.sepc;
                    self.update_ctx();
                    self.sync = true;
                    return Ok(());
                }
                0x3020_0073 => {
                    // MRET
                    if self.prv != Privilege::Machine {
                        return Err(illegal);
                    }
                    let s = self.csr.mstatus;
                    let target = Privilege::from_bits(s >> MSTATUS_MPP_SHIFT);
                    let mut n = s & !(MSTATUS_MIE | MSTATUS_MPP);
                    if s & MSTATUS_MPIE != 0 {
                        n |= MSTATUS_MIE;
                    }
                    n |= MSTATUS_MPIE;
                    if target != Privilege::Machine {
                        n &= !MSTATUS_MPRV;
                    }
                    self.csr.mstatus = n;
                    self.prv = target;
                    self.pc = self.csr.mepc;
                    self.update_ctx();
                    self.sync = true;
                    return Ok(());
                }
                0x1050_0073 => {
                    // WFI
                    if self.prv == Privilege::User
                        || (self.prv == Privilege::Supervisor && self.csr.mstatus & MSTATUS_TW != 0)
                    {
                        return Err(illegal);
                    }
                    self.wfi = true;
                    self.sync = true;
                    self.pc = next;
                    return Ok(());
                }
                _ if insn >> 25 == 0x09 && rd == 0 => {
                    // SFENCE.VMA
                    if self.prv == Privilege::User
                        || (self.prv == Privilege::Supervisor
                            && self.csr.mstatus & MSTATUS_TVM != 0)
                    {
                        return Err(illegal);
                    }
                    self.tlb.flush_translated();
                    self.pc = next;
                    return Ok(());
                }
                _ => return Err(illegal),
            }
        }
        if funct3 == 4 {
            return Err(illegal);
        }
        let csr = (insn >> 20) as u16;
        let src = if funct3 & 4 != 0 {
            rs1 as u64
        } else {
            self.x[rs1]
        };
        let old = self.csr_read(csr, insn, bus)?;
        // A read-modify-write of mip uses the software-writable SEIP bit, not
        // the value ORed with the PLIC's line that a plain read returns
        // (privileged spec 3.1.9); otherwise the line would latch.
        let base = if csr == MIP {
            (old & !IP_SEIP) | (self.csr.mip & IP_SEIP)
        } else {
            old
        };
        let new = match funct3 & 3 {
            1 => Some(src),
            2 => (rs1 != 0).then_some(base | src),
            _ => (rs1 != 0).then_some(base & !src),
        };
        if let Some(v) = new {
            let effect = self.csr_write(csr, v, insn)?;
            if effect.flush_tlb {
                self.tlb.flush_translated();
            }
            self.update_ctx();
            self.sync = true;
        }
        self.x[rd] = old;
        self.pc = next;
        Ok(())
    }
}

fn trap_vector(tvec: u64, code: u64, interrupt: bool) -> u64 {
    let base = tvec & !3;
    if interrupt && tvec & 3 == 1 {
        base.wrapping_add(4 * code)
    } else {
        base
    }
}
