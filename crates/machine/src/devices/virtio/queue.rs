//! The split virtqueue as the device sees it (virtio 1.2 §2.7): the
//! driver-programmed ring addresses and size, the device's private indices
//! (next available entry to consume, next used slot, last used index it
//! signalled for event-index suppression), descriptor-chain walking with
//! indirect tables, the used ring and interrupt suppression. Every guest
//! memory access is bounds-checked through `Ram`; anything that shows the
//! queue itself is corrupt (ring outside RAM, bad head or next index, a loop,
//! a malformed indirect table, the driver claiming more entries than the ring
//! holds) is reported as [`Corrupt`], which the transport turns into
//! DEVICE_NEEDS_RESET. Problems with the buffers a chain points to are not
//! queue corruption: the device model decides what to do with them (the
//! helpers at the bottom check and copy segment lists).

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

/// Largest queue size the device offers (QueueNumMax).
pub const QUEUE_NUM_MAX: u32 = 256;
/// Largest indirect table accepted, in descriptors.
pub const MAX_INDIRECT: u32 = 1024;

/// Feature bits handled by the ring layer.
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_EVENT_IDX: u64 = 1 << 29;

const DESC_F_NEXT: u16 = 1;
const DESC_F_WRITE: u16 = 2;
const DESC_F_INDIRECT: u16 = 4;
const AVAIL_F_NO_INTERRUPT: u16 = 1;
const DESC_SIZE: u64 = 16;

/// The queue is unusable; the string says why (for debugging and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Corrupt(pub &'static str);

/// A guest buffer: `len` bytes at guest physical `addr` (never zero-length).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
}

/// A descriptor chain popped from the available ring: the device-readable
/// buffers followed by the device-writable ones, in chain order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    pub head: u16,
    pub readable: Vec<Seg>,
    pub writable: Vec<Seg>,
}

