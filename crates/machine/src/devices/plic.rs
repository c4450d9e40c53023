//! The platform-level interrupt controller (SiFive PLIC, laid out as in
//! QEMU's `virt` machine). It owns, for every source 1..PLIC_SOURCES-1, the
//! priority, the input level the board last drove, and whether the source is
//! being served (claimed but not yet completed); and, for each of the two
//! contexts of the single hart (0 = M-mode, 1 = S-mode), the enable bits and
//! the priority threshold. Sources are level-triggered: a source is pending
//! while its level is high and it is not in service, so a claim hides it
//! until the matching completion, after which a still-high level pends it
//! again. The board turns `context_pending(0)` into mip.MEIP and
//! `context_pending(1)` into mip.SEIP.

use super::MmioDevice;
use crate::layout::PLIC_SOURCES;

/// Number of contexts: M-mode and S-mode of hart 0.
pub const PLIC_CONTEXTS: usize = 2;
/// Priorities are 3 bits wide (0 = never, 1..7), as in QEMU `virt`.
pub const PLIC_PRIORITY_MASK: u32 = 0x7;

const PRIORITY_BASE: u64 = 0x0;
const PENDING_BASE: u64 = 0x1000;
const ENABLE_BASE: u64 = 0x2000;
const ENABLE_STRIDE: u64 = 0x80;
const CONTEXT_BASE: u64 = 0x20_0000;
const CONTEXT_STRIDE: u64 = 0x1000;

/// 32-bit words needed for one bit per source id (including id 0).
const WORDS: usize = PLIC_SOURCES.div_ceil(32) as usize;

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plic {
    /// Priority per source id (index 0 unused, always 0).
    priority: Vec<u32>,
    /// Input level per source, one bit per id.
    level: Vec<u32>,
    /// Claimed-but-not-completed sources, one bit per id.
    claimed: Vec<u32>,
    /// Enable bits per context, `WORDS` words each.
    enable: Vec<u32>,
    /// Priority threshold per context.
    threshold: Vec<u32>,
}

impl Default for Plic {
    fn default() -> Self {
        Self::new()
    }
}

/// Bits of word `w` that name real sources (1..PLIC_SOURCES-1).
fn valid_mask(w: usize) -> u32 {
    let mut m = u32::MAX;
    if w == 0 {
        m &= !1;
    }
    let first = (w as u32) * 32;
    if first + 32 > PLIC_SOURCES {
        let n = PLIC_SOURCES.saturating_sub(first);
        m &= if n == 0 { 0 } else { u32::MAX >> (32 - n) };
    }
    m
}

impl Plic {
    pub fn new() -> Self {
        Plic {
            priority: vec![0; PLIC_SOURCES as usize],
            level: vec![0; WORDS],
            claimed: vec![0; WORDS],
            enable: vec![0; WORDS * PLIC_CONTEXTS],
            threshold: vec![0; PLIC_CONTEXTS],
        }
    }

    /// Whether restored state has the register arrays [`Plic::new`] makes.
    pub fn check(&self) -> Result<(), String> {
        let fresh = Plic::new();
        let shapes = [
            ("priority", self.priority.len(), fresh.priority.len()),
            ("level", self.level.len(), fresh.level.len()),
            ("claimed", self.claimed.len(), fresh.claimed.len()),
            ("enable", self.enable.len(), fresh.enable.len()),
            ("threshold", self.threshold.len(), fresh.threshold.len()),
        ];
        for (what, found, want) in shapes {
            if found != want {
                return Err(format!("PLIC {what}: {found} entries, not {want}"));
            }
        }
        Ok(())
    }

    fn valid_source(source: u32) -> bool {
        source != 0 && source < PLIC_SOURCES
    }

    /// Drives the input line of `source`. Ids outside 1..PLIC_SOURCES-1 are
    /// ignored.
    pub fn set_level(&mut self, source: u32, level: bool) {
        if !Self::valid_source(source) {
            return;
        }
        let (w, b) = ((source / 32) as usize, source % 32);
        if level {
            self.level[w] |= 1 << b;
        } else {
            self.level[w] &= !(1 << b);
        }
    }

    /// The level the board last drove on `source`.
    pub fn level(&self, source: u32) -> bool {
        Self::valid_source(source) && self.level[(source / 32) as usize] & (1 << (source % 32)) != 0
    }

