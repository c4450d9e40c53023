//! Whole-machine state: digests that prove two executions are in the same
//! state, and snapshots that save it to bytes and bring it back.
//!
//! A [`StateDigest`] holds the program counter and every integer and FP
//! register verbatim (so a mismatch names the register), one hash over the
//! CSRs and privilege level, one over the board's device state, and one hash
//! per MiB of RAM (so a mismatch names the region). RAM hashes are cached
//! and only recomputed for the MiB chunks written since the last digest,
//! using the dirty-page bitmap the hart and devices maintain.
//!
//! A snapshot is `FTVMSNAP`, a format version, the hart and board state
//! (postcard-encoded), RAM with all-zero pages elided, and a CRC32C of the
//! whole. Restoring one gives a machine whose digest equals the saved one's.

use std::io::{Read, Write};

use ftvm_cpu::{Hart, Ram};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

use crate::board::Board;
use crate::layout::RAM_BASE;
use crate::Machine;

/// RAM is hashed in chunks of this many bytes.
pub const DIGEST_CHUNK: u64 = 1 << 20;
const PAGE: usize = 4096;
const SNAPSHOT_MAGIC: &[u8; 8] = b"FTVMSNAP";
pub const SNAPSHOT_VERSION: u32 = 1;
const STATE_MAGIC: &[u8; 8] = b"FTVMSTAT";
/// Format version of [`Machine::save_state_without_ram`] bytes.
pub const STATE_VERSION: u32 = 1;

/// ABI names of the integer registers, for divergence reports.
const XNAMES: [&str; 32] = [
    "zero", "ra", "sp", "gp", "tp", "t0", "t1", "t2", "s0", "s1", "a0", "a1", "a2", "a3", "a4",
    "a5", "a6", "a7", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "t3", "t4",
    "t5", "t6",
];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateDigest {
    pub icount: u64,
    pub pc: u64,
    pub x: [u64; 32],
    pub f: [u64; 32],
    /// CSRs, fcsr, privilege level, WFI and LR reservation.
    pub hart: u64,
    /// All device and guest-clock state.
    pub board: u64,
    /// One hash per [`DIGEST_CHUNK`] of RAM.
    pub ram: Vec<u64>,
}

impl StateDigest {
    /// Human-readable differences between `self` (expected) and `other`
    /// (found), empty if they are equal.
    pub fn differences(&self, other: &StateDigest) -> Vec<String> {
        let mut d = Vec::new();
        if self.icount != other.icount {
            d.push(format!(
                "step count: expected {}, found {}",
                self.icount, other.icount
            ));
        }
        if self.pc != other.pc {
            d.push(format!(
                "pc: expected {:#x}, found {:#x}",
                self.pc, other.pc
            ));
        }
        for (i, name) in XNAMES.iter().enumerate() {
            if self.x[i] != other.x[i] {
                d.push(format!(
                    "x{i} ({name}): expected {:#x}, found {:#x}",
                    self.x[i], other.x[i]
                ));
            }
            if self.f[i] != other.f[i] {
                d.push(format!(
                    "f{i}: expected {:#x}, found {:#x}",
                    self.f[i], other.f[i]
                ));
            }
        }
        if self.hart != other.hart {
            d.push("CSRs / privilege level differ".into());
        }
        if self.board != other.board {
            d.push("device state (CLINT, PLIC, UART, RTC, virtio, guest clock) differs".into());
        }
        if self.ram.len() != other.ram.len() {
            d.push(format!(
                "RAM size: expected {} MiB, found {} MiB",
                self.ram.len(),
                other.ram.len()
            ));
        } else {
            for (i, (a, b)) in self.ram.iter().zip(&other.ram).enumerate() {
                if a != b {
                    let start = RAM_BASE + i as u64 * DIGEST_CHUNK;
                    d.push(format!(
                        "RAM {:#x}..{:#x} differs",
                        start,
                        start + DIGEST_CHUNK
                    ));
                }
            }
        }
        d
    }
}

/// Cache of per-chunk RAM hashes, kept up to date from the dirty bitmap.
#[derive(Clone, Debug, Default)]
pub struct DigestCache {
    chunks: Vec<u64>,
}

