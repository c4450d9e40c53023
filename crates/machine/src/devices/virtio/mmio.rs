//! The virtio-mmio register file (virtio 1.2 §4.2.2, version 2 only):
//! identification, the two 32-bit feature windows, queue selection and
//! configuration, notification, interrupt status/acknowledge, the device
//! status register with its FEATURES_OK handshake, shared-memory probing
//! (no regions) and the device configuration space at 0x100. Registers
//! below 0x100 answer naturally aligned 32-bit accesses only (other sizes
//! read 0 and are ignored on write, as QEMU does); the configuration space
//! answers any size. Nothing here touches guest memory: a QueueNotify only
//! sets a pending bit for `process`.

use super::{
    VirtioMmio, CONFIG_SPACE_LEN, INT_CONFIG, INT_VRING, S_ACKNOWLEDGE, S_DRIVER, S_DRIVER_OK,
    S_FAILED, S_FEATURES_OK, S_NEEDS_RESET,
};

const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
pub const DRIVER_FEATURES: u64 = 0x020;
pub const DRIVER_FEATURES_SEL: u64 = 0x024;
pub const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
pub const QUEUE_NUM: u64 = 0x038;
pub const QUEUE_READY: u64 = 0x044;
pub const QUEUE_NOTIFY: u64 = 0x050;
const INTERRUPT_STATUS: u64 = 0x060;
pub const INTERRUPT_ACK: u64 = 0x064;
pub const STATUS: u64 = 0x070;
pub const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
pub const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const SHM_LEN_LOW: u64 = 0x0b0;
const SHM_LEN_HIGH: u64 = 0x0b4;
const CONFIG_GENERATION: u64 = 0x0fc;
const CONFIG: u64 = 0x100;
const WINDOW: u64 = 0x1000;

/// "virt" in little-endian.
const MAGIC: u32 = 0x7472_6976;
/// The modern (non-legacy) virtio-mmio interface.
const MMIO_VERSION: u32 = 2;
/// "QEMU", as QEMU's virtio-mmio reports.
const VENDOR: u32 = 0x554d_4551;

/// Device status bits a driver may set (NEEDS_RESET is the device's).
const DRIVER_STATUS_BITS: u8 = S_ACKNOWLEDGE | S_DRIVER | S_DRIVER_OK | S_FEATURES_OK | S_FAILED;

pub(super) fn read(d: &mut VirtioMmio, offset: u64, size: u8) -> u64 {
    if (CONFIG..WINDOW).contains(&offset) {
        return read_config(d, offset - CONFIG, size);
    }
    if size != 4 || offset & 3 != 0 {
        return 0;
    }
    let q = d.queues.get(d.queue_sel as usize);
    let v: u32 = match offset {
        MAGIC_VALUE => MAGIC,
        VERSION => MMIO_VERSION,
        DEVICE_ID => device_id(d),
        VENDOR_ID => VENDOR,
        DEVICE_FEATURES => match d.device_features_sel {
            0 => d.device_features() as u32,
            1 => (d.device_features() >> 32) as u32,
            _ => 0,
        },
        QUEUE_NUM_MAX => q.map_or(0, |_| super::queue::QUEUE_NUM_MAX),
        QUEUE_NUM => q.map_or(0, |q| q.num),
        QUEUE_READY => q.map_or(0, |q| q.ready as u32),
        INTERRUPT_STATUS => d.interrupt_status,
        STATUS => d.status as u32,
        QUEUE_DESC_LOW => q.map_or(0, |q| q.desc as u32),
        QUEUE_DESC_HIGH => q.map_or(0, |q| (q.desc >> 32) as u32),
        QUEUE_DRIVER_LOW => q.map_or(0, |q| q.driver as u32),
        QUEUE_DRIVER_HIGH => q.map_or(0, |q| (q.driver >> 32) as u32),
        QUEUE_DEVICE_LOW => q.map_or(0, |q| q.device as u32),
        QUEUE_DEVICE_HIGH => q.map_or(0, |q| (q.device >> 32) as u32),
        // No shared memory regions: every SHMSel reads length -1.
        SHM_LEN_LOW | SHM_LEN_HIGH => u32::MAX,
        // The configuration space never changes.
        CONFIG_GENERATION => 0,
        _ => 0,
    };
    v as u64
}