    /// Pending bits of word `w`: level high and not in service.
    fn pending_word(&self, w: usize) -> u32 {
        self.level[w] & !self.claimed[w] & valid_mask(w)
    }

    /// Whether `source` is pending (what the pending array reads).
    pub fn is_pending(&self, source: u32) -> bool {
        Self::valid_source(source)
            && self.pending_word((source / 32) as usize) & (1 << (source % 32)) != 0
    }

    /// Whether `source` has been claimed and not yet completed.
    pub fn is_claimed(&self, source: u32) -> bool {
        Self::valid_source(source)
            && self.claimed[(source / 32) as usize] & (1 << (source % 32)) != 0
    }

    /// The source a claim by `ctx` would return now (0 if none): the
    /// highest-priority pending source enabled for `ctx` whose priority is
    /// above the context's threshold; ties go to the lowest id.
    pub fn best_source(&self, ctx: usize) -> u32 {
        if ctx >= PLIC_CONTEXTS {
            return 0;
        }
        let mut best = 0u32;
        let mut best_prio = self.threshold[ctx];
        for w in 0..WORDS {
            let mut bits = self.pending_word(w) & self.enable[ctx * WORDS + w];
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                let id = w as u32 * 32 + b;
                let prio = self.priority[id as usize];
                if prio > best_prio {
                    best = id;
                    best_prio = prio;
                }
            }
        }
        best
    }

    /// Whether context `ctx` has an interrupt to take (drives MEIP / SEIP).
    pub fn context_pending(&self, ctx: usize) -> bool {
        self.best_source(ctx) != 0
    }

    /// Reads the claim register of `ctx`: returns the best source and puts it
    /// in service (it stops being pending until completed).
    pub fn claim(&mut self, ctx: usize) -> u32 {
        let id = self.best_source(ctx);
        if id != 0 {
            self.claimed[(id / 32) as usize] |= 1 << (id % 32);
        }
        id
    }

    /// Writes the complete register of `ctx`. As the PLIC spec says, a
    /// completion naming a source not enabled for that context is ignored.
    pub fn complete(&mut self, ctx: usize, source: u32) {
        if ctx >= PLIC_CONTEXTS || !Self::valid_source(source) {
            return;
        }
        let (w, b) = ((source / 32) as usize, source % 32);
        if self.enable[ctx * WORDS + w] & (1 << b) != 0 {
            self.claimed[w] &= !(1 << b);
        }
    }

    fn read32(&mut self, offset: u64) -> u32 {
        match offset {
            o if o < PENDING_BASE => {
                let id = (o - PRIORITY_BASE) / 4;
                self.priority.get(id as usize).copied().unwrap_or(0)
            }
            o if o < ENABLE_BASE => {
                let w = ((o - PENDING_BASE) / 4) as usize;
                if w < WORDS {
                    self.pending_word(w)
                } else {
                    0
                }
            }
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let w = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                if ctx < PLIC_CONTEXTS && w < WORDS {
                    self.enable[ctx * WORDS + w]
                } else {
                    0
                }
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= PLIC_CONTEXTS {
                    return 0;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => self.threshold[ctx],
                    4 => self.claim(ctx),
                    _ => 0,
                }
            }
        }
    }

    fn write32(&mut self, offset: u64, value: u32) {
        match offset {
            o if o < PENDING_BASE => {
                let id = ((o - PRIORITY_BASE) / 4) as u32;
                if Self::valid_source(id) {
                    self.priority[id as usize] = value & PLIC_PRIORITY_MASK;
                }
            }
            // The pending array is read-only.
            o if o < ENABLE_BASE => {}
            o if o < CONTEXT_BASE => {
                let ctx = ((o - ENABLE_BASE) / ENABLE_STRIDE) as usize;
                let w = (((o - ENABLE_BASE) % ENABLE_STRIDE) / 4) as usize;
                if ctx < PLIC_CONTEXTS && w < WORDS {
                    self.enable[ctx * WORDS + w] = value & valid_mask(w);
                }
            }
            o => {
                let ctx = ((o - CONTEXT_BASE) / CONTEXT_STRIDE) as usize;
                if ctx >= PLIC_CONTEXTS {
                    return;
                }
                match (o - CONTEXT_BASE) % CONTEXT_STRIDE {
                    0 => self.threshold[ctx] = value & PLIC_PRIORITY_MASK,
                    4 => self.complete(ctx, value),
                    _ => {}
                }
            }
        }
    }
}

