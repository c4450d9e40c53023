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
        Ram {
            base,
            words: vec![0; size.div_ceil(8) as usize],
        }
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
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.words.len() * 8) }
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
