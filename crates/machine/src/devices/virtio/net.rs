//! virtio-net (virtio 1.2 §5.1) without offloads or mergeable buffers:
//! queue 0 receives, queue 1 transmits, and every buffer starts with the
//! 12-byte `struct virtio_net_hdr` (VERSION_1 layout, num_buffers
//! included). TX chains are copied out as `Output::NetTx` frames (header
//! stripped) and returned at once. Received frames (`Input::NetRx`) go
//! straight into the next RX buffer with a zeroed header (num_buffers = 1);
//! when the guest has no buffer posted they wait in a FIFO of at most
//! [`RX_FIFO_FRAMES`] frames and are delivered when the guest adds buffers.
//! Drop policy: when the FIFO is full the *newest* frame (the arriving one)
//! is dropped, like a NIC whose ring is full; a frame larger than the next
//! RX buffer is dropped without consuming the buffer; frames over 65535
//! bytes and frames arriving before the driver is up are dropped. Every
//! drop is counted in [`NetStats`].

use std::collections::VecDeque;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use super::queue::{all_in_ram, gather, scatter, Corrupt, Virtqueue};
use super::CONFIG_SPACE_LEN;
use crate::input::{Output, Slot};

const F_MAC: u64 = 1 << 5;
const F_STATUS: u64 = 1 << 16;
pub(super) const FEATURES: u64 = F_MAC | F_STATUS;

const S_LINK_UP: u16 = 1;

pub(super) const RX_QUEUE: usize = 0;
/// Size of `struct virtio_net_hdr` with VIRTIO_F_VERSION_1.
pub const NET_HDR_LEN: usize = 12;
/// Largest frame carried (without the virtio header).
pub const MAX_FRAME: usize = 65535;
/// Frames kept while the guest has no RX buffer.
pub const RX_FIFO_FRAMES: usize = 256;

/// struct virtio_net_config: mac @0, status @6, max_virtqueue_pairs @8.
pub(super) fn config_space(mac: [u8; 6]) -> [u8; CONFIG_SPACE_LEN] {
    let mut c = [0u8; CONFIG_SPACE_LEN];
    c[0..6].copy_from_slice(&mac);
    c[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
    c[8..10].copy_from_slice(&1u16.to_le_bytes());
    c
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub tx_frames: u64,
    /// TX chains that carried no valid frame (too short, too long, outside RAM).
    pub tx_dropped: u64,
    pub rx_frames: u64,
    /// Dropped because the FIFO was full.
    pub rx_dropped_fifo_full: u64,
    /// Dropped because the frame did not fit the RX buffer or exceeded MAX_FRAME.
    pub rx_dropped_too_big: u64,
    /// Dropped because the driver was not up (or the device was reset).
    pub rx_dropped_not_ready: u64,
    /// RX chains returned empty because they were not usable (readable
    /// descriptors, outside RAM).
    pub rx_bad_buffers: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct NetState {
    pub(super) rx_fifo: VecDeque<Vec<u8>>,
    pub stats: NetStats,
}

enum Delivery {
    Delivered,
    Dropped,
    NoBuffer,
}

impl NetState {
    /// Device reset: frames waiting for buffers are discarded.
    pub fn reset(&mut self) {
        let n = self.rx_fifo.len() as u64;
        self.stats.rx_dropped_not_ready += n;
        self.rx_fifo.clear();
    }

    /// Transmits every available TX chain.
    pub fn process_tx(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        features: u64,
        slot: Slot,
        out: &mut Vec<Output>,
    ) -> Result<(), Corrupt> {
        while let Some(chain) = q.pop(ram, features)? {
            let total = chain.readable_len();
            let frame_len = total.saturating_sub(NET_HDR_LEN as u64);
            let frame = if total > NET_HDR_LEN as u64
                && frame_len <= MAX_FRAME as u64
                && all_in_ram(ram, &chain.readable)
            {
                gather(ram, &chain.readable, NET_HDR_LEN as u64, frame_len as usize)
            } else {
                None
            };
            match frame {
                Some(frame) => {
                    self.stats.tx_frames += 1;
                    out.push(Output::NetTx { slot, frame });
                }
                None => self.stats.tx_dropped += 1,
            }
            q.push_used(ram, chain.head, 0)?;
        }
        Ok(())
    }

    /// The guest added RX buffers: deliver waiting frames.
    pub fn process_rx(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        features: u64,
    ) -> Result<(), Corrupt> {
        while let Some(frame) = self.rx_fifo.front() {
            match deliver(&mut self.stats, q, ram, features, frame)? {
                Delivery::NoBuffer => break,
                Delivery::Delivered | Delivery::Dropped => {
                    self.rx_fifo.pop_front();
                }
            }
        }
        Ok(())
    }

    /// A frame arrived from the network.
    pub fn receive(
        &mut self,
        q: &mut Virtqueue,
        ram: &mut Ram,
        features: u64,
        live: bool,
        frame: &[u8],
    ) -> Result<(), Corrupt> {
        if frame.len() > MAX_FRAME {
            self.stats.rx_dropped_too_big += 1;
            return Ok(());
        }
        if !live {
            self.stats.rx_dropped_not_ready += 1;
            return Ok(());
        }
        // Keep arrival order: earlier frames go first.
        self.process_rx(q, ram, features)?;
        if self.rx_fifo.is_empty() {
            if let Delivery::NoBuffer = deliver(&mut self.stats, q, ram, features, frame)? {
                self.rx_fifo.push_back(frame.to_vec());
            }
        } else if self.rx_fifo.len() < RX_FIFO_FRAMES {
            self.rx_fifo.push_back(frame.to_vec());
        } else {
            self.stats.rx_dropped_fifo_full += 1;
        }
        Ok(())
    }
}

/// Puts `frame` into the next usable RX buffer. Unusable buffers are
/// returned empty on the way (each consumes an available entry, so the
/// loop ends within one ring's worth).
fn deliver(
    stats: &mut NetStats,
    q: &mut Virtqueue,
    ram: &mut Ram,
    features: u64,
    frame: &[u8],
) -> Result<Delivery, Corrupt> {
    loop {
        let Some(chain) = q.peek(ram, features)? else {
            return Ok(Delivery::NoBuffer);
        };
        if !chain.readable.is_empty()
            || chain.writable.is_empty()
            || !all_in_ram(ram, &chain.writable)
        {
            stats.rx_bad_buffers += 1;
            q.advance(ram, features)?;
            q.push_used(ram, chain.head, 0)?;
            continue;
        }
        let need = NET_HDR_LEN + frame.len();
        if chain.writable_len() < need as u64 {
            stats.rx_dropped_too_big += 1;
            return Ok(Delivery::Dropped);
        }
        let mut hdr = [0u8; NET_HDR_LEN];
        // flags 0, gso_type GSO_NONE, hdr_len/gso_size/csum_* 0, num_buffers 1.
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        let ok = scatter(ram, &chain.writable, 0, &hdr)
            && scatter(ram, &chain.writable, NET_HDR_LEN as u64, frame);
        q.advance(ram, features)?;
        if ok {
            stats.rx_frames += 1;
            q.push_used(ram, chain.head, need as u32)?;
            return Ok(Delivery::Delivered);
        }
        // Unreachable: the buffer was checked inside RAM and big enough.
        stats.rx_bad_buffers += 1;
        q.push_used(ram, chain.head, 0)?;
    }
}