impl MmioDevice for Plic {
    /// Registers are 32 bits wide. An 8-byte access is split into two
    /// 32-bit accesses (low word first); narrower reads return the bytes
    /// of the containing register, narrower writes are ignored.
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
                let shift = (offset & 3) * 8;
                let mask = if size == 1 { 0xff } else { 0xffff };
                (word >> shift) & mask
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

    // Found by fuzzing (fuzz/regressions/snapshot/crash-4fefd352…): a
    // snapshot with a short PLIC level array panicked at the first
    // interrupt line change. Restored boards are checked on load now.
    #[test]
    fn restored_arrays_are_checked() {
        let mut p = Plic::new();
        assert!(p.check().is_ok());
        p.level.truncate(1);
        assert!(p.check().is_err());
    }

    const CLAIM0: u64 = CONTEXT_BASE + 4;
    const CLAIM1: u64 = CONTEXT_BASE + CONTEXT_STRIDE + 4;
    const THRESH1: u64 = CONTEXT_BASE + CONTEXT_STRIDE;

    fn enable(p: &mut Plic, ctx: u64, src: u32) {
        let off = ENABLE_BASE + ctx * ENABLE_STRIDE + (src as u64 / 32) * 4;
        let cur = p.read(off, 4);
        p.write(off, 4, cur | (1 << (src % 32)));
    }

    fn prio(p: &mut Plic, src: u32, v: u32) {
        p.write(PRIORITY_BASE + src as u64 * 4, 4, v as u64);
    }

    #[test]
    fn priority_zero_never_interrupts() {
        let mut p = Plic::new();
        enable(&mut p, 1, 10);
        p.set_level(10, true);
        assert!(!p.context_pending(1));
        assert_eq!(p.read(CLAIM1, 4), 0);
        prio(&mut p, 10, 1);
        assert!(p.context_pending(1));
        assert!(!p.context_pending(0), "not enabled for M context");
    }

    #[test]
    fn claim_complete_level_semantics() {
        let mut p = Plic::new();
        prio(&mut p, 10, 1);
        enable(&mut p, 1, 10);
        p.set_level(10, true);
        assert_eq!(p.read(PENDING_BASE, 4), 1 << 10);
        assert_eq!(p.read(CLAIM1, 4), 10);
        assert!(!p.context_pending(1));
        assert_eq!(p.read(PENDING_BASE, 4), 0);
        // Still high but in service: no re-pend, a second claim sees nothing.
        assert_eq!(p.read(CLAIM1, 4), 0);
        // Completion with the level still high pends again.
        p.write(CLAIM1, 4, 10);
        assert!(p.context_pending(1));
        assert_eq!(p.read(CLAIM1, 4), 10);
        // Level drops during service: nothing after completion.
        p.set_level(10, false);
        p.write(CLAIM1, 4, 10);
        assert!(!p.context_pending(1));
        assert_eq!(p.read(PENDING_BASE, 4), 0);
    }

    #[test]
    fn level_drop_before_claim_unpends() {
        let mut p = Plic::new();
        prio(&mut p, 3, 2);
        enable(&mut p, 1, 3);
        p.set_level(3, true);
        assert!(p.context_pending(1));
        p.set_level(3, false);
        assert!(!p.context_pending(1));
        assert_eq!(p.read(CLAIM1, 4), 0);
    }

    #[test]
    fn highest_priority_then_lowest_id() {
        let mut p = Plic::new();
        for s in [1, 5, 40, 70] {
            enable(&mut p, 1, s);
            p.set_level(s, true);
        }
        prio(&mut p, 1, 2);
        prio(&mut p, 5, 6);
        prio(&mut p, 40, 6);
        prio(&mut p, 70, 7);
        assert_eq!(p.read(CLAIM1, 4), 70);
        assert_eq!(p.read(CLAIM1, 4), 5);
        assert_eq!(p.read(CLAIM1, 4), 40);
        assert_eq!(p.read(CLAIM1, 4), 1);
        assert_eq!(p.read(CLAIM1, 4), 0);
    }

