//! The machine's ports. Every value that comes from outside the machine
//! enters as an [`Input`], applied at the step count at which the machine
//! currently stands; everything the outside world can see leaves as an
//! [`Output`]. A recorder stores `(icount, input)` pairs; a replayer applies
//! the same inputs at the same counts and so reproduces the execution
//! exactly, outputs included. Values fixed at power-on (the wall-clock time
//! the RTC starts from, the device-tree RNG seed, disk sizes) are part of
//! [`crate::MachineConfig`] instead, so they are in the initial state that a
//! primary and its backup share.

use serde::{Deserialize, Serialize};

/// Index of a virtio-mmio slot (0..`layout::VIRTIO_SLOTS`).
pub type Slot = u8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A reading of the host clock, in guest ticks since power-on.
    Time(u64),
    /// Bytes received on the console UART.
    ConsoleRx(Vec<u8>),
    /// An Ethernet frame received for the virtio-net device in `slot`.
    NetRx { slot: Slot, frame: Vec<u8> },
    /// Completion of block request `id` issued by the virtio-blk device in
    /// `slot`: the virtio status (0 ok, 1 I/O error, 2 unsupported) and, for
    /// reads, the data.
    BlkDone {
        slot: Slot,
        id: u64,
        status: u8,
        data: Vec<u8>,
    },
    /// Entropy answering request `id` of the virtio-rng device in `slot`.
    RngData { slot: Slot, id: u64, data: Vec<u8> },
}

/// A request a virtio-blk device makes of its backend.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlkOp {
    /// Read `len` bytes at byte offset `offset`.
    Read { offset: u64, len: u32 },
    /// Write `data` at byte offset `offset`; `fua` asks for it to be durable
    /// before completion.
    Write {
        offset: u64,
        data: Vec<u8>,
        fua: bool,
    },
    /// Make every completed write durable.
    Flush,
    /// Discard `len` bytes at `offset` (optional for backends).
    Discard { offset: u64, len: u64 },
}

/// What the machine produced for the outside world, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Output {
    /// Bytes written to the console UART.
    Console(Vec<u8>),
    /// An Ethernet frame transmitted by the virtio-net device in `slot`.
    NetTx { slot: Slot, frame: Vec<u8> },
    /// A block request; the backend answers with [`Input::BlkDone`] with the same `id`.
    Blk { slot: Slot, id: u64, op: BlkOp },
    /// A request for `len` bytes of entropy; answered with [`Input::RngData`].
    Rng { slot: Slot, id: u64, len: u32 },
}
