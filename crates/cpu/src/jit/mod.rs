//! The translating execution engine: guest basic blocks within one RAM page
//! become x86-64 code, run behind the same [`Hart::run`] contract as the
//! interpreter and observably identical to it.
//!
//! What it owns: the per-hart translation cache ([`JitCache`]: an executable
//! arena and, per RAM page holding decoded instructions, a table from page
//! offset to translated block) and the dispatch loop that enters and leaves
//! translated code ([`Hart::run_jit`]).
//!
//! A block is a run of decoded instructions of one page (the decodings of
//! the interpreter's [`DecodedPage`], so both engines see the same bits) up
//! to and including the first control transfer, stopping before anything
//! the translator leaves to the interpreter: SYSTEM (CSRs, traps, xRET,
//! WFI, SFENCE.VMA), atomics, floating point, illegal encodings, and the
//! page-straddling last slots. Those run as single interpreter steps, so
//! traps, interrupts and `sync` keep exactly the interpreter's semantics.
//! Translated code is position-independent with respect to the virtual
//! address (the page base is a register), so a table belongs to a physical
//! page exactly like its decodings, and is dropped whenever they are (a
//! write to the page, `Ram::as_bytes_mut`, another `Ram`, `flush_caches`,
//! restore). Nothing in here is machine state.
//!
//! Exactness: see `emit.rs` for the step budget. Translated code never
//! walks page tables, never touches a device and never writes a page holding
//! decoded instructions (the store TLB maps none), so everything that can
//! invalidate a translation or change the interrupt state happens in the
//! interpreter, between blocks.
//!
//! [`DecodedPage`]: crate::decode::DecodedPage

mod code;
mod emit;

use std::sync::atomic::{AtomicU8, Ordering};

use crate::bus::{Bus, Ram};
use crate::decode::Kind;
use crate::hart::Hart;
use crate::mmu::{TlbEntry, TLB_ENTRIES};

/// Which engine executes instructions: a host setting, never machine state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Engine {
    /// The decoded-page interpreter (the reference).
    Interp,
    /// The translator, with the interpreter for what it does not translate
    /// (on a host other than x86-64, the interpreter for everything).
    #[default]
    Jit,
}

/// The engine new and restored harts start with: the host's `--cpu`
/// setting, process-wide (0: interpreter, 1: translator, the default).
static DEFAULT_ENGINE: AtomicU8 = AtomicU8::new(1);

/// Sets the engine every hart created or deserialised from now on uses
/// (a host setting: never part of machine state, snapshots or logs).
pub fn set_default_engine(engine: Engine) {
    DEFAULT_ENGINE.store(engine as u8, Ordering::Relaxed);
}

/// The engine set by [`set_default_engine`] (the translator unless set).
pub fn default_engine() -> Engine {
    match DEFAULT_ENGINE.load(Ordering::Relaxed) {
        0 => Engine::Interp,
        _ => Engine::Jit,
    }
}

impl std::str::FromStr for Engine {
    type Err = String;
    fn from_str(s: &str) -> Result<Engine, String> {
        match s {
            "interp" => Ok(Engine::Interp),
            "jit" => Ok(Engine::Jit),
            _ => Err(format!("unknown CPU engine {s:?} (interp or jit)")),
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Interp => "interp",
            Engine::Jit => "jit",
        })
    }
}

/// Leaves translated code: go on at `Ctx::pc` (no block there yet).
pub(crate) const EXIT_PC: u32 = 0;
/// Leaves translated code: the interpreter executes one step at `Ctx::pc`.
pub(crate) const EXIT_STEP: u32 = 1;
/// Leaves translated code: the block at `Ctx::pc` needs more budget than is left.
pub(crate) const EXIT_BUDGET: u32 = 2;

/// The context translated code runs with (`rbp`), filled on every entry.
#[repr(C)]
pub(crate) struct Ctx {
    x: *mut u64,
    load_tlb: *const TlbEntry,
    store_tlb: *const TlbEntry,
    fetch_tlb: *const TlbEntry,
    /// Virtual address of the entered block's page.
    vbase: u64,
    /// Steps left before the limit (in and out).
    budget: u64,
    /// The pc on leaving.
    pc: u64,
    /// `JitCache::tables`: one entry table (or null) per RAM page.
    tables: *const Option<Box<Table>>,
    ntables: u64,
    /// Host address of RAM page 0.
    ram_host: u64,
}