pub(super) fn write(d: &mut VirtioMmio, offset: u64, size: u8, value: u64) {
    if offset >= CONFIG {
        // blk (no CONFIG_WCE), net (no legacy MAC writes) and rng have no
        // writable configuration fields.
        return;
    }
    if size != 4 || offset & 3 != 0 {
        return;
    }
    let v = value as u32;
    let qsel = d.queue_sel as usize;
    match offset {
        DEVICE_FEATURES_SEL => d.device_features_sel = v,
        // Features are fixed once FEATURES_OK was accepted.
        DRIVER_FEATURES if d.status & S_FEATURES_OK == 0 => match d.driver_features_sel {
            0 => d.driver_features = (d.driver_features & !0xffff_ffff) | v as u64,
            1 => d.driver_features = (d.driver_features & 0xffff_ffff) | (v as u64) << 32,
            _ => d.driver_features_beyond |= v != 0,
        },
        DRIVER_FEATURES_SEL => d.driver_features_sel = v,
        QUEUE_SEL => d.queue_sel = v,
        QUEUE_NUM => with_idle_queue(d, |q| q.num = v),
        QUEUE_READY => {
            if let Some(q) = d.queues.get_mut(qsel) {
                let was = q.ready;
                q.ready = v & 1 != 0;
                if was && !q.ready {
                    d.queue_disabled(qsel);
                }
            }
        }
        QUEUE_NOTIFY if (v as usize) < d.queues.len() => d.pending_notify |= 1 << v,
        INTERRUPT_ACK => d.interrupt_status &= !(v & (INT_VRING | INT_CONFIG)),
        STATUS => write_status(d, v as u8),
        QUEUE_DESC_LOW => with_idle_queue(d, |q| q.desc = set_low(q.desc, v)),
        QUEUE_DESC_HIGH => with_idle_queue(d, |q| q.desc = set_high(q.desc, v)),
        QUEUE_DRIVER_LOW => with_idle_queue(d, |q| q.driver = set_low(q.driver, v)),
        QUEUE_DRIVER_HIGH => with_idle_queue(d, |q| q.driver = set_high(q.driver, v)),
        QUEUE_DEVICE_LOW => with_idle_queue(d, |q| q.device = set_low(q.device, v)),
        QUEUE_DEVICE_HIGH => with_idle_queue(d, |q| q.device = set_high(q.device, v)),
        // SHMSel, QueueReset (VIRTIO_F_RING_RESET not offered), read-only
        // and reserved registers.
        _ => {}
    }
}

fn device_id(d: &VirtioMmio) -> u32 {
    match d.cfg {
        super::DeviceConfig::Net { .. } => 1,
        super::DeviceConfig::Blk { .. } => 2,
        super::DeviceConfig::Rng => 4,
    }
}

/// Applies `f` to the selected queue if it exists and is not ready (a
/// live queue's layout cannot change under the device).
fn with_idle_queue(d: &mut VirtioMmio, f: impl FnOnce(&mut super::Virtqueue)) {
    if let Some(q) = d.queues.get_mut(d.queue_sel as usize) {
        if !q.ready {
            f(q);
        }
    }
}

fn set_low(r: u64, v: u32) -> u64 {
    (r & !0xffff_ffff) | v as u64
}

fn set_high(r: u64, v: u32) -> u64 {
    (r & 0xffff_ffff) | (v as u64) << 32
}

/// A Status write: 0 resets the device; setting FEATURES_OK is refused
/// (the bit stays clear, as the driver will read back) when the driver
/// accepted a feature we did not offer or did not accept VERSION_1.
fn write_status(d: &mut VirtioMmio, v: u8) {
    if v == 0 {
        d.reset();
        return;
    }
    let was_live = d.live();
    let mut v = v & DRIVER_STATUS_BITS;
    if v & S_FEATURES_OK != 0 && d.status & S_FEATURES_OK == 0 && !features_acceptable(d) {
        v &= !S_FEATURES_OK;
    }
    d.status = v | (d.status & S_NEEDS_RESET);
    if !was_live && d.live() {
        // Buffers may have been made available (and notified) before
        // DRIVER_OK; look at every queue once.
        d.pending_notify = (1u32 << d.queues.len()) - 1;
    }
}

fn features_acceptable(d: &VirtioMmio) -> bool {
    let f = d.driver_features;
    f & !d.device_features() == 0 && f & super::F_VERSION_1 != 0 && !d.driver_features_beyond
}

fn read_config(d: &VirtioMmio, off: u64, size: u8) -> u64 {
    let space = d.config_space();
    let n = size as usize;
    if !matches!(size, 1 | 2 | 4 | 8) {
        return 0;
    }
    let Ok(off) = usize::try_from(off) else {
        return 0;
    };
    match space.get(off..off.saturating_add(n).min(CONFIG_SPACE_LEN)) {
        Some(bytes) if bytes.len() == n => {
            let mut b = [0u8; 8];
            b[..n].copy_from_slice(bytes);
            u64::from_le_bytes(b)
        }
        _ => 0,
    }
}