    #[test]
    fn threshold_masks_lower_or_equal() {
        let mut p = Plic::new();
        prio(&mut p, 10, 3);
        enable(&mut p, 1, 10);
        p.set_level(10, true);
        p.write(THRESH1, 4, 3);
        assert_eq!(p.read(THRESH1, 4), 3);
        assert!(!p.context_pending(1));
        assert_eq!(p.read(CLAIM1, 4), 0);
        p.write(THRESH1, 4, 2);
        assert!(p.context_pending(1));
    }

    #[test]
    fn contexts_are_independent_and_claim_is_global() {
        let mut p = Plic::new();
        prio(&mut p, 10, 1);
        enable(&mut p, 0, 10);
        enable(&mut p, 1, 10);
        p.set_level(10, true);
        assert!(p.context_pending(0) && p.context_pending(1));
        assert_eq!(p.read(CLAIM0, 4), 10);
        assert!(!p.context_pending(1));
        // Completion from a context where the source is not enabled is ignored.
        p.write(ENABLE_BASE + ENABLE_STRIDE, 4, 0);
        p.write(CLAIM1, 4, 10);
        assert!(p.is_claimed(10));
        p.write(CLAIM0, 4, 10);
        assert!(!p.is_claimed(10));
        assert!(p.context_pending(0));
        assert!(!p.context_pending(1));
    }

    #[test]
    fn register_masks_and_readback() {
        let mut p = Plic::new();
        prio(&mut p, 0, 5);
        assert_eq!(p.read(0, 4), 0, "source 0 has no priority");
        prio(&mut p, 7, 0xffff_ffff);
        assert_eq!(p.read(7 * 4, 4), 7);
        p.write(ENABLE_BASE, 4, 0xffff_ffff);
        assert_eq!(p.read(ENABLE_BASE, 4), 0xffff_fffe);
        // Last word: ids 64..95 all exist for PLIC_SOURCES = 96.
        p.write(ENABLE_BASE + 8, 4, 0xffff_ffff);
        assert_eq!(p.read(ENABLE_BASE + 8, 4), valid_mask(2) as u64);
        // Pending is read-only.
        p.write(PENDING_BASE, 4, 0xffff_ffff);
        assert_eq!(p.read(PENDING_BASE, 4), 0);
        // Out-of-range sources are ignored.
        let before = p.clone();
        p.set_level(0, true);
        p.set_level(PLIC_SOURCES, true);
        p.set_level(u32::MAX, true);
        assert_eq!(p, before);
    }

    #[test]
    fn wide_and_narrow_accesses() {
        let mut p = Plic::new();
        p.write(4, 8, (5 << 32) | 3);
        assert_eq!(p.read(4, 4), 3);
        assert_eq!(p.read(8, 4), 5);
        assert_eq!(p.read(4, 8), (5 << 32) | 3);
        assert_eq!(p.read(4, 1), 3);
        p.write(4, 1, 7);
        assert_eq!(p.read(4, 4), 3, "byte writes ignored");
    }

    #[test]
    fn no_panic_anywhere() {
        let mut p = Plic::new();
        let offsets = [
            0u64,
            3,
            0xffc,
            0xfff,
            0x1000,
            0x1ffc,
            0x2000,
            0x2080,
            0x2100,
            0x1f_fffc,
            0x20_0000,
            0x20_0004,
            0x20_0008,
            0x20_1004,
            0x20_2004,
            0x5f_fffc,
            0x60_0000,
            u64::MAX,
            u64::MAX - 3,
        ];
        for &o in &offsets {
            for size in [0u8, 1, 2, 3, 4, 8, 16, 255] {
                p.read(o, size);
                p.write(o, size, u64::MAX);
            }
        }
        for s in 0..200 {
            p.set_level(s, true);
            p.is_pending(s);
            p.is_claimed(s);
            p.level(s);
        }
        for ctx in 0..5 {
            p.context_pending(ctx);
            p.claim(ctx);
            p.complete(ctx, 1);
        }
    }

    #[test]
    fn snapshot_is_plain_state() {
        let mut p = Plic::new();
        prio(&mut p, 10, 1);
        enable(&mut p, 1, 10);
        p.set_level(10, true);
        let mut q = p.clone();
        assert_eq!(p.read(CLAIM1, 4), 10);
        assert_ne!(p, q);
        assert_eq!(q.read(CLAIM1, 4), 10);
        assert_eq!(p, q);
    }
}
