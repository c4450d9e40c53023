//! The translator's executable memory and the one call into it: all of the
//! JIT's `unsafe` lives here.
//!
//! [`Arena`] is one fixed-size anonymous mapping, readable, writable and
//! executable, that translated blocks are appended to and never moved within
//! (blocks and the per-page entry tables hold absolute addresses into it).
//! When it is full the owner drops every translation and calls
//! [`Arena::reset`]. [`Arena::enter`] runs translated code. The arena is a
//! host cache: nothing in it is machine state, and a hart that drops it
//! behaves exactly as before, only slower until it has translated again.

use super::Ctx;

/// Executable memory for translated blocks.
pub(crate) struct Arena {
    base: *mut u8,
    size: usize,
    /// Bytes in use; the first `keep` are the shared stubs, kept by `reset`.
    used: usize,
    keep: usize,
}

// SAFETY: the arena is plain memory owned by one hart; it is only written and
// executed through `&mut self`, on whichever thread owns the hart.
unsafe impl Send for Arena {}

/// Why the mapping could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot map {size} bytes of executable memory for the translator: {source}")]
pub struct ArenaError {
    size: usize,
    source: std::io::Error,
}

impl Arena {
    /// A fresh arena of `size` bytes.
    pub fn new(size: usize) -> Result<Arena, ArenaError> {
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ArenaError {
                size,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Arena {
            base: p as *mut u8,
            size,
            used: 0,
            keep: 0,
        })
    }

    /// Address the next appended code will start at.
    pub fn next_addr(&self) -> usize {
        self.base as usize + self.used
    }

    /// Bytes still free.
    pub fn free(&self) -> usize {
        self.size - self.used
    }

    /// Appends `code`, assembled for address [`next_addr`](Self::next_addr).
    /// Returns its address, or `None` (and appends nothing) if it does not fit.
    pub fn push(&mut self, code: &[u8]) -> Option<*const u8> {
        if code.len() > self.free() {
            return None;
        }
        let at = self.next_addr() as *mut u8;
        // SAFETY: `at .. at + len` lies inside the mapping (checked above),
        // and no code there is running: the hart is in Rust, not in a block.
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at, code.len()) };
        // Keep blocks 16-byte aligned for the decoders' sake.
        self.used = (self.used + code.len() + 15) & !15;
        self.used = self.used.min(self.size);
        Some(at)
    }

    /// Marks everything appended so far as permanent (the shared stubs).
    pub fn seal_prefix(&mut self) {
        self.keep = self.used;
    }

    /// Forgets every block appended after the sealed prefix. The caller has
    /// dropped every address into them.
    pub fn reset(&mut self) {
        self.used = self.keep;
    }

    /// Runs translated code at `block` through the entry stub at `entry`,
    /// with `ctx` as the pinned context; returns the exit reason.
    ///
    /// # Safety
    ///
    /// `entry` must be the entry stub and `block` a block of this arena,
    /// both translated by `emit` and not yet reset; `ctx` must describe the
    /// hart's live register file, TLB tables and entry tables, all of which
    /// stay valid and unaliased by Rust references for the whole call.
    pub unsafe fn enter(&self, entry: *const u8, ctx: *mut Ctx, block: *const u8) -> u32 {
        debug_assert!((entry as usize) >= self.base as usize);
        debug_assert!((block as usize) < self.base as usize + self.size);
        // SAFETY: the caller guarantees `entry` is the stub emitted by
        // `emit::stubs`, which follows the System V calling convention
        // (saves and restores every callee-saved register it uses).
        let f: extern "sysv64" fn(*mut Ctx, *const u8) -> u32 = std::mem::transmute(entry);
        f(ctx, block)
    }
}

impl Drop for Arena {
    fn drop(&mut self) {
        // SAFETY: `base`/`size` are the mapping made in `new`, unmapped once.
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.size);
        }
    }
}
