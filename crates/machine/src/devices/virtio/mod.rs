//! virtio devices on the virtio-mmio transport (virtio 1.2, modern
//! interface only): [`VirtioMmio`] owns one slot's transport registers,
//! its split virtqueues and the state of the device behind it (block,
//! network or entropy). Like every device here it is a pure state machine:
//! register accesses only record work; `process` (called by the board
//! between instructions, with guest RAM) consumes the rings and turns guest
//! requests into [`Output`]s; `apply` feeds the backend's answers
//! ([`Input`]s) back into guest memory. Requests waiting for an answer are
//! kept in device state under ids from a per-device counter, so a replay
//! matches answers exactly as the original run did. A guest can never make
//! the device panic, loop or allocate without bound: bad buffers get the
//! device's error status, a corrupt queue sets DEVICE_NEEDS_RESET.

mod blk;
pub mod mmio;
mod net;
mod queue;
mod rng;
#[cfg(test)]
mod tests;

use ftvm_cpu::Ram;
use serde::{Deserialize, Serialize};

use crate::input::{Input, Output, Slot};
use queue::{Corrupt, Virtqueue};

/// What sits behind a virtio-mmio slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceConfig {
    /// `capacity_bytes` is a multiple of 512 (the board checks before).
    Blk {
        capacity_bytes: u64,
        read_only: bool,
    },
    Net {
        mac: [u8; 6],
    },
    Rng,
}

// Device status bits (virtio 1.2 §2.1).
const S_ACKNOWLEDGE: u8 = 1;
const S_DRIVER: u8 = 2;
const S_DRIVER_OK: u8 = 4;
const S_FEATURES_OK: u8 = 8;
const S_NEEDS_RESET: u8 = 0x40;
const S_FAILED: u8 = 0x80;

// InterruptStatus bits.
const INT_VRING: u32 = 1;
const INT_CONFIG: u32 = 2;

/// VIRTIO_F_VERSION_1.
const F_VERSION_1: u64 = 1 << 32;

/// Device-model state behind the transport.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum DeviceState {
    Blk(blk::BlkState),
    Net(net::NetState),
    Rng(rng::RngState),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioMmio {
    slot: Slot,
    cfg: DeviceConfig,
    /// Device status register (the driver's bits plus NEEDS_RESET).
    status: u8,
    device_features_sel: u32,
    driver_features_sel: u32,
    /// Feature bits 0..63 the driver accepted.
    driver_features: u64,
    /// The driver set a bit above 63 (never offered): FEATURES_OK is refused.
    driver_features_beyond: bool,
    queue_sel: u32,
    queues: Vec<Virtqueue>,
    interrupt_status: u32,
    /// Queues notified and not yet processed (bit i = queue i).
    pending_notify: u32,
    /// Next backend request id. Never reset, so an answer to a request from
    /// before a device reset can never match a newer request.
    next_id: u64,
    dev: DeviceState,
}

impl VirtioMmio {
    pub fn new(slot: Slot, cfg: DeviceConfig) -> Self {
        let dev = match cfg {
            DeviceConfig::Blk { .. } => DeviceState::Blk(blk::BlkState::default()),
            DeviceConfig::Net { .. } => DeviceState::Net(net::NetState::default()),
            DeviceConfig::Rng => DeviceState::Rng(rng::RngState::default()),
        };
        let mut d = VirtioMmio {
            slot,
            cfg,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            driver_features_beyond: false,
            queue_sel: 0,
            queues: Vec::new(),
            interrupt_status: 0,
            pending_notify: 0,
            next_id: 1,
            dev,
        };
        d.reset();
        d
    }

