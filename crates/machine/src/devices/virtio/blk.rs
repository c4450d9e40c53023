//! virtio-blk (virtio 1.2 §5.2): one request queue; each chain is a 16-byte
//! header (type, reserved, sector), data, and a final device-writable
//! status byte, in any framing (VERSION_1 implies ANY_LAYOUT). Reads,
//! writes and flushes become `Output::Blk` requests for the backend and are
//! remembered until the matching `Input::BlkDone`; GET_ID, unsupported
//! types and every request that is invalid on its face (out of range, not a
//! whole number of sectors, too large, a write to a read-only disk, a buffer
//! outside RAM) complete at once without the backend. A single request
//! carries at most [`MAX_REQUEST_BYTES`], consistent with the advertised
//! seg_max × size_max.

use std::collections::BTreeMap;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use super::queue::{all_in_ram, gather, scatter, truncate, Corrupt, Seg, Virtqueue};
use super::{take_id, CONFIG_SPACE_LEN};
use crate::input::{BlkOp, Output, Slot};

const F_SIZE_MAX: u64 = 1 << 1;
const F_SEG_MAX: u64 = 1 << 2;
const F_RO: u64 = 1 << 5;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;

const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
const T_GET_ID: u32 = 8;

pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

pub const SECTOR: u64 = 512;
/// Largest segment the driver may use (config size_max).
pub const SIZE_MAX: u32 = 32 * 1024;
/// Most data segments per request (config seg_max).
pub const SEG_MAX: u32 = 128;
/// Largest data transfer in one request.
pub const MAX_REQUEST_BYTES: u64 = SIZE_MAX as u64 * SEG_MAX as u64;
/// Length of the GET_ID answer.
const ID_BYTES: usize = 20;
const HEADER_LEN: u64 = 16;

pub(super) fn features(read_only: bool) -> u64 {
    let ro = if read_only { F_RO } else { 0 };
    F_SIZE_MAX | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | ro
}

/// struct virtio_blk_config: capacity @0, size_max @8, seg_max @12,
/// geometry @16 (zero, not offered), blk_size @20.
pub(super) fn config_space(capacity_bytes: u64) -> [u8; CONFIG_SPACE_LEN] {
    let mut c = [0u8; CONFIG_SPACE_LEN];
    c[0..8].copy_from_slice(&(capacity_bytes / SECTOR).to_le_bytes());
    c[8..12].copy_from_slice(&SIZE_MAX.to_le_bytes());
    c[12..16].copy_from_slice(&SEG_MAX.to_le_bytes());
    c[20..24].copy_from_slice(&(SECTOR as u32).to_le_bytes());
    c
}

/// The id string GET_ID reports for the disk in `slot`.
pub fn id_string(slot: Slot) -> String {
    format!("ftvm-vd{slot}")
}

/// The disk's fixed parameters, for `process`.
pub(super) struct Disk {
    pub slot: Slot,
    pub capacity_bytes: u64,
    pub read_only: bool,
}

