//! The hart's view of the physical world: guest RAM, which the hart reaches
//! directly through its TLB, and the [`Bus`] trait for everything else
//! (memory-mapped devices and guest time), which the board implements.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Guest physical RAM: one contiguous region starting at `base`.
///
/// Stored as `u64` words so that every naturally aligned access of any size
/// is aligned on the host too.
#[derive(Serialize, Deserialize)]
pub struct Ram {
    base: u64,
    words: Vec<u64>,
    /// One bit per 4 KiB page written since the last [`Ram::take_dirty`].
    /// Stores through the hart's TLB do not set it themselves: the hart marks
    /// a page when it creates a store translation for it, and drops its store
    /// translations whenever the bitmap is taken.
    #[serde(skip)]
    dirty: Vec<u64>,
    /// Which pages hold code the hart has pre-decoded, and the writes to them
    /// it has not yet seen (see [`CodePages`]). Not guest state.
    #[serde(skip)]
    pub(crate) code: CodePages,
    /// Identifies this object (not its contents), so that a hart notices when
    /// it is handed different RAM and drops host pointers into the old one.
    #[serde(skip, default = "fresh_id")]
    id: u64,
}

/// A process-wide unique, non-zero number. Only ever compared for equality
/// with another such number, never part of machine state.
pub(crate) fn fresh_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The RAM side of the hart's pre-decoded instruction pages.
///
/// The hart sets a page's bit before it uses decoded instructions from that
/// page, and from then on never writes the page through a store translation
/// (it holds none for a page whose bit is set). Every other write to RAM goes
/// through [`Ram::write_bytes`] or [`Ram::mark_dirty`], which clear the bit of
/// each written code page and queue the page number, so the hart drops the
/// stale decodings before it executes again. Writes through
/// [`Ram::as_bytes_mut`] cannot be tracked and disown all of them.
#[derive(Default)]
pub(crate) struct CodePages {
    /// The hart whose decodings the bits describe (0: none).
    pub owner: u64,
    /// One bit per 4 KiB page.
    pub bits: Vec<u64>,
    /// Page numbers written since their bit was set.
    pub written: Vec<u32>,
}

impl CodePages {
    /// Notes a write to page `page`.
    #[inline]
    fn note_write(&mut self, page: usize) {
        if let Some(w) = self.bits.get_mut(page / 64) {
            let bit = 1u64 << (page % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.written.push(page as u32);
            }
        }
    }

    #[inline(always)]
    pub fn contains(&self, page: usize) -> bool {
        self.bits
            .get(page / 64)
            .is_some_and(|w| w & (1 << (page % 64)) != 0)
    }

    #[inline]
    pub fn insert(&mut self, page: usize) {
        if let Some(w) = self.bits.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
    }

    /// Hands the tracking to hart `owner` with no page marked.
    pub fn reset(&mut self, owner: u64, pages: usize) {
        self.owner = owner;
        self.bits.clear();
        self.bits.resize(pages.div_ceil(64), 0);
        self.written.clear();
    }
}

impl Clone for Ram {
    fn clone(&self) -> Self {
        Ram {
            base: self.base,
            words: self.words.clone(),
            dirty: self.dirty.clone(),
            code: CodePages::default(),
            id: fresh_id(),
        }
    }
}

impl std::fmt::Debug for Ram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ram")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &self.size())
            .finish()
    }
}

impl Ram {
    /// Zero-filled RAM of `size` bytes (rounded up to 8) at physical `base`.
    pub fn new(base: u64, size: u64) -> Self {
        let pages = size.div_ceil(4096);
        Ram {
            base,
            words: vec![0; size.div_ceil(8) as usize],
            dirty: vec![u64::MAX; pages.div_ceil(64) as usize],
            code: CodePages::default(),
            id: fresh_id(),
        }
    }

    /// Marks the page holding `paddr` as written.
    #[inline]
    pub fn mark_dirty(&mut self, paddr: u64) {
        let page = (paddr.wrapping_sub(self.base) >> 12) as usize;
        if let Some(w) = self.dirty.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
        self.code.note_write(page);
    }

    /// Identity of this RAM object (see the `id` field).
    #[inline(always)]
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Number of 4 KiB pages (the last one possibly partial).
    pub(crate) fn pages(&self) -> usize {
        self.size().div_ceil(4096) as usize
    }

    /// Returns the dirty-page bitmap (bit i = page i) and clears it. The
    /// caller must also flush the hart's store translations
    /// ([`crate::Hart::flush_store_tlb`]) so later stores are seen.
    pub fn take_dirty(&mut self) -> Vec<u64> {
        let pages = self.size().div_ceil(4096);
        let fresh = vec![0; pages.div_ceil(64) as usize];
        let mut d = std::mem::replace(&mut self.dirty, fresh);
        d.resize(pages.div_ceil(64) as usize, u64::MAX); // after deserialisation: all dirty
        d
    }

    pub fn base(&self) -> u64 {
        self.base
    }

    pub fn size(&self) -> u64 {
        self.words.len() as u64 * 8
    }

    /// Offset of `[paddr, paddr+len)` inside RAM, if it lies wholly inside.
    #[inline(always)]
    pub fn offset_of(&self, paddr: u64, len: u64) -> Option<usize> {
        let off = paddr.wrapping_sub(self.base);
        if off < self.size() && len <= self.size() - off {
            Some(off as usize)
        } else {
            None
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: u64 has no padding and any byte pattern is a valid u8.
        unsafe {
            std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.words.len() * 8)
        }
    }

    /// Mutable access to all of RAM. Writes through it are not tracked: the
    /// hart will re-decode every instruction (but does not otherwise notice).
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.code.reset(0, 0);
        self.bytes_mut()
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; the borrow of self is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.words.len() * 8)
        }
    }

    /// Copies `data` to physical address `paddr`; false if it does not fit.
    pub fn write_bytes(&mut self, paddr: u64, data: &[u8]) -> bool {
        match self.offset_of(paddr, data.len() as u64) {
            Some(off) => {
                self.bytes_mut()[off..off + data.len()].copy_from_slice(data);
                let (first, last) = (off >> 12, (off + data.len().max(1) - 1) >> 12);
                for page in first..=last {
                    if let Some(w) = self.dirty.get_mut(page / 64) {
                        *w |= 1 << (page % 64);
                    }
                    self.code.note_write(page);
                }
                true
            }
            None => false,
        }
    }

    /// Reads `buf.len()` bytes at `paddr`; false if out of range.
    pub fn read_bytes(&self, paddr: u64, buf: &mut [u8]) -> bool {
        match self.offset_of(paddr, buf.len() as u64) {
            Some(off) => {
                buf.copy_from_slice(&self.as_bytes()[off..off + buf.len()]);
                true
            }
            None => false,
        }
    }

    #[inline(always)]
    pub(crate) fn host_ptr(&mut self) -> *mut u8 {
        self.words.as_mut_ptr() as *mut u8
    }
}

/// Everything the hart reaches that is not RAM. Implemented by the board.
///
/// Accesses are naturally aligned and `size` is 1, 2, 4 or 8. A `None` or
/// `false` return means no device answers at that address: the hart raises an
/// access fault.
pub trait Bus {
    fn mmio_read(&mut self, paddr: u64, size: u8, icount: u64) -> Option<u64>;
    fn mmio_write(&mut self, paddr: u64, size: u8, value: u64, icount: u64) -> bool;
    /// Guest time (the `time` CSR and CLINT `mtime`) at step `icount`. Must be
    /// a pure function of machine state and `icount`.
    fn time(&self, icount: u64) -> u64;
}