    /// Whether restored state is shaped like a device of its own
    /// configuration in `slot`: the queues it has and the device model.
    pub fn check(&self, slot: Slot) -> Result<(), String> {
        let model_matches = matches!(
            (&self.cfg, &self.dev),
            (DeviceConfig::Blk { .. }, DeviceState::Blk(_))
                | (DeviceConfig::Net { .. }, DeviceState::Net(_))
                | (DeviceConfig::Rng, DeviceState::Rng(_))
        );
        if self.slot != slot || !model_matches || self.queues.len() != self.num_queues() {
            return Err(format!(
                "virtio slot {slot}: state of another device ({:?} with {} queues in slot {})",
                self.cfg,
                self.queues.len(),
                self.slot
            ));
        }
        if let DeviceConfig::Blk { capacity_bytes, .. } = self.cfg {
            if !capacity_bytes.is_multiple_of(512) {
                return Err(format!(
                    "virtio slot {slot}: disk of {capacity_bytes} bytes"
                ));
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &DeviceConfig {
        &self.cfg
    }

    /// Register access at `offset` in the 0x1000-byte window (size 1/2/4/8;
    /// registers below 0x100 answer 32-bit accesses only, config space at
    /// 0x100 allows any size).
    pub fn read(&mut self, offset: u64, size: u8) -> u64 {
        mmio::read(self, offset, size)
    }

    /// QueueNotify and status writes only record pending work; nothing
    /// touches guest memory here.
    pub fn write(&mut self, offset: u64, size: u8, value: u64) {
        mmio::write(self, offset, size, value)
    }

    /// True if `process` has something to do: a queue was notified (or
    /// the driver just finished initialisation) and the device is live.
    pub fn has_work(&self) -> bool {
        self.live() && self.pending_notify != 0
    }

    /// Handles pending notifications with access to guest RAM: pops
    /// available descriptor chains queue by queue (ascending index, ring
    /// order within a queue), emits Outputs, completes what can be
    /// completed at once and raises the used-buffer interrupt unless the
    /// driver suppressed it.
    pub fn process(&mut self, ram: &mut Ram, out: &mut Vec<Output>) {
        if !self.live() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_notify);
        for qi in 0..self.queues.len() {
            if pending & (1 << qi) == 0 {
                continue;
            }
            if let Err(e) = self.run_queue(qi, ram, out) {
                self.fail(e);
                return;
            }
        }
    }

    /// Applies an Input addressed to this slot (NetRx / BlkDone / RngData).
    /// Inputs for another slot, of the wrong kind, for unknown request ids
    /// or for a device reset meanwhile are ignored.
    pub fn apply(&mut self, input: &Input, ram: &mut Ram) {
        let live = self.live();
        let features = self.driver_features;
        let Some(q) = self.queues.get_mut(0) else {
            return;
        };
        let live = live && q.ready;
        let r = match (input, &mut self.dev) {
            (Input::NetRx { slot, frame }, DeviceState::Net(n)) if *slot == self.slot => {
                n.receive(q, ram, features, live, frame)
            }
            (
                Input::BlkDone {
                    slot,
                    id,
                    status,
                    data,
                },
                DeviceState::Blk(b),
            ) if *slot == self.slot => b.complete(q, ram, live, *id, *status, data),
            (Input::RngData { slot, id, data }, DeviceState::Rng(r)) if *slot == self.slot => {
                r.complete(q, ram, live, *id, data)
            }
            _ => return,
        };
        let r = r.and_then(|()| if live { self.signal(0, ram) } else { Ok(()) });
        if let Err(e) = r {
            self.fail(e);
        }
    }

    /// Level of the interrupt line (InterruptStatus != 0).
    pub fn irq_level(&self) -> bool {
        self.interrupt_status != 0
    }

    // ---- internals ----

    fn num_queues(&self) -> usize {
        match self.cfg {
            DeviceConfig::Blk { .. } | DeviceConfig::Rng => 1,
            DeviceConfig::Net { .. } => 2,
        }
    }

    /// Feature bits this device offers.
    fn device_features(&self) -> u64 {
        let common = F_VERSION_1 | queue::F_INDIRECT_DESC | queue::F_EVENT_IDX;
        common
            | match self.cfg {
                DeviceConfig::Blk { read_only, .. } => blk::features(read_only),
                DeviceConfig::Net { .. } => net::FEATURES,
                DeviceConfig::Rng => 0,
            }
    }

    /// Device-specific configuration space (little-endian, zero beyond
    /// the fields the device defines).
    fn config_space(&self) -> [u8; CONFIG_SPACE_LEN] {
        match self.cfg {
            DeviceConfig::Blk { capacity_bytes, .. } => blk::config_space(capacity_bytes),
            DeviceConfig::Net { mac } => net::config_space(mac),
            DeviceConfig::Rng => [0; CONFIG_SPACE_LEN],
        }
    }

    /// The driver finished initialisation and the device has not failed.
    fn live(&self) -> bool {
        let need = S_DRIVER_OK | S_FEATURES_OK;
        self.status & need == need && self.status & (S_NEEDS_RESET | S_FAILED) == 0
    }

    /// Device reset: everything the driver negotiated or set up, and every
    /// request in flight, is forgotten. The request id counter carries on.
    fn reset(&mut self) {
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.driver_features_beyond = false;
        self.queue_sel = 0;
        self.queues = vec![Virtqueue::default(); self.num_queues()];
        self.interrupt_status = 0;
        self.pending_notify = 0;
        match &mut self.dev {
            DeviceState::Blk(b) => b.reset(),
            DeviceState::Net(n) => n.reset(),
            DeviceState::Rng(r) => r.reset(),
        }
    }

    /// Queue `qi` was disabled by the driver: its ring indices start over
    /// (a driver re-enables a queue only on freshly initialised rings) and
    /// requests popped from it can no longer be completed into it.
    fn queue_disabled(&mut self, qi: usize) {
        self.pending_notify &= !(1 << qi);
        if let Some(q) = self.queues.get_mut(qi) {
            q.disable();
        }
        if qi == 0 {
            match &mut self.dev {
                DeviceState::Blk(b) => b.reset(),
                DeviceState::Net(_) => {}
                DeviceState::Rng(r) => r.reset(),
            }
        }
    }

    /// The queue is corrupt: DEVICE_NEEDS_RESET and a configuration-change
    /// interrupt; the device does nothing more until reset.
    fn fail(&mut self, _why: Corrupt) {
        self.status |= S_NEEDS_RESET;
        self.interrupt_status |= INT_CONFIG;
        self.pending_notify = 0;
    }

    fn run_queue(
        &mut self,
        qi: usize,
        ram: &mut Ram,
        out: &mut Vec<Output>,
    ) -> Result<(), Corrupt> {
        let features = self.driver_features;
        let slot = self.slot;
        let Some(q) = self.queues.get_mut(qi) else {
            return Ok(());
        };
        if !q.ready {
            return Ok(());
        }
        match (&mut self.dev, &self.cfg) {
            (
                DeviceState::Blk(b),
                DeviceConfig::Blk {
                    capacity_bytes,
                    read_only,
                },
            ) => {
                let disk = blk::Disk {
                    slot,
                    capacity_bytes: *capacity_bytes,
                    read_only: *read_only,
                };
                b.process(q, ram, features, &disk, &mut self.next_id, out)?
            }
            (DeviceState::Net(n), _) if qi == net::RX_QUEUE => n.process_rx(q, ram, features)?,
            (DeviceState::Net(n), _) => n.process_tx(q, ram, features, slot, out)?,
            (DeviceState::Rng(r), _) => {
                r.process(q, ram, features, slot, &mut self.next_id, out)?
            }
            _ => {}
        }
        self.signal(qi, ram)
    }

    /// Raises the used-buffer interrupt if queue `qi` has new used entries
    /// and the driver wants to hear about them.
    fn signal(&mut self, qi: usize, ram: &Ram) -> Result<(), Corrupt> {
        let features = self.driver_features;
        if let Some(q) = self.queues.get_mut(qi) {
            if q.take_signal(ram, features)? {
                self.interrupt_status |= INT_VRING;
            }
        }
        Ok(())
    }
}

/// Bytes of device configuration space modelled (reads beyond are zero).
const CONFIG_SPACE_LEN: usize = 64;

/// Takes the next request id.
fn take_id(next_id: &mut u64) -> u64 {
    let id = *next_id;
    *next_id = next_id.wrapping_add(1);
    id
}
