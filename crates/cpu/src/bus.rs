//! The hart's view of the physical world: guest RAM, which the hart reaches
//! directly through its TLB, and the [`Bus`] trait for everything else
//! (memory-mapped devices and guest time), which the board implements.

use serde::{Deserialize, Serialize};

/// Guest physical RAM: one contiguous region starting at `base`.
///
/// Stored as `u64` words so that every naturally aligned access of any size
/// is aligned on the host too.
#[derive(Clone, Serialize, Deserialize)]
pub struct Ram {
    base: u64,
    words: Vec<u64>,
    /// One bit per 4 KiB page written since the last [`Ram::take_dirty`].
    /// Stores through the hart's TLB do not set it themselves: the hart marks
    /// a page when it creates a store translation for it, and drops its store
    /// translations whenever the bitmap is taken.
    #[serde(skip)]
    dirty: Vec<u64>,
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
        }
    }

    /// Marks the page holding `paddr` as written.
    #[inline]
    pub fn mark_dirty(&mut self, paddr: u64) {
        let page = (paddr.wrapping_sub(self.base) >> 12) as usize;
        if let Some(w) = self.dirty.get_mut(page / 64) {
            *w |= 1 << (page % 64);
        }
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

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above; the borrow of self is exclusive.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.words.len() * 8)
        }
    }

    /// Copies `data` to physical address `paddr`; false if it does not fit.
    pub fn write_bytes(&mut self, paddr: u64, data: &[u8]) -> bool {
        match self.offset_of(paddr, data.len() as u64) {
            Some(off) => {
                self.as_bytes_mut()[off..off + data.len()].copy_from_slice(data);
                let (first, last) = (off >> 12, (off + data.len().max(1) - 1) >> 12);
                for page in first..=last {
                    if let Some(w) = self.dirty.get_mut(page / 64) {
                        *w |= 1 << (page % 64);
                    }
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