/// Entry addresses of the translated blocks of one page, per 2-byte offset
/// (0: none).
pub(crate) type Table = [usize; 2048];

/// Arena size: room for some 100 000 blocks; when full, all are dropped.
const ARENA_BYTES: usize = 32 << 20;
/// Most instructions in one block.
const MAX_BLOCK: usize = 128;

/// The hart's translations (derived state: a copy starts empty).
#[derive(Default)]
pub(crate) struct JitCache {
    arena: Option<(code::Arena, emit::Stubs)>,
    /// One entry table per RAM page, parallel to the decoded pages.
    pub tables: Vec<Option<Box<Table>>>,
    /// The arena could not be made: the interpreter runs everything.
    failed: bool,
    pub stats: JitStats,
}

/// Counters of the translator's work: host-side figures for tests and
/// benchmarks, never machine state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct JitStats {
    /// Blocks translated.
    pub blocks: u64,
    /// Entries into translated code from the dispatcher.
    pub entries: u64,
    /// Steps taken in translated code.
    pub steps: u64,
    /// Times every translation was dropped because the arena was full.
    pub flushes: u64,
}

impl JitCache {
    /// Drops every table and sizes the list for `pages` pages.
    pub fn clear(&mut self, pages: usize) {
        self.tables.clear();
        self.tables.resize_with(pages, || None);
        if let Some((a, _)) = &mut self.arena {
            a.reset();
        }
    }

    /// Drops every table, keeping the list's size.
    pub fn drop_all(&mut self) {
        let n = self.tables.len();
        self.clear(n);
    }

    /// Drops the table of page `index`.
    #[inline]
    pub fn drop_page(&mut self, index: usize) {
        if let Some(t) = self.tables.get_mut(index) {
            *t = None;
        }
    }

    fn arena(&mut self) -> Option<&mut (code::Arena, emit::Stubs)> {
        if self.arena.is_none() && !self.failed {
            if !cfg!(target_arch = "x86_64") {
                self.failed = true; // translated code is x86-64
                return None;
            }
            match make_arena() {
                Some(a) => self.arena = Some(a),
                None => self.failed = true,
            }
        }
        self.arena.as_mut()
    }
}

fn make_arena() -> Option<(code::Arena, emit::Stubs)> {
    let mut arena = code::Arena::new(ARENA_BYTES).ok()?;
    let (bytes, stubs) = emit::stubs(arena.next_addr()).ok()?;
    arena.push(&bytes)?;
    arena.seal_prefix();
    Some((arena, stubs))
}

impl Clone for JitCache {
    fn clone(&self) -> Self {
        JitCache::default() // a cache: a copy starts cold
    }
}

impl Hart {
    /// What the translator has done so far (zero under the interpreter).
    /// Reset whenever the hart's caches are.
    pub fn jit_stats(&self) -> JitStats {
        self.icache.jit.stats
    }

    /// Runs at least one step with the translator (see the module header);
    /// the counterpart of `run_page`, with the same contract.
    pub(crate) fn run_jit<B: Bus>(&mut self, ram: &mut Ram, bus: &mut B, limit: u64) {
        let pc = self.pc;
        let off = pc & 0xfff;
        if off > 0xffc {
            return self.run_page(ram, bus, limit);
        }
        let vpn = pc >> 12;
        let e = self.tlb.fetch[self.fetch_ctx & 3][(vpn as usize) % TLB_ENTRIES];
        if e.vpn != vpn {
            // The interpreter walks, faults or steps; next time it hits.
            return self.run_page(ram, bus, limit.min(self.icount + 1));
        }
        if !ram.code.written.is_empty() {
            self.drop_written(ram, usize::MAX);
        }
        let host_page = ((vpn << 12) as usize).wrapping_add(e.addend);
        let index = host_page.wrapping_sub(ram.host_ptr() as usize) >> 12;
        if index >= self.icache.pages.len()
            || self.icache.jit.tables.len() != self.icache.pages.len()
        {
            return self.run_page(ram, bus, limit);
        }
        let slot = off as usize / 2;
        let mut block = match &self.icache.jit.tables[index] {
            Some(t) => t[slot],
            None => 0,
        };
        if block == 0 {
            block = self.translate_block(ram, index, off as u32);
            if block == 0 {
                return self.run_page(ram, bus, limit.min(self.icount + 1));
            }
        }
        let Some((arena, stubs)) = self.icache.jit.arena.as_ref() else {
            return self.run_page(ram, bus, limit);
        };
        let fctx = self.fetch_ctx & 3;
        let dctx = self.data_ctx & 3;
        let mut ctx = Ctx {
            x: self.x.as_mut_ptr(),
            load_tlb: self.tlb.load[dctx].as_ptr(),
            store_tlb: self.tlb.store[dctx].as_ptr(),
            fetch_tlb: self.tlb.fetch[fctx].as_ptr(),
            vbase: vpn << 12,
            budget: limit - self.icount,
            pc,
            tables: self.icache.jit.tables.as_ptr(),
            ntables: self.icache.jit.tables.len() as u64,
            ram_host: ram.host_ptr() as u64,
        };
        // SAFETY: `block` and the stubs were translated into this arena by
        // `translate` since its last reset (every reset drops all tables);
        // `ctx` points at this hart's register file and TLB tables and at the
        // entry tables, none of which is touched from Rust until `enter`
        // returns; translated code reaches RAM only through TLB entries,
        // which map whole pages of `ram`.
        let reason = unsafe { arena.enter(stubs.entry as *const u8, &mut ctx, block as *const u8) };
        let icount = limit - ctx.budget;
        self.icache.jit.stats.entries += 1;
        self.icache.jit.stats.steps += icount - self.icount;
        self.icount = icount;
        self.pc = ctx.pc;
        match reason {
            EXIT_STEP if self.icount < limit => self.run_page(ram, bus, self.icount + 1),
            EXIT_BUDGET => self.run_page(ram, bus, limit),
            _ => {}
        }
    }

