//! The bodies of ftvm's fuzz targets, one module per parser that reads
//! bytes from outside the process. Each `run(data)` must return for every
//! input without panicking, hanging or allocating without bound; where a
//! parser has an encoder, decoding what it encoded must give the same value
//! back. `fuzz_targets/*.rs` wrap them for libFuzzer; `src/bin/seeds.rs`
//! writes the checked-in corpus from real encoders and real sessions.

pub mod arbiter_wire;
pub mod ft_wire;
pub mod loader;
pub mod log;
pub mod nbd_client;
pub mod nbd_server;
pub mod snapshot;
pub mod virtio;

/// Every target, by the name of its binary and corpus directory.
pub const TARGETS: &[&str] = &[
    "ft_wire",
    "log",
    "arbiter_wire",
    "nbd_server",
    "nbd_client",
    "virtio",
    "loader",
    "snapshot",
];

/// A cursor over fuzz input that yields zeros once the bytes run out, so a
/// target can decode a script of operations from any input.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | ((self.u32() as u64) << 32)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Everything not yet consumed.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

/// Ignore SIGPIPE as a Rust `main` would: libFuzzer's `main` runs instead,
/// and the network targets write to sockets the other side may have closed.
pub fn ignore_sigpipe() {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}
