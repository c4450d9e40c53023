//! virtio-rng (virtio 1.2 §5.4): one request queue, no features or
//! configuration. Each available chain asks for as many bytes as its
//! device-writable buffers hold (capped at [`MAX_REQUEST`]); the device
//! emits `Output::Rng` and fills the buffers when the matching
//! `Input::RngData` arrives (with at most the requested length; a shorter
//! answer is reported as such in the used length).

use std::collections::BTreeMap;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use super::queue::{all_in_ram, scatter, truncate, Corrupt, Seg, Virtqueue};
use super::take_id;
use crate::input::{Output, Slot};

/// Largest entropy request, in bytes.
pub const MAX_REQUEST: u32 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct InFlight {
    head: u16,
    segs: Vec<Seg>,
    len: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct RngState {
    pub(super) inflight: BTreeMap<u64, InFlight>,
}

impl RngState {
    pub fn reset(&mut self) {
        self.inflight.clear();
    }

    pub fn process(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        features: u64,
        slot: Slot,
        next_id: &mut u64,
        out: &mut Vec<Output>,
    ) -> Result<(), Corrupt> {
        while let Some(chain) = q.pop(ram, features)? {
            if self.inflight.values().any(|r| r.head == chain.head) {
                return Err(Corrupt("descriptor head made available twice"));
            }
            let len = chain.writable_len().min(MAX_REQUEST as u64) as u32;
            let segs = truncate(&chain.writable, len as u64);
            if len == 0 || !all_in_ram(ram, &segs) {
                q.push_used(ram, chain.head, 0)?;
                continue;
            }
            let id = take_id(next_id);
            self.inflight.insert(
                id,
                InFlight {
                    head: chain.head,
                    segs,
                    len,
                },
            );
            out.push(Output::Rng { slot, id, len });
        }
        Ok(())
    }

    pub fn complete(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        live: bool,
        id: u64,
        data: &[u8],
    ) -> Result<(), Corrupt> {
        let Some(req) = self.inflight.remove(&id) else {
            return Ok(());
        };
        if !live {
            return Ok(());
        }
        let n = data.len().min(req.len as usize);
        let written = match data.get(..n) {
            Some(d) if scatter(ram, &req.segs, 0, d) => n as u32,
            _ => 0,
        };
        q.push_used(ram, req.head, written)
    }
}