fn hash_of<T: Serialize>(v: &T) -> u64 {
    // Serialising plain-data state cannot fail; an empty hash would only
    // weaken a check, never corrupt state.
    postcard::to_stdvec(v).map(|b| xxh3_64(&b)).unwrap_or(0)
}

#[derive(Serialize)]
struct HartCore<'a> {
    csr: &'a ftvm_cpu::csr::Csrs,
    fflags: u8,
    frm: u8,
    prv: ftvm_cpu::Privilege,
    wfi: bool,
    reservation: Option<u64>,
}

impl Machine {
    /// Hashes every RAM chunk into the digest cache now, so that the first
    /// [`Machine::digest`] re-hashes only the chunks written from here on
    /// instead of all of RAM (on a big guest that is long enough for an FT
    /// side to miss its peer's failure timeout). It changes nothing the
    /// guest or a digest can see and may be called at any moment, off the
    /// deterministic schedule: it only reads RAM. Pages written before the
    /// call and not yet collected stay pending, so they are hashed again at
    /// the next digest — including pages a store translation cached before
    /// the call still reaches without marking. The FT drivers call it right
    /// after building a machine, before the pair's timing starts.
    pub fn prime_digest(&mut self) {
        let n = (self.ram.size() / DIGEST_CHUNK) as usize;
        let bytes = self.ram.as_bytes();
        self.digest_cache.chunks = bytes
            .chunks(DIGEST_CHUNK as usize)
            .take(n)
            .map(xxh3_64)
            .collect();
    }

    /// Computes the state digest at the current step.
    pub fn digest(&mut self) -> StateDigest {
        let chunk_pages = (DIGEST_CHUNK as usize) / PAGE;
        let n = (self.ram.size() / DIGEST_CHUNK) as usize;
        self.collect_dirty();
        let dirty = std::mem::take(&mut self.dirty.digest);
        let cache = &mut self.digest_cache.chunks;
        let fresh = cache.len() != n;
        if fresh {
            cache.resize(n, 0);
        }
        let bytes = self.ram.as_bytes();
        for (i, slot) in cache.iter_mut().enumerate() {
            let first_page = i * chunk_pages;
            let touched = fresh
                || (first_page..first_page + chunk_pages)
                    .any(|p| dirty.get(p / 64).is_some_and(|w| w & (1 << (p % 64)) != 0));
            if touched {
                let start = i * DIGEST_CHUNK as usize;
                *slot = xxh3_64(&bytes[start..start + DIGEST_CHUNK as usize]);
            }
        }
        let h = &self.hart;
        StateDigest {
            icount: h.icount,
            pc: h.pc,
            x: h.x,
            f: h.fp.f,
            hart: hash_of(&HartCore {
                csr: &h.csr,
                fflags: h.fp.fflags,
                frm: h.fp.frm,
                prv: h.prv,
                wfi: h.wfi,
                reservation: h.reservation,
            }),
            board: hash_of(&self.board),
            ram: cache.clone(),
        }
    }
}

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("not an ftvm snapshot or machine state (bad magic)")]
    BadMagic,
    #[error("format version {found} is not supported (this ftvm reads version {expected})")]
    Version { found: u32, expected: u32 },
    #[error("snapshot is truncated or unreadable: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "snapshot is corrupt: checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
    )]
    Checksum { stored: u32, computed: u32 },
    #[error("snapshot is corrupt: {0}")]
    Decode(String),
    #[error("RAM image is {found} bytes but the machine state says {expected}")]
    RamLength { expected: u64, found: u64 },
}

/// The non-RAM machine state as decoded: what snapshots and
/// [`Machine::save_state_without_ram`] carry besides RAM contents.
#[derive(Deserialize)]
pub(crate) struct SnapshotState {
    pub ram_size: u64,
    pub hart: Hart,
    pub board: Board,
}

/// The same, borrowed for encoding (postcard encodes `&T` like `T`).
#[derive(Serialize)]
struct SnapshotStateRef<'a> {
    ram_size: u64,
    hart: &'a Hart,
    board: &'a Board,
}

/// Writes through to `inner` while accumulating a CRC32C.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}
impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn short() -> SnapshotError {
    SnapshotError::Io(std::io::ErrorKind::UnexpectedEof.into())
}