/// A request the backend is working on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct InFlight {
    head: u16,
    /// Guest address of the status byte (checked inside RAM).
    status_addr: u64,
    /// For reads: where the data goes and how much is expected.
    read: Option<ReadTarget>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct ReadTarget {
    segs: Vec<Seg>,
    len: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BlkState {
    pub(super) inflight: BTreeMap<u64, InFlight>,
    /// Chains that had no status byte in RAM and were returned unanswered.
    pub bad_chains: u64,
}

/// Immediate outcome of a request.
enum Now {
    /// Sent to the backend; completes later.
    Pending,
    /// Complete now: status, and data bytes written before the status.
    Done(u8, u32),
}

impl BlkState {
    pub fn reset(&mut self) {
        self.inflight.clear();
    }

    pub fn process(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        features: u64,
        disk: &Disk,
        next_id: &mut u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Corrupt> {
        while let Some(chain) = q.pop(ram, features)? {
            if self.inflight.values().any(|r| r.head == chain.head) {
                return Err(Corrupt("descriptor head made available twice"));
            }
            // The status byte is the last device-writable byte.
            let status_addr = chain
                .writable
                .last()
                .and_then(|s| s.addr.checked_add(s.len as u64 - 1))
                .filter(|&a| ram.offset_of(a, 1).is_some());
            let Some(status_addr) = status_addr else {
                self.bad_chains += 1;
                q.push_used(ram, chain.head, 0)?;
                continue;
            };
            let data_in = truncate(&chain.writable, chain.writable_len() - 1);
            let now = if all_in_ram(ram, &chain.readable) && all_in_ram(ram, &chain.writable) {
                self.request(
                    &chain.readable,
                    data_in,
                    chain.head,
                    status_addr,
                    ram,
                    disk,
                    next_id,
                    out,
                )
            } else {
                Now::Done(S_IOERR, 0)
            };
            if let Now::Done(status, written) = now {
                finish(q, ram, chain.head, status_addr, status, written)?;
            }
        }
        Ok(())
    }

    /// Decodes one request whose buffers all lie in RAM.
    #[allow(clippy::too_many_arguments)]
    fn request(
        &mut self,
        readable: &[Seg],
        data_in: Vec<Seg>,
        head: u16,
        status_addr: u64,
        ram: &mut Ram,
        disk: &Disk,
        next_id: &mut u64,
        out: &mut Vec<Output>,
    ) -> Now {
        let Some(hdr) = gather(ram, readable, 0, HEADER_LEN as usize) else {
            return Now::Done(S_IOERR, 0);
        };
        let mut t = [0u8; 4];
        let mut s = [0u8; 8];
        t.copy_from_slice(&hdr[0..4]);
        s.copy_from_slice(&hdr[8..16]);
        let (rtype, sector) = (u32::from_le_bytes(t), u64::from_le_bytes(s));
        let in_len = super::queue::seg_total(&data_in);
        let out_len = super::queue::seg_total(readable).saturating_sub(HEADER_LEN);
        let slot = disk.slot;
        let op = match rtype {
            T_IN => {
                let Some(offset) = check_range(disk, sector, in_len) else {
                    return Now::Done(S_IOERR, 0);
                };
                if in_len == 0 {
                    return Now::Done(S_OK, 0);
                }
                let len = in_len as u32;
                let id = take_id(next_id);
                self.inflight.insert(
                    id,
                    InFlight {
                        head,
                        status_addr,
                        read: Some(ReadTarget { segs: data_in, len }),
                    },
                );
                out.push(Output::Blk {
                    slot,
                    id,
                    op: BlkOp::Read { offset, len },
                });
                return Now::Pending;
            }
            T_OUT => {
                if disk.read_only {
                    return Now::Done(S_IOERR, 0);
                }
                let Some(offset) = check_range(disk, sector, out_len) else {
                    return Now::Done(S_IOERR, 0);
                };
                if out_len == 0 {
                    return Now::Done(S_OK, 0);
                }
                let Some(data) = gather(ram, readable, HEADER_LEN, out_len as usize) else {
                    return Now::Done(S_IOERR, 0);
                };
                BlkOp::Write {
                    offset,
                    data,
                    fua: false,
                }
            }
            T_FLUSH => BlkOp::Flush,
            T_GET_ID => {
                let mut id = [0u8; ID_BYTES];
                let s = id_string(slot);
                let n = s.len().min(ID_BYTES);
                id[..n].copy_from_slice(&s.as_bytes()[..n]);
                let n = (in_len as usize).min(ID_BYTES);
                if !scatter(ram, &data_in, 0, &id[..n]) {
                    return Now::Done(S_IOERR, 0);
                }
                return Now::Done(S_OK, n as u32);
            }
            _ => return Now::Done(S_UNSUPP, 0),
        };
        let id = take_id(next_id);
        self.inflight.insert(
            id,
            InFlight {
                head,
                status_addr,
                read: None,
            },
        );
        out.push(Output::Blk { slot, id, op });
        Now::Pending
    }

    /// The backend answered request `id`.
    pub fn complete(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        live: bool,
        id: u64,
        status: u8,
        data: &[u8],
    ) -> Result<(), Corrupt> {
        let Some(req) = self.inflight.remove(&id) else {
            return Ok(());
        };
        if !live {
            return Ok(());
        }
        let mut status = if status <= S_UNSUPP { status } else { S_IOERR };
        let mut written = 0;
        if let (Some(read), S_OK) = (&req.read, status) {
            if data.len() == read.len as usize && scatter(ram, &read.segs, 0, data) {
                written = read.len;
            } else {
                status = S_IOERR;
            }
        }
        finish(q, ram, req.head, req.status_addr, status, written)
    }
}

/// Byte offset of a transfer of `len` bytes at `sector`, if it is a whole
/// number of sectors, within the request limit and inside the disk.
fn check_range(disk: &Disk, sector: u64, len: u64) -> Option<u64> {
    if len & (SECTOR - 1) != 0 || len > MAX_REQUEST_BYTES {
        return None;
    }
    let offset = sector.checked_mul(SECTOR)?;
    let end = offset.checked_add(len)?;
    (end <= disk.capacity_bytes).then_some(offset)
}

/// Writes the status byte and returns the chain with `written` data bytes
/// plus the status byte.
fn finish(
    q: &mut Virtqueue,
    ram: &mut Ram,
    head: u16,
    status_addr: u64,
    status: u8,
    written: u32,
) -> Result<(), Corrupt> {
    // status_addr was checked inside RAM when the request was popped.
    let ok = ram.write_bytes(status_addr, &[status]);
    q.push_used(ram, head, if ok { written + 1 } else { written })
}