impl Chain {
    pub fn readable_len(&self) -> u64 {
        seg_total(&self.readable)
    }
    pub fn writable_len(&self) -> u64 {
        seg_total(&self.writable)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Virtqueue {
    /// QueueNum as written by the driver (validated when used).
    pub num: u32,
    pub ready: bool,
    /// Descriptor table, driver area (available ring), device area (used ring).
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    /// Index in the available ring of the next entry to consume.
    last_avail: u16,
    /// Index of the next used-ring entry to write (= used.idx).
    used_idx: u16,
    /// used.idx at the last interrupt decision (event-index mode).
    signalled_used: Option<u16>,
    /// Used entries were pushed since the last interrupt decision.
    needs_signal: bool,
}

impl Virtqueue {
    /// QueueReady went from 1 to 0: keep the registers, forget the ring
    /// position (a later enable starts on fresh rings, like a queue reset).
    pub fn disable(&mut self) {
        *self = Virtqueue {
            num: self.num,
            desc: self.desc,
            driver: self.driver,
            device: self.device,
            ..Virtqueue::default()
        };
    }

    /// The queue size, checked: a power of two no larger than QueueNumMax.
    fn size(&self) -> Result<u16, Corrupt> {
        if self.num == 0 || self.num > QUEUE_NUM_MAX || !self.num.is_power_of_two() {
            return Err(Corrupt("queue size not a power of two in 1..=QueueNumMax"));
        }
        Ok(self.num as u16)
    }

    /// Checks size, alignment and that all three areas lie inside RAM.
    /// Cheap, so it runs before every use (RAM and a ready queue's
    /// registers cannot change between two uses, but this keeps every
    /// access provably in bounds).
    fn validate(&self, ram: &Ram) -> Result<u16, Corrupt> {
        let size = self.size()?;
        let n = size as u64;
        if self.desc & 15 != 0 || self.driver & 1 != 0 || self.device & 3 != 0 {
            return Err(Corrupt("misaligned ring"));
        }
        let areas = [
            (self.desc, DESC_SIZE * n),
            (self.driver, 6 + 2 * n),
            (self.device, 6 + 8 * n),
        ];
        for (addr, len) in areas {
            if ram.offset_of(addr, len).is_none() {
                return Err(Corrupt("ring outside RAM"));
            }
        }
        Ok(size)
    }

    /// Number of available entries not yet consumed.
    fn pending(&self, ram: &Ram, size: u16) -> Result<u16, Corrupt> {
        let avail_idx = read_u16(ram, self.driver + 2)?;
        let pending = avail_idx.wrapping_sub(self.last_avail);
        if pending > size {
            return Err(Corrupt("available index moved past the ring size"));
        }
        Ok(pending)
    }

    /// The next available chain, without consuming it.
    pub fn peek(&self, ram: &Ram, features: u64) -> Result<Option<Chain>, Corrupt> {
        let size = self.validate(ram)?;
        if self.pending(ram, size)? == 0 {
            return Ok(None);
        }
        let slot = (self.last_avail % size) as u64;
        let head = read_u16(ram, self.driver + 4 + 2 * slot)?;
        self.walk(ram, head, size, features).map(Some)
    }

    /// Consumes the entry `peek` returned; with event index, publishes
    /// avail_event so the driver notifies on the next entry it adds.
    pub fn advance(&mut self, ram: &mut Ram, features: u64) -> Result<(), Corrupt> {
        let size = self.validate(ram)?;
        self.last_avail = self.last_avail.wrapping_add(1);
        if features & F_EVENT_IDX != 0 {
            write_u16(ram, self.device + 4 + 8 * size as u64, self.last_avail)?;
        }
        Ok(())
    }

    /// Pops the next available chain.
    pub fn pop(&mut self, ram: &mut Ram, features: u64) -> Result<Option<Chain>, Corrupt> {
        let chain = self.peek(ram, features)?;
        if chain.is_some() {
            self.advance(ram, features)?;
        }
        Ok(chain)
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    pub fn push_used(&mut self, ram: &mut Ram, head: u16, len: u32) -> Result<(), Corrupt> {
        let size = self.validate(ram)?;
        let elem = self.device + 4 + 8 * (self.used_idx % size) as u64;
        let mut bytes = [0u8; 8];
        bytes[..4].copy_from_slice(&(head as u32).to_le_bytes());
        bytes[4..].copy_from_slice(&len.to_le_bytes());
        if !ram.write_bytes(elem, &bytes) {
            return Err(Corrupt("used ring outside RAM"));
        }
        self.used_idx = self.used_idx.wrapping_add(1);
        write_u16(ram, self.device + 2, self.used_idx)?;
        self.needs_signal = true;
        Ok(())
    }

    /// Whether the used entries pushed since the last call warrant an
    /// interrupt: avail.flags NO_INTERRUPT without event index, used_event
    /// with it (virtio 1.2 §2.7.7.2, the vring_need_event rule).
    pub fn take_signal(&mut self, ram: &Ram, features: u64) -> Result<bool, Corrupt> {
        if !self.needs_signal {
            return Ok(false);
        }
        self.needs_signal = false;
        let size = self.validate(ram)?;
        if features & F_EVENT_IDX != 0 {
            let new = self.used_idx;
            let old = self.signalled_used.replace(new);
            let Some(old) = old else {
                return Ok(true);
            };
            let event = read_u16(ram, self.driver + 4 + 2 * size as u64)?;
            Ok(new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old))
        } else {
            let flags = read_u16(ram, self.driver)?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Walks the chain starting at descriptor `head`.
    fn walk(&self, ram: &Ram, head: u16, size: u16, features: u64) -> Result<Chain, Corrupt> {
        let mut chain = Chain {
            head,
            ..Chain::default()
        };
        let mut table = self.desc;
        let mut table_len = size as u32;
        let mut idx = head as u32;
        let mut visited = 0u32;
        let mut indirect = false;
        loop {
            if idx >= table_len {
                return Err(Corrupt("descriptor index out of range"));
            }
            visited += 1;
            if visited > table_len {
                return Err(Corrupt(
                    "descriptor chain loops or is longer than its table",
                ));
            }
            let d = read_desc(ram, table + DESC_SIZE * idx as u64)?;
            if d.flags & DESC_F_INDIRECT != 0 {
                if features & F_INDIRECT_DESC == 0 {
                    return Err(Corrupt(
                        "indirect descriptor without VIRTIO_F_INDIRECT_DESC",
                    ));
                }
                if indirect {
                    return Err(Corrupt("indirect descriptor inside an indirect table"));
                }
                if d.flags & DESC_F_NEXT != 0 {
                    return Err(Corrupt("indirect descriptor with NEXT"));
                }
                if d.len == 0 || d.len & 15 != 0 || d.len / 16 > MAX_INDIRECT {
                    return Err(Corrupt("bad indirect table length"));
                }
                if ram.offset_of(d.addr, d.len as u64).is_none() {
                    return Err(Corrupt("indirect table outside RAM"));
                }
                indirect = true;
                table = d.addr;
                table_len = d.len / 16;
                idx = 0;
                visited = 0;
                continue;
            }
            if d.len != 0 {
                let seg = Seg {
                    addr: d.addr,
                    len: d.len,
                };
                if d.flags & DESC_F_WRITE != 0 {
                    chain.writable.push(seg);
                } else if chain.writable.is_empty() {
                    chain.readable.push(seg);
                } else {
                    return Err(Corrupt("device-readable descriptor after a writable one"));
                }
            }
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(chain);
            }
            idx = d.next as u32;
        }
    }
}

struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(ram: &Ram, at: u64) -> Result<Desc, Corrupt> {
    let mut b = [0u8; 16];
    if !ram.read_bytes(at, &mut b) {
        return Err(Corrupt("descriptor outside RAM"));
    }
    let [a0, a1, a2, a3, a4, a5, a6, a7, l0, l1, l2, l3, f0, f1, n0, n1] = b;
    Ok(Desc {
        addr: u64::from_le_bytes([a0, a1, a2, a3, a4, a5, a6, a7]),
        len: u32::from_le_bytes([l0, l1, l2, l3]),
        flags: u16::from_le_bytes([f0, f1]),
        next: u16::from_le_bytes([n0, n1]),
    })
}

fn read_u16(ram: &Ram, at: u64) -> Result<u16, Corrupt> {
    let mut b = [0u8; 2];
    if ram.read_bytes(at, &mut b) {
        Ok(u16::from_le_bytes(b))
    } else {
        Err(Corrupt("ring outside RAM"))
    }
}

fn write_u16(ram: &mut Ram, at: u64, v: u16) -> Result<(), Corrupt> {
    if ram.write_bytes(at, &v.to_le_bytes()) {
        Ok(())
    } else {
        Err(Corrupt("ring outside RAM"))
    }
}

// ---- Buffer helpers for the device models ----

/// Total length of a segment list.
pub fn seg_total(segs: &[Seg]) -> u64 {
    segs.iter().map(|s| s.len as u64).sum()
}

/// Whether every segment lies wholly inside RAM.
pub fn all_in_ram(ram: &Ram, segs: &[Seg]) -> bool {
    segs.iter()
        .all(|s| ram.offset_of(s.addr, s.len as u64).is_some())
}

/// The first `len` bytes of a segment list, as a segment list.
pub fn truncate(segs: &[Seg], len: u64) -> Vec<Seg> {
    let mut left = len;
    let mut out = Vec::new();
    for s in segs {
        if left == 0 {
            break;
        }
        let take = left.min(s.len as u64);
        out.push(Seg {
            addr: s.addr,
            len: take as u32,
        });
        left -= take;
    }
    out
}

/// Copies `len` bytes starting `skip` bytes into the segment list out of
/// guest memory; None if the list is too short or leaves RAM.
pub fn gather(ram: &Ram, segs: &[Seg], skip: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let mut done = 0usize;
    let mut skip = skip;
    for s in segs {
        if done == len {
            break;
        }
        let slen = s.len as u64;
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let take = ((slen - skip) as usize).min(len - done);
        let dst = out.get_mut(done..done + take)?;
        if !ram.read_bytes(s.addr.checked_add(skip)?, dst) {
            return None;
        }
        done += take;
        skip = 0;
    }
    (done == len).then_some(out)
}

/// Copies `data` into guest memory starting `skip` bytes into the segment
/// list; false if the list is too short or leaves RAM.
pub fn scatter(ram: &mut Ram, segs: &[Seg], skip: u64, data: &[u8]) -> bool {
    let mut done = 0usize;
    let mut skip = skip;
    for s in segs {
        if done == data.len() {
            break;
        }
        let slen = s.len as u64;
        if skip >= slen {
            skip -= slen;
            continue;
        }
        let take = ((slen - skip) as usize).min(data.len() - done);
        let Some(src) = data.get(done..done + take) else {
            return false;
        };
        let Some(addr) = s.addr.checked_add(skip) else {
            return false;
        };
        if !ram.write_bytes(addr, src) {
            return false;
        }
        done += take;
        skip = 0;
    }
    done == data.len()
}