/// The container shared by snapshots and bare machine state:
/// `magic`, version (u32 LE), state length (u64 LE), postcard-encoded
/// [`SnapshotState`], a `payload` (RAM, for snapshots), and a CRC32C (u32 LE)
/// of everything before it.
impl Machine {
    /// Writes magic, version and the encoded non-RAM state.
    fn write_state_head<W: Write>(
        &self,
        w: &mut W,
        magic: &[u8; 8],
        version: u32,
    ) -> Result<(), SnapshotError> {
        let state = SnapshotStateRef {
            ram_size: self.ram.size(),
            hart: &self.hart,
            board: &self.board,
        };
        let enc = postcard::to_stdvec(&state).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        w.write_all(magic)?;
        w.write_all(&version.to_le_bytes())?;
        w.write_all(&(enc.len() as u64).to_le_bytes())?;
        w.write_all(&enc)?;
        Ok(())
    }

    /// Checks the magic, version and checksum of a container and decodes its
    /// state; returns the state and the payload between it and the checksum.
    fn open_container<'a>(
        all: &'a [u8],
        magic: &[u8; 8],
        version: u32,
    ) -> Result<(SnapshotState, &'a [u8]), SnapshotError> {
        if all.len() < 8 || &all[..8] != magic {
            return Err(SnapshotError::BadMagic);
        }
        if all.len() < 24 {
            return Err(short());
        }
        let found = u32::from_le_bytes(all[8..12].try_into().map_err(|_| short())?);
        if found != version {
            return Err(SnapshotError::Version {
                found,
                expected: version,
            });
        }
        let (body, tail) = all.split_at(all.len() - 4);
        let stored = u32::from_le_bytes(tail.try_into().map_err(|_| short())?);
        let computed = crc32c::crc32c(body);
        // Fuzz builds skip the check so that mutations reach the decoder.
        if stored != computed && !cfg!(fuzzing) {
            return Err(SnapshotError::Checksum { stored, computed });
        }
        let len = u64::from_le_bytes(body[12..20].try_into().map_err(|_| short())?);
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(20))
            .ok_or_else(short)?;
        let enc = body.get(20..end).ok_or_else(short)?;
        let state: SnapshotState =
            postcard::from_bytes(enc).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if state.ram_size == 0
            || !state.ram_size.is_multiple_of(1 << 20)
            || state.ram_size > (1 << 36)
        {
            return Err(SnapshotError::Decode(format!(
                "bad RAM size {}",
                state.ram_size
            )));
        }
        state.board.check().map_err(SnapshotError::Decode)?;
        Ok((state, &body[end..]))
    }

    /// A machine from decoded state and RAM: derived state (TLBs, decoded
    /// pages, digest cache, dirty tracking) starts cold.
    fn from_parts(state: SnapshotState, ram: Ram) -> Machine {
        let mut hart = state.hart;
        hart.after_restore();
        Machine::assemble(hart, ram, state.board)
    }

    /// Saves the complete machine state. Call between runs, after the
    /// driver has taken the outputs.
    pub fn save_snapshot<W: Write>(&self, w: W) -> Result<(), SnapshotError> {
        let mut w = CrcWriter { inner: w, crc: 0 };
        self.write_state_head(&mut w, SNAPSHOT_MAGIC, SNAPSHOT_VERSION)?;
        // RAM: a bitmap of non-zero pages, then those pages.
        let bytes = self.ram.as_bytes();
        let pages = bytes.len() / PAGE;
        let mut bitmap = vec![0u8; pages.div_ceil(8)];
        for (p, page) in bytes.chunks(PAGE).enumerate() {
            if page.iter().any(|&b| b != 0) {
                bitmap[p / 8] |= 1 << (p % 8);
            }
        }
        w.write_all(&bitmap)?;
        for (p, page) in bytes.chunks(PAGE).enumerate() {
            if bitmap[p / 8] & (1 << (p % 8)) != 0 {
                w.write_all(page)?;
            }
        }
        let crc = w.crc;
        let mut inner = w.inner;
        inner.write_all(&crc.to_le_bytes())?;
        inner.flush()?;
        Ok(())
    }

    /// Restores a machine saved by [`Machine::save_snapshot`].
    pub fn load_snapshot<R: Read>(mut r: R) -> Result<Machine, SnapshotError> {
        let mut all = Vec::new();
        r.read_to_end(&mut all)?;
        let (state, body) = Machine::open_container(&all, SNAPSHOT_MAGIC, SNAPSHOT_VERSION)?;
        // Check the page bitmap is there before allocating the RAM the
        // header claims: a short corrupt file must not cost gigabytes.
        let pages = (state.ram_size as usize) / PAGE;
        let bitmap = body.get(..pages.div_ceil(8)).ok_or_else(short)?;
        let stored: usize = bitmap.iter().map(|b| b.count_ones() as usize).sum();
        if stored.saturating_mul(PAGE) > body.len() - bitmap.len() {
            return Err(short());
        }
        let mut ram = Ram::new(RAM_BASE, state.ram_size);
        let mut pos = bitmap.len();
        {
            let dst = ram.as_bytes_mut();
            for p in 0..pages {
                if bitmap[p / 8] & (1 << (p % 8)) != 0 {
                    let src = body.get(pos..pos + PAGE).ok_or_else(short)?;
                    dst[p * PAGE..(p + 1) * PAGE].copy_from_slice(src);
                    pos += PAGE;
                }
            }
        }
        if pos != body.len() {
            return Err(SnapshotError::Decode(format!(
                "{} trailing bytes",
                body.len() - pos
            )));
        }
        Ok(Machine::from_parts(state, ram))
    }

    /// Everything but RAM contents, as versioned and CRC32C-checked bytes
    /// (`FTVMSTAT`, the same container and state encoding as a snapshot,
    /// without the RAM payload): the hart (registers, CSRs, privilege level,
    /// WFI, LR reservation, step count), the board (CLINT, PLIC, UART, RTC,
    /// test device, every virtio device and its queue state), the guest
    /// clock and the RAM size. Caches that do not affect execution (TLBs,
    /// decoded pages, digest hashes, dirty tracking) are not included.
    ///
    /// For live migration: call between runs, after the driver has taken
    /// the outputs, and pair it with the RAM contents at the same step
    /// (see [`Machine::start_dirty_log`]) for [`Machine::from_state_and_ram`].
    pub fn save_state_without_ram(&self) -> Vec<u8> {
        let mut w = CrcWriter {
            inner: Vec::new(),
            crc: 0,
        };
        // Writing plain data to a Vec cannot fail.
        self.write_state_head(&mut w, STATE_MAGIC, STATE_VERSION)
            .expect("machine state always encodes");
        let crc = w.crc;
        let mut out = w.inner;
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// A machine from [`Machine::save_state_without_ram`] bytes and a full
    /// RAM image (`ram.len()` must equal the saved RAM size). It continues
    /// exactly as the saved machine would (given the same inputs), and its
    /// [`Machine::digest`] equals the saved machine's when `ram` equals its
    /// RAM. Bad magic, another version, truncated or corrupt bytes, and a
    /// wrong RAM length are errors.
    pub fn from_state_and_ram(state: &[u8], ram: Vec<u8>) -> Result<Machine, SnapshotError> {
        let (st, rest) = Machine::open_container(state, STATE_MAGIC, STATE_VERSION)?;
        if !rest.is_empty() {
            return Err(SnapshotError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if ram.len() as u64 != st.ram_size {
            return Err(SnapshotError::RamLength {
                expected: st.ram_size,
                found: ram.len() as u64,
            });
        }
        let mut r = Ram::new(RAM_BASE, st.ram_size);
        r.as_bytes_mut().copy_from_slice(&ram);
        drop(ram);
        Ok(Machine::from_parts(st, r))
    }

    /// Like [`Machine::from_state_and_ram`], with the RAM already in a
    /// [`Ram`] (filled through `as_bytes_mut`): no copy of the image, which
    /// matters when a joining backup must start the moment the state
    /// arrives. Its base and size must be the machine's.
    pub fn from_state_and_filled_ram(state: &[u8], ram: Ram) -> Result<Machine, SnapshotError> {
        let (st, rest) = Machine::open_container(state, STATE_MAGIC, STATE_VERSION)?;
        if !rest.is_empty() {
            return Err(SnapshotError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        if ram.size() != st.ram_size || ram.base() != RAM_BASE {
            return Err(SnapshotError::RamLength {
                expected: st.ram_size,
                found: ram.size(),
            });
        }
        Ok(Machine::from_parts(st, ram))
    }
}