    /// Translates the block at offset `off` of RAM page `index` (whose
    /// decoded page is in the cache or allocated here) and enters it in the
    /// page's table. Returns its address, or 0 if its first instruction is
    /// not translated.
    #[cold]
    #[inline(never)]
    fn translate_block(&mut self, ram: &mut Ram, index: usize, off: u32) -> usize {
        let mut page = match self.icache.pages[index].take() {
            Some(p) => p,
            None => self.icache.alloc(),
        };
        let mut insns = Vec::new();
        let mut o = off;
        let end = loop {
            let i = (o / 2) as usize;
            if page[i].kind() == Kind::Undecoded {
                page[i] = self.decode_at(ram, index, o as u64);
            }
            let op = page[i];
            let kind = op.kind();
            if !emit::translatable(kind) {
                break emit::End::Step(o);
            }
            if insns.len() == MAX_BLOCK {
                break emit::End::Chain(o);
            }
            let len = if matches!(op.code as u8 & 1, 1) { 4 } else { 2 };
            insns.push(emit::Insn { off: o, len, op });
            if emit::is_control(kind) {
                break emit::End::Control;
            }
            o += len;
        };
        // `alloc` may have dropped every page (and so every table) to make room.
        self.icache.pages[index] = Some(page);
        if insns.is_empty() {
            return 0;
        }
        if self.icache.jit.tables.len() != self.icache.pages.len() {
            let n = self.icache.pages.len();
            self.icache.jit.clear(n);
        }
        let table_addr = {
            let t = self.icache.jit.tables[index].get_or_insert_with(|| Box::new([0; 2048]));
            t.as_ptr() as usize
        };
        let Some((arena, stubs)) = self.icache.jit.arena() else {
            return 0;
        };
        let stubs = *stubs;
        let mut code = emit::block(arena.next_addr(), &stubs, table_addr, &insns, end);
        if matches!(&code, Ok(c) if c.len() > arena.free()) {
            // Full: drop every translation, then assemble again at the start.
            self.icache.jit.drop_all();
            self.icache.jit.stats.flushes += 1;
            let t = self.icache.jit.tables[index].get_or_insert_with(|| Box::new([0; 2048]));
            let table_addr = t.as_ptr() as usize;
            let Some((arena, _)) = self.icache.jit.arena.as_mut() else {
                return 0;
            };
            code = emit::block(arena.next_addr(), &stubs, table_addr, &insns, end);
        }
        let Ok(code) = code else {
            return 0;
        };
        let Some((arena, _)) = self.icache.jit.arena.as_mut() else {
            return 0;
        };
        let Some(addr) = arena.push(&code) else {
            return 0;
        };
        let addr = addr as usize;
        self.icache.jit.stats.blocks += 1;
        if let Some(t) = self.icache.jit.tables[index].as_mut() {
            t[(off / 2) as usize] = addr;
        }
        addr
    }
}
