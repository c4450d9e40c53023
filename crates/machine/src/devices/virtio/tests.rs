//! Tests of the virtio devices through a small fake guest driver that lays
//! out split rings in a `Ram`, negotiates features through the registers
//! the way Linux's virtio_mmio/virtio_ring do, posts buffers, notifies,
//! runs `process`, checks the Outputs, applies Inputs and inspects the used
//! rings, interrupts and guest memory. Hostile-guest and randomized tests
//! check that nothing the guest (or the backend) does can panic the device
//! or make it loop.

use std::collections::BTreeMap;

use super::*;
use crate::input::BlkOp;
use crate::layout::RAM_BASE;

const RAM_SIZE: u64 = 1 << 20;
/// Rings for queue i live at RING_AREA + i * 0x4000.
const RING_AREA: u64 = RAM_BASE;
/// Buffers are allocated from here to the end of RAM.
const HEAP: u64 = RAM_BASE + 0x10000;

mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEV_FEAT: u64 = 0x010;
    pub const DEV_FEAT_SEL: u64 = 0x014;
    pub const DRV_FEAT: u64 = 0x020;
    pub const DRV_FEAT_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INT_STATUS: u64 = 0x060;
    pub const INT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const DESC_LO: u64 = 0x080;
    pub const DESC_HI: u64 = 0x084;
    pub const DRIVER_LO: u64 = 0x090;
    pub const DRIVER_HI: u64 = 0x094;
    pub const DEVICE_LO: u64 = 0x0a0;
    pub const DEVICE_HI: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LO: u64 = 0x0b0;
    pub const SHM_LEN_HI: u64 = 0x0b4;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GEN: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

const ACK: u32 = 1;
const DRIVER: u32 = 2;
const DRIVER_OK: u32 = 4;
const FEATURES_OK: u32 = 8;
const NEEDS_RESET: u32 = 0x40;

const VERSION_1: u64 = 1 << 32;
const INDIRECT: u64 = 1 << 28;
const EVENT_IDX: u64 = 1 << 29;

const D_NEXT: u16 = 1;
const D_WRITE: u16 = 2;
const D_INDIRECT: u16 = 4;

const BLK_IN: u32 = 0;
const BLK_OUT: u32 = 1;
const BLK_FLUSH: u32 = 4;
const BLK_GET_ID: u32 = 8;

/// A buffer for a chain: address, length, device-writable.
type Buf = (u64, u32, bool);

#[derive(Clone, Debug, Default)]
struct DQ {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    chains: BTreeMap<u16, Vec<u16>>,
}

struct Drv {
    dev: VirtioMmio,
    ram: Ram,
    out: Vec<Output>,
    qs: Vec<DQ>,
    features: u64,
    heap: u64,
}

fn blk_cfg(sectors: u64, read_only: bool) -> DeviceConfig {
    DeviceConfig::Blk {
        capacity_bytes: sectors * 512,
        read_only,
    }
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

impl Drv {
    fn new(cfg: DeviceConfig) -> Drv {
        Drv::with_slot(3, cfg)
    }

    fn with_slot(slot: Slot, cfg: DeviceConfig) -> Drv {
        Drv {
            dev: VirtioMmio::new(slot, cfg),
            ram: Ram::new(RAM_BASE, RAM_SIZE),
            out: Vec::new(),
            qs: Vec::new(),
            features: 0,
            heap: HEAP,
        }
    }

    /// A device initialised like Linux does, with every offered feature in
    /// `want` and queues of `size` entries.
    fn up(cfg: DeviceConfig, want: u64, size: u16) -> Drv {
        let mut d = Drv::new(cfg);
        assert!(d.init(want, size));
        d
    }

    fn rd(&mut self, off: u64) -> u32 {
        self.dev.read(off, 4) as u32
    }

    fn wr(&mut self, off: u64, v: u32) {
        self.dev.write(off, 4, v as u64)
    }

    fn status(&mut self) -> u32 {
        self.rd(reg::STATUS)
    }

    fn device_features(&mut self) -> u64 {
        self.wr(reg::DEV_FEAT_SEL, 1);
        let hi = self.rd(reg::DEV_FEAT) as u64;
        self.wr(reg::DEV_FEAT_SEL, 0);
        let lo = self.rd(reg::DEV_FEAT) as u64;
        hi << 32 | lo
    }

    /// virtio_dev_probe: reset, ACKNOWLEDGE, DRIVER, features, FEATURES_OK
    /// and read back. Returns whether the device accepted.
    fn negotiate_exact(&mut self, f: u64) -> bool {
        self.wr(reg::STATUS, 0);
        assert_eq!(self.status(), 0);
        self.wr(reg::STATUS, ACK);
        self.wr(reg::STATUS, ACK | DRIVER);
        self.wr(reg::DRV_FEAT_SEL, 1);
        self.wr(reg::DRV_FEAT, (f >> 32) as u32);
        self.wr(reg::DRV_FEAT_SEL, 0);
        self.wr(reg::DRV_FEAT, f as u32);
        self.wr(reg::STATUS, ACK | DRIVER | FEATURES_OK);
        self.features = f;
        self.status() & FEATURES_OK != 0
    }

    fn negotiate(&mut self, want: u64) -> bool {
        let f = self.device_features() & want;
        self.negotiate_exact(f)
    }

    /// vm_setup_vq.
    fn setup_queue(&mut self, qi: usize, size: u16) {
        self.wr(reg::QUEUE_SEL, qi as u32);
        assert_eq!(self.rd(reg::QUEUE_READY), 0, "queue already live");
        let max = self.rd(reg::QUEUE_NUM_MAX);
        assert!(size as u32 <= max);
        let base = RING_AREA + qi as u64 * 0x4000;
        let q = DQ {
            size,
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            free: (0..size).rev().collect(),
            ..DQ::default()
        };
        self.ram.write_bytes(base, &[0u8; 0x4000]);
        self.wr(reg::QUEUE_NUM, size as u32);
        self.wr(reg::DESC_LO, q.desc as u32);
        self.wr(reg::DESC_HI, (q.desc >> 32) as u32);
        self.wr(reg::DRIVER_LO, q.avail as u32);
        self.wr(reg::DRIVER_HI, (q.avail >> 32) as u32);
        self.wr(reg::DEVICE_LO, q.used as u32);
        self.wr(reg::DEVICE_HI, (q.used >> 32) as u32);
        self.wr(reg::QUEUE_READY, 1);
        assert_eq!(self.rd(reg::QUEUE_READY), 1);
        if self.qs.len() <= qi {
            self.qs.resize(qi + 1, DQ::default());
        }
        self.qs[qi] = q;
    }

    fn driver_ok(&mut self) {
        let s = self.status();
        self.wr(reg::STATUS, s | DRIVER_OK);
    }

    fn nqueues(&self) -> usize {
        match self.dev.config() {
            DeviceConfig::Net { .. } => 2,
            _ => 1,
        }
    }

    fn init(&mut self, want: u64, size: u16) -> bool {
        self.qs.clear();
        self.heap = HEAP;
        if !self.negotiate(want) {
            return false;
        }
        for qi in 0..self.nqueues() {
            self.setup_queue(qi, size);
        }
        self.driver_ok();
        true
    }

    fn alloc(&mut self, len: u64) -> u64 {
        let len = len.max(1).div_ceil(16) * 16;
        if self.heap + len > RAM_BASE + RAM_SIZE {
            self.heap = HEAP;
        }
        let a = self.heap;
        self.heap += len;
        a
    }

    fn put(&mut self, addr: u64, data: &[u8]) {
        assert!(self.ram.write_bytes(addr, data));
    }

    fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        assert!(self.ram.read_bytes(addr, &mut v));
        v
    }

    fn get_u16(&self, addr: u64) -> u16 {
        u16::from_le_bytes(self.get(addr, 2).try_into().unwrap())
    }

    fn put_u16(&mut self, addr: u64, v: u16) {
        self.put(addr, &v.to_le_bytes());
    }

    fn write_desc(&mut self, at: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..16].copy_from_slice(&next.to_le_bytes());
        self.put(at, &b);
    }

    /// Publishes `head` in the available ring.
    fn publish(&mut self, qi: usize, head: u16) {
        let q = &mut self.qs[qi];
        let at = q.avail + 4 + 2 * (q.avail_idx % q.size) as u64;
        q.avail_idx = q.avail_idx.wrapping_add(1);
        let (idx, avail) = (q.avail_idx, q.avail);
        self.put_u16(at, head);
        self.put_u16(avail + 2, idx);
    }

    /// virtqueue_add_split with direct descriptors.
    fn add(&mut self, qi: usize, bufs: &[Buf]) -> u16 {
        let n = bufs.len();
        assert!(
            n > 0 && self.qs[qi].free.len() >= n,
            "driver out of descriptors"
        );
        let ids: Vec<u16> = (0..n).map(|_| self.qs[qi].free.pop().unwrap()).collect();
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let mut flags = if w { D_WRITE } else { 0 };
            let next = if i + 1 < n {
                flags |= D_NEXT;
                ids[i + 1]
            } else {
                0
            };
            let at = self.qs[qi].desc + 16 * ids[i] as u64;
            self.write_desc(at, addr, len, flags, next);
        }
        self.qs[qi].chains.insert(ids[0], ids.clone());
        self.publish(qi, ids[0]);
        ids[0]
    }

    /// virtqueue_add_split with one indirect table.
    fn add_indirect(&mut self, qi: usize, bufs: &[Buf]) -> u16 {
        let n = bufs.len();
        let table = self.alloc(16 * n as u64);
        for (i, &(addr, len, w)) in bufs.iter().enumerate() {
            let mut flags = if w { D_WRITE } else { 0 };
            if i + 1 < n {
                flags |= D_NEXT;
            }
            self.write_desc(table + 16 * i as u64, addr, len, flags, (i + 1) as u16);
        }
        let head = self.qs[qi].free.pop().unwrap();
        let at = self.qs[qi].desc + 16 * head as u64;
        self.write_desc(at, table, 16 * n as u32, D_INDIRECT, 0);
        self.qs[qi].chains.insert(head, vec![head]);
        self.publish(qi, head);
        head
    }

    fn notify(&mut self, qi: usize) {
        self.wr(reg::QUEUE_NOTIFY, qi as u32);
    }

    /// What the board does between instructions.
    fn run(&mut self) {
        let mut rounds = 0;
        while self.dev.has_work() {
            self.dev.process(&mut self.ram, &mut self.out);
            rounds += 1;
            assert!(rounds < 4, "process left work pending");
        }
    }

    fn kick(&mut self, qi: usize) -> Vec<Output> {
        self.notify(qi);
        self.run();
        std::mem::take(&mut self.out)
    }

    fn apply(&mut self, input: Input) {
        self.dev.apply(&input, &mut self.ram);
    }

    /// New used entries (id, len), returning their descriptors to the free list.
    fn used(&mut self, qi: usize) -> Vec<(u32, u32)> {
        let q = self.qs[qi].clone();
        let idx = self.get_u16(q.used + 2);
        let mut v = Vec::new();
        let mut last = q.last_used;
        while last != idx {
            let at = q.used + 4 + 8 * (last % q.size) as u64;
            let e = self.get(at, 8);
            let id = u32::from_le_bytes(e[0..4].try_into().unwrap());
            let len = u32::from_le_bytes(e[4..8].try_into().unwrap());
            if let Some(descs) = self.qs[qi].chains.remove(&(id as u16)) {
                self.qs[qi].free.extend(descs);
            }
            v.push((id, len));
            last = last.wrapping_add(1);
        }
        self.qs[qi].last_used = last;
        v
    }

    fn ack(&mut self) -> u32 {
        let s = self.rd(reg::INT_STATUS);
        self.wr(reg::INT_ACK, s);
        assert!(!self.dev.irq_level());
        s
    }

    fn broken(&mut self) -> bool {
        self.status() & NEEDS_RESET != 0
    }

    // ---- virtio-blk requests ----

    /// Posts a request: header, optional OUT data, `in_len` bytes of IN
    /// data, status byte (prefilled 0xff). Returns (head, status addr, in addr).
    fn blk(&mut self, t: u32, sector: u64, out_data: &[u8], in_len: u32) -> (u16, u64, u64) {
        let hdr = self.alloc(16);
        let mut h = [0u8; 16];
        h[0..4].copy_from_slice(&t.to_le_bytes());
        h[8..16].copy_from_slice(&sector.to_le_bytes());
        self.put(hdr, &h);
        let mut bufs = vec![(hdr, 16, false)];
        if !out_data.is_empty() {
            let a = self.alloc(out_data.len() as u64);
            self.put(a, out_data);
            bufs.push((a, out_data.len() as u32, false));
        }
        let in_addr = self.alloc(in_len as u64);
        if in_len > 0 {
            bufs.push((in_addr, in_len, true));
        }
        let st = self.alloc(1);
        self.put(st, &[0xff]);
        bufs.push((st, 1, true));
        let head = self.add(0, &bufs);
        (head, st, in_addr)
    }

    fn status_byte(&self, at: u64) -> u8 {
        self.get(at, 1)[0]
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn single_blk(out: &[Output]) -> (u64, BlkOp) {
    match out {
        [Output::Blk { slot: 3, id, op }] => (*id, op.clone()),
        other => panic!("expected one block request, got {other:?}"),
    }
}

const ALL: u64 = u64::MAX;

// ---------------------------------------------------------------------
// Transport
// ---------------------------------------------------------------------

#[test]
fn identification_registers() {
    for (cfg, id) in [
        (blk_cfg(8, false), 2),
        (DeviceConfig::Net { mac: MAC }, 1),
        (DeviceConfig::Rng, 4),
    ] {
        let mut d = Drv::new(cfg);
        assert_eq!(d.rd(reg::MAGIC), 0x7472_6976);
        assert_eq!(d.rd(reg::VERSION), 2);
        assert_eq!(d.rd(reg::DEVICE_ID), id);
        assert_eq!(d.rd(reg::VENDOR_ID), 0x554d_4551);
        assert_eq!(d.rd(reg::QUEUE_NUM_MAX), 256);
        d.wr(reg::QUEUE_SEL, 2);
        assert_eq!(d.rd(reg::QUEUE_NUM_MAX), 0, "no queue 2");
        d.wr(reg::SHM_SEL, 0);
        assert_eq!(d.rd(reg::SHM_LEN_LO), u32::MAX);
        assert_eq!(d.rd(reg::SHM_LEN_HI), u32::MAX);
        assert_eq!(d.rd(reg::CONFIG_GEN), 0);
        assert_eq!(d.rd(reg::QUEUE_RESET), 0);
        assert!(!d.dev.irq_level());
        assert!(!d.dev.has_work());
    }
    let mut d = Drv::new(DeviceConfig::Net { mac: MAC });
    d.wr(reg::QUEUE_SEL, 1);
    assert_eq!(d.rd(reg::QUEUE_NUM_MAX), 256, "net has TX queue 1");
}

#[test]
fn offered_features_per_device() {
    let mut d = Drv::new(blk_cfg(8, false));
    let common = VERSION_1 | INDIRECT | EVENT_IDX;
    // SIZE_MAX, SEG_MAX, BLK_SIZE, FLUSH.
    assert_eq!(
        d.device_features(),
        common | 1 << 1 | 1 << 2 | 1 << 6 | 1 << 9
    );
    let mut d = Drv::new(blk_cfg(8, true));
    assert_eq!(
        d.device_features(),
        common | 1 << 1 | 1 << 2 | 1 << 5 | 1 << 6 | 1 << 9
    );
    let mut d = Drv::new(DeviceConfig::Net { mac: MAC });
    assert_eq!(d.device_features(), common | 1 << 5 | 1 << 16);
    let mut d = Drv::new(DeviceConfig::Rng);
    assert_eq!(d.device_features(), common);
    d.wr(reg::DEV_FEAT_SEL, 2);
    assert_eq!(d.rd(reg::DEV_FEAT), 0);
}

#[test]
fn config_space_blk() {
    let mut d = Drv::new(blk_cfg(0x1_0000_0001, false));
    let cap_lo = d.dev.read(reg::CONFIG, 4);
    let cap_hi = d.dev.read(reg::CONFIG + 4, 4);
    assert_eq!(cap_hi << 32 | cap_lo, 0x1_0000_0001);
    assert_eq!(d.dev.read(reg::CONFIG, 8), 0x1_0000_0001);
    assert_eq!(d.dev.read(reg::CONFIG + 8, 4), 32 * 1024, "size_max");
    assert_eq!(d.dev.read(reg::CONFIG + 12, 4), 128, "seg_max");
    assert_eq!(d.dev.read(reg::CONFIG + 20, 4), 512, "blk_size");
    assert_eq!(d.dev.read(reg::CONFIG + 4, 1), 1);
    assert_eq!(d.dev.read(reg::CONFIG + 21, 1), 2);
    assert_eq!(
        d.dev.read(reg::CONFIG + 0x40, 4),
        0,
        "beyond modelled config"
    );
    assert_eq!(d.dev.read(reg::CONFIG + 62, 4), 0, "straddles the end");
    assert_eq!(d.dev.read(0xffc, 4), 0);
    // Config writes are ignored.
    d.dev.write(reg::CONFIG, 4, 0);
    assert_eq!(d.dev.read(reg::CONFIG, 4), 1);
}

#[test]
fn config_space_net() {
    let mut d = Drv::new(DeviceConfig::Net { mac: MAC });
    let mac: Vec<u8> = (0..6)
        .map(|i| d.dev.read(reg::CONFIG + i, 1) as u8)
        .collect();
    assert_eq!(mac, MAC);
    assert_eq!(d.dev.read(reg::CONFIG + 6, 2), 1, "LINK_UP");
    d.dev.write(reg::CONFIG, 1, 0xff);
    assert_eq!(d.dev.read(reg::CONFIG, 1), 0x52);
    let mut r = Drv::new(DeviceConfig::Rng);
    assert_eq!(r.dev.read(reg::CONFIG, 8), 0);
}

#[test]
fn register_access_sizes_and_bad_offsets() {
    let mut d = Drv::new(DeviceConfig::Rng);
    assert_eq!(d.dev.read(reg::MAGIC, 1), 0, "registers are 32-bit only");
    assert_eq!(d.dev.read(reg::MAGIC, 2), 0);
    assert_eq!(d.dev.read(reg::MAGIC, 8), 0);
    assert_eq!(d.dev.read(reg::MAGIC + 2, 4), 0, "misaligned");
    d.dev.write(reg::STATUS, 1, ACK as u64);
    assert_eq!(d.status(), 0, "byte write to Status ignored");
    for off in [0x1000, 0x2000, u64::MAX, u64::MAX - 3] {
        for size in [0, 1, 2, 3, 4, 8, 255] {
            assert_eq!(d.dev.read(off, size), 0);
            d.dev.write(off, size, u64::MAX);
        }
    }
    assert_eq!(d.status(), 0);
}

#[test]
fn linux_negotiation_accepts_offered_features() {
    let mut d = Drv::new(blk_cfg(8, false));
    assert!(d.negotiate(ALL));
    assert_eq!(d.status(), ACK | DRIVER | FEATURES_OK);
    // Only VERSION_1: fine too.
    assert!(d.negotiate(VERSION_1));
}

#[test]
fn negotiation_refusals() {
    let mut d = Drv::new(DeviceConfig::Net { mac: MAC });
    let offered = d.device_features();
    assert!(
        !d.negotiate_exact(offered | 1 << 15),
        "MRG_RXBUF is not offered"
    );
    assert_eq!(d.status(), ACK | DRIVER);
    assert!(
        !d.negotiate_exact(offered & !VERSION_1),
        "VERSION_1 is mandatory"
    );
    assert!(
        !d.negotiate_exact(VERSION_1 | 1 << 40),
        "RING_RESET not offered"
    );
    // A bit in a feature word beyond 63.
    d.wr(reg::STATUS, 0);
    d.wr(reg::STATUS, ACK | DRIVER);
    d.wr(reg::DRV_FEAT_SEL, 2);
    d.wr(reg::DRV_FEAT, 1);
    d.wr(reg::DRV_FEAT_SEL, 1);
    d.wr(reg::DRV_FEAT, 1);
    d.wr(reg::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_eq!(d.status() & FEATURES_OK, 0);
    // After a refusal, queues never run: DRIVER_OK without FEATURES_OK.
    d.setup_queue(0, 8);
    d.setup_queue(1, 8);
    d.driver_ok();
    let f = d.alloc(64);
    d.add(1, &[(f, 64, false)]);
    assert!(d.kick(1).is_empty());
    assert!(!d.dev.has_work());
    // Features are frozen once FEATURES_OK is accepted.
    assert!(d.negotiate(ALL));
    d.wr(reg::DRV_FEAT_SEL, 1);
    d.wr(reg::DRV_FEAT, 0xffff_ffff);
    d.wr(reg::STATUS, ACK | DRIVER | FEATURES_OK);
    assert_ne!(d.status() & FEATURES_OK, 0);
    assert_eq!(d.dev.driver_features, offered);
}

#[test]
fn status_byte_bits_and_reset() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    assert_eq!(d.status(), ACK | DRIVER | FEATURES_OK | DRIVER_OK);
    // The driver cannot set NEEDS_RESET itself.
    let mut e = Drv::new(DeviceConfig::Rng);
    e.wr(reg::STATUS, ACK | NEEDS_RESET);
    assert_eq!(e.status(), ACK);
    d.wr(reg::STATUS, 0);
    assert_eq!(d.status(), 0);
    d.wr(reg::QUEUE_SEL, 0);
    assert_eq!(d.rd(reg::QUEUE_READY), 0);
    assert_eq!(
        d.dev,
        VirtioMmio {
            next_id: d.dev.next_id,
            ..VirtioMmio::new(3, DeviceConfig::Rng)
        }
    );
}

#[test]
fn queue_registers_frozen_while_ready() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    d.wr(reg::QUEUE_SEL, 0);
    d.wr(reg::QUEUE_NUM, 16);
    d.wr(reg::DESC_LO, 0x1234);
    d.wr(reg::DRIVER_HI, 0x1);
    d.wr(reg::DEVICE_LO, 0x10);
    assert_eq!(d.rd(reg::QUEUE_NUM), 8);
    assert_eq!(d.rd(reg::DESC_LO), d.qs[0].desc as u32);
    assert_eq!(d.rd(reg::DRIVER_HI), 0);
    assert_eq!(d.rd(reg::DEVICE_LO), d.qs[0].used as u32);
    // Still works.
    let b = d.alloc(16);
    d.add(0, &[(b, 16, true)]);
    assert_eq!(d.kick(0).len(), 1);
}

#[test]
fn queue_disable_and_resetup() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    for _ in 0..3 {
        rng_works(&mut d);
    }
    // The driver tears the queue down and sets it up again on fresh rings
    // elsewhere, without a device reset.
    d.wr(reg::QUEUE_SEL, 0);
    d.wr(reg::QUEUE_READY, 0);
    d.qs[0] = DQ::default();
    d.setup_queue(0, 4);
    rng_works(&mut d);
    assert!(!d.broken());
}

#[test]
fn process_without_work_is_harmless() {
    let mut d = Drv::up(DeviceConfig::Net { mac: MAC }, ALL, 8);
    // DRIVER_OK made every queue pending once; nothing is posted.
    assert!(d.dev.has_work());
    d.run();
    assert!(!d.dev.has_work());
    let before = d.dev.clone();
    let ram = d.ram.as_bytes().to_vec();
    for _ in 0..3 {
        d.dev.process(&mut d.ram, &mut d.out);
    }
    assert_eq!(d.dev, before);
    assert_eq!(d.ram.as_bytes(), &ram[..]);
    assert!(d.out.is_empty());
}

// ---------------------------------------------------------------------
// virtio-blk
// ---------------------------------------------------------------------

#[test]
fn blk_read() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let (head, st, buf) = d.blk(BLK_IN, 5, &[], 1024);
    let out = d.kick(0);
    let (id, op) = single_blk(&out);
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 5 * 512,
            len: 1024
        }
    );
    assert!(
        d.used(0).is_empty(),
        "not complete before the backend answers"
    );
    assert!(!d.dev.irq_level());
    let data = pattern(1024, 7);
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data: data.clone(),
    });
    assert_eq!(d.get(buf, 1024), data);
    assert_eq!(d.status_byte(st), 0);
    assert_eq!(d.used(0), [(head as u32, 1025)]);
    assert!(d.dev.irq_level());
    assert_eq!(d.ack(), 1);
    // The same id again is unknown now.
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data,
    });
    assert!(d.used(0).is_empty());
    assert!(!d.dev.irq_level());
}

#[test]
fn blk_write_and_flush() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let data = pattern(1536, 1);
    let (h1, st1, _) = d.blk(BLK_OUT, 10, &data, 0);
    let (h2, st2, _) = d.blk(BLK_FLUSH, 0, &[], 0);
    let out = d.kick(0);
    assert_eq!(out.len(), 2);
    let Output::Blk {
        slot: 3,
        id: id1,
        op,
    } = &out[0]
    else {
        panic!("{out:?}")
    };
    assert_eq!(
        op,
        &BlkOp::Write {
            offset: 10 * 512,
            data: data.clone(),
            fua: false
        }
    );
    let Output::Blk {
        slot: 3,
        id: id2,
        op: BlkOp::Flush,
    } = &out[1]
    else {
        panic!("{out:?}")
    };
    assert_ne!(id1, id2);
    // Completed out of order.
    d.apply(Input::BlkDone {
        slot: 3,
        id: *id2,
        status: 0,
        data: vec![],
    });
    d.apply(Input::BlkDone {
        slot: 3,
        id: *id1,
        status: 1,
        data: vec![],
    });
    assert_eq!(d.used(0), [(h2 as u32, 1), (h1 as u32, 1)]);
    assert_eq!(d.status_byte(st2), 0);
    assert_eq!(d.status_byte(st1), 1, "backend error passed on");
}

#[test]
fn blk_get_id_and_unsupported() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let (h, st, buf) = d.blk(BLK_GET_ID, 0, &[], 20);
    d.put(buf, &[0xaa; 20]);
    assert!(d.kick(0).is_empty(), "GET_ID needs no backend");
    let mut want = b"ftvm-vd3".to_vec();
    want.resize(20, 0);
    assert_eq!(d.get(buf, 20), want);
    assert_eq!(d.status_byte(st), 0);
    assert_eq!(d.used(0), [(h as u32, 21)]);
    assert!(d.dev.irq_level());
    // A short id buffer gets what fits.
    let (h, st, buf) = d.blk(BLK_GET_ID, 0, &[], 4);
    d.kick(0);
    assert_eq!(d.get(buf, 4), b"ftvm");
    assert_eq!(d.status_byte(st), 0);
    assert_eq!(d.used(0), [(h as u32, 5)]);
    for t in [2, 10, 11, 13, 14, 0x8000_0000, u32::MAX] {
        let (h, st, _) = d.blk(t, 0, &[], 512);
        assert!(d.kick(0).is_empty(), "type {t}");
        assert_eq!(d.status_byte(st), 2, "UNSUPP for type {t}");
        assert_eq!(d.used(0), [(h as u32, 1)]);
    }
}

#[test]
fn blk_out_of_range_and_malformed() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let cases: Vec<(u32, u64, Vec<u8>, u32)> = vec![
        (BLK_IN, 64, vec![], 512),             // starts at the end
        (BLK_IN, 63, vec![], 1024),            // runs past the end
        (BLK_IN, u64::MAX, vec![], 512),       // sector*512 overflows
        (BLK_IN, u64::MAX / 512, vec![], 512), // offset+len overflows
        (BLK_OUT, 64, vec![1; 512], 0),        // write past the end
        (BLK_IN, 0, vec![], 100),              // not whole sectors
        (BLK_OUT, 0, vec![1; 513], 0),         // not whole sectors
    ];
    for (t, sector, data, in_len) in cases {
        let (h, st, _) = d.blk(t, sector, &data, in_len);
        assert!(d.kick(0).is_empty(), "{t} {sector}");
        assert_eq!(d.status_byte(st), 1, "IOERR for {t} {sector} {in_len}");
        assert_eq!(d.used(0), [(h as u32, 1)]);
    }
    // The last sector is fine.
    let (_, _, _) = d.blk(BLK_IN, 63, &[], 512);
    let (_, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 63 * 512,
            len: 512
        }
    );
    // Zero-length reads and writes complete at once.
    let (h, st, _) = d.blk(BLK_IN, 3, &[], 0);
    assert!(d.kick(0).is_empty());
    assert_eq!(d.status_byte(st), 0);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    // A header shorter than 16 bytes.
    let hdr = d.alloc(8);
    let st = d.alloc(1);
    d.put(st, &[0xff]);
    let h = d.add(0, &[(hdr, 8, false), (st, 1, true)]);
    assert!(d.kick(0).is_empty());
    assert_eq!(d.status_byte(st), 1);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    // No writable byte at all: returned with nothing written.
    let hdr = d.alloc(16);
    let h = d.add(0, &[(hdr, 16, false)]);
    assert!(d.kick(0).is_empty());
    assert_eq!(d.used(0), [(h as u32, 0)]);
    assert!(!d.broken());
}

#[test]
fn blk_request_size_limit() {
    // A disk big enough that only the request cap matters.
    let mut d = Drv::up(blk_cfg(1 << 20, false), ALL, 8);
    let hdr = d.alloc(16);
    d.put(hdr, &[0; 16]);
    let st = d.alloc(1);
    // 4 MiB + 512 of "data" (the guest lies: the buffer is mostly outside
    // RAM, but the size check alone must refuse it).
    let h = d.add(
        0,
        &[
            (hdr, 16, false),
            (RAM_BASE, (4 << 20) + 512, true),
            (st, 1, true),
        ],
    );
    assert!(d.kick(0).is_empty());
    assert_eq!(d.status_byte(st), 1);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    // Exactly the limit is accepted (buffers may repeat the same memory).
    let bufs: Vec<Buf> = std::iter::once((hdr, 16, false))
        .chain((0..8).map(|_| (HEAP, 512 << 10, true)))
        .chain(std::iter::once((st, 1, true)))
        .collect();
    d.add_indirect(0, &bufs);
    let (_, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 0,
            len: 4 << 20
        }
    );
    assert_eq!(blk::MAX_REQUEST_BYTES, 4 << 20);
}

#[test]
fn blk_read_only() {
    let mut d = Drv::up(blk_cfg(64, true), ALL, 8);
    assert_ne!(d.features & 1 << 5, 0, "RO negotiated");
    let (h, st, _) = d.blk(BLK_OUT, 0, &[1; 512], 0);
    assert!(d.kick(0).is_empty(), "no write reaches the backend");
    assert_eq!(d.status_byte(st), 1);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    let (_, _, _) = d.blk(BLK_IN, 0, &[], 512);
    let (_, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 0,
            len: 512
        }
    );
}

#[test]
fn blk_read_completion_errors() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let (h, st, buf) = d.blk(BLK_IN, 0, &[], 512);
    d.put(buf, &[0x11; 512]);
    let (id, _) = single_blk(&d.kick(0));
    // Wrong slot, wrong kind: ignored.
    d.apply(Input::BlkDone {
        slot: 4,
        id,
        status: 0,
        data: vec![0; 512],
    });
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![0; 512],
    });
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![0; 60],
    });
    d.apply(Input::Time(5));
    d.apply(Input::ConsoleRx(vec![1]));
    assert!(d.used(0).is_empty());
    // Short data: IOERR, nothing written.
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data: vec![0; 511],
    });
    assert_eq!(d.status_byte(st), 1);
    assert_eq!(d.get(buf, 512), vec![0x11; 512]);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    // A nonsense status from the backend becomes IOERR; an error read
    // writes no data.
    let (h, st, buf) = d.blk(BLK_IN, 0, &[], 512);
    let (id, _) = single_blk(&d.kick(0));
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 9,
        data: vec![0x22; 512],
    });
    assert_eq!(d.status_byte(st), 1);
    assert_ne!(d.get(buf, 512), vec![0x22; 512]);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    let (_, st, _) = d.blk(BLK_FLUSH, 0, &[], 0);
    let (id, _) = single_blk(&d.kick(0));
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 2,
        data: vec![],
    });
    assert_eq!(d.status_byte(st), 2);
}

#[test]
fn blk_scatter_gather_and_any_layout() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 16);
    // Read into three odd-sized buffers; status in the same descriptor as
    // the tail of the data.
    let hdr = d.alloc(16);
    let mut h = [0u8; 16];
    h[8..16].copy_from_slice(&2u64.to_le_bytes());
    d.put(hdr, &h);
    let (a, b, c) = (d.alloc(100), d.alloc(700), d.alloc(225));
    let head = d.add(
        0,
        &[
            (hdr, 16, false),
            (a, 100, true),
            (b, 700, true),
            (c, 225, true),
        ],
    );
    let (id, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 1024,
            len: 1024
        }
    );
    let data = pattern(1024, 3);
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data: data.clone(),
    });
    assert_eq!(d.get(a, 100), &data[..100]);
    assert_eq!(d.get(b, 700), &data[100..800]);
    assert_eq!(d.get(c, 224), &data[800..]);
    assert_eq!(d.get(c + 224, 1), [0], "status byte");
    assert_eq!(d.used(0), [(head as u32, 1025)]);
    // Write: header and data share a descriptor, the rest is split.
    let data = pattern(1024, 9);
    let x = d.alloc(16 + 300);
    let mut hx = vec![0u8; 16];
    hx[0] = BLK_OUT as u8;
    hx[8] = 7;
    hx.extend_from_slice(&data[..300]);
    d.put(x, &hx);
    let y = d.alloc(724);
    d.put(y, &data[300..]);
    let st = d.alloc(1);
    d.add(
        0,
        &[
            (x, 316, false),
            (y, 0, false),
            (y, 724, false),
            (st, 1, true),
        ],
    );
    let (_, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Write {
            offset: 7 * 512,
            data,
            fua: false
        }
    );
}

#[test]
fn blk_indirect() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 4);
    let hdr = d.alloc(16);
    d.put(hdr, &[0; 16]);
    let bufs: Vec<u64> = (0..8).map(|_| d.alloc(512)).collect();
    let st = d.alloc(1);
    let mut chain = vec![(hdr, 16, false)];
    chain.extend(bufs.iter().map(|&b| (b, 512, true)));
    chain.push((st, 1, true));
    // 10 descriptors through a 4-entry queue.
    let head = d.add_indirect(0, &chain);
    let (id, op) = single_blk(&d.kick(0));
    assert_eq!(
        op,
        BlkOp::Read {
            offset: 0,
            len: 4096
        }
    );
    let data = pattern(4096, 5);
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data: data.clone(),
    });
    for (i, &b) in bufs.iter().enumerate() {
        assert_eq!(d.get(b, 512), &data[i * 512..(i + 1) * 512]);
    }
    assert_eq!(d.status_byte(st), 0);
    assert_eq!(d.used(0), [(head as u32, 4097)]);
}

#[test]
fn blk_reset_forgets_inflight() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let (_, st, buf) = d.blk(BLK_IN, 0, &[], 512);
    d.put(buf, &[0x33; 512]);
    let (old_id, _) = single_blk(&d.kick(0));
    d.wr(reg::STATUS, 0);
    // The guest re-initialises and reuses the same memory.
    assert!(d.init(ALL, 8));
    d.apply(Input::BlkDone {
        slot: 3,
        id: old_id,
        status: 0,
        data: vec![0x44; 512],
    });
    assert_eq!(d.get(buf, 512), vec![0x33; 512], "stale completion ignored");
    assert_eq!(d.status_byte(st), 0xff);
    assert!(d.used(0).is_empty());
    assert!(!d.dev.irq_level());
    // New requests get new ids.
    d.blk(BLK_IN, 0, &[], 512);
    let (new_id, _) = single_blk(&d.kick(0));
    assert!(new_id > old_id);
    // A completion arriving between reset and re-initialisation too.
    d.wr(reg::STATUS, 0);
    d.apply(Input::BlkDone {
        slot: 3,
        id: new_id,
        status: 0,
        data: vec![0; 512],
    });
    assert!(!d.dev.irq_level());
    assert!(d.init(ALL, 8));
    assert!(d.used(0).is_empty());
}

#[test]
fn blk_queue_disable_forgets_inflight() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    d.blk(BLK_IN, 0, &[], 512);
    let (id, _) = single_blk(&d.kick(0));
    d.wr(reg::QUEUE_SEL, 0);
    d.wr(reg::QUEUE_READY, 0);
    assert_eq!(d.rd(reg::QUEUE_READY), 0);
    d.apply(Input::BlkDone {
        slot: 3,
        id,
        status: 0,
        data: vec![0; 512],
    });
    assert!(d.used(0).is_empty());
    assert!(!d.broken());
}

// ---------------------------------------------------------------------
// virtio-net
// ---------------------------------------------------------------------

fn net() -> Drv {
    Drv::up(DeviceConfig::Net { mac: MAC }, ALL, 16)
}

/// Posts an RX buffer of `len` bytes.
fn post_rx(d: &mut Drv, len: u32) -> (u16, u64) {
    let a = d.alloc(len as u64);
    let h = d.add(0, &[(a, len, true)]);
    (h, a)
}

fn rx_frames(out: &[Output]) -> usize {
    out.len()
}

#[test]
fn net_tx_strips_header_and_returns_buffers() {
    let mut d = net();
    let f1 = pattern(60, 1);
    let f2 = pattern(1514, 2);
    let b1 = d.alloc(12 + 60);
    let mut v = vec![0u8; 12];
    v.extend_from_slice(&f1);
    d.put(b1, &v);
    let h1 = d.add(1, &[(b1, 72, false)]);
    // Header and frame in separate descriptors, frame split in two.
    let hb = d.alloc(12);
    let p1 = d.alloc(1000);
    let p2 = d.alloc(514);
    d.put(p1, &f2[..1000]);
    d.put(p2, &f2[1000..]);
    let h2 = d.add(1, &[(hb, 12, false), (p1, 1000, false), (p2, 514, false)]);
    let out = d.kick(1);
    assert_eq!(
        out,
        [
            Output::NetTx { slot: 3, frame: f1 },
            Output::NetTx { slot: 3, frame: f2 }
        ]
    );
    assert_eq!(d.used(1), [(h1 as u32, 0), (h2 as u32, 0)]);
    assert!(d.dev.irq_level());
    assert_eq!(d.ack(), 1);
    // Indirect TX.
    let hb = d.alloc(12);
    let p = d.alloc(64);
    d.put(p, &[7; 64]);
    let h3 = d.add_indirect(1, &[(hb, 12, false), (p, 64, false)]);
    assert_eq!(
        d.kick(1),
        [Output::NetTx {
            slot: 3,
            frame: vec![7; 64]
        }]
    );
    assert_eq!(d.used(1), [(h3 as u32, 0)]);
}

#[test]
fn net_tx_bad_frames_dropped() {
    let mut d = net();
    let a = d.alloc(12);
    let h1 = d.add(1, &[(a, 12, false)]); // header only
    let h2 = d.add(1, &[(a, 5, false)]); // shorter than the header
    let h3 = d.add(1, &[(a, 12, false), (RAM_BASE + RAM_SIZE - 8, 100, false)]); // leaves RAM
    let h4 = d.add(1, &[(a, 12, false), (HEAP, 65536, false)]); // over 65535
    let h5 = d.add(1, &[(a, 12, false), (HEAP, u32::MAX, false)]); // absurd
    assert!(d.kick(1).is_empty());
    let used: Vec<u32> = d.used(1).iter().map(|e| e.0).collect();
    assert_eq!(used, [h1, h2, h3, h4, h5].map(|h| h as u32));
    let DeviceState::Net(n) = &d.dev.dev else {
        unreachable!()
    };
    assert_eq!(n.stats.tx_dropped, 5);
    // 65535 is fine.
    d.add(1, &[(a, 12, false), (HEAP, 65535, false)]);
    let out = d.kick(1);
    assert!(matches!(&out[..], [Output::NetTx { frame, .. }] if frame.len() == 65535));
}

#[test]
fn net_rx_into_posted_buffer() {
    let mut d = net();
    let (h, a) = post_rx(&mut d, 1526);
    assert!(d.kick(0).is_empty());
    let frame = pattern(100, 4);
    d.apply(Input::NetRx {
        slot: 3,
        frame: frame.clone(),
    });
    let mut hdr = [0u8; 12];
    hdr[10] = 1;
    assert_eq!(d.get(a, 12), hdr, "zero header with num_buffers = 1");
    assert_eq!(d.get(a + 12, 100), frame);
    assert_eq!(d.used(0), [(h as u32, 112)]);
    assert!(d.dev.irq_level());
    // Frames for another slot are not ours.
    post_rx(&mut d, 1526);
    d.kick(0);
    d.apply(Input::NetRx {
        slot: 2,
        frame: frame.clone(),
    });
    assert!(d.used(0).is_empty());
}

#[test]
fn net_rx_buffer_split_over_descriptors() {
    let mut d = net();
    let (a, b) = (d.alloc(12), d.alloc(40));
    let h = d.add_indirect(0, &[(a, 12, true), (b, 40, true)]);
    d.kick(0);
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![9; 40],
    });
    assert_eq!(d.get(a + 10, 2), [1, 0]);
    assert_eq!(d.get(b, 40), vec![9; 40]);
    assert_eq!(d.used(0), [(h as u32, 52)]);
}

#[test]
fn net_rx_before_buffers_is_queued_then_delivered() {
    let mut d = net();
    for i in 0..3u8 {
        d.apply(Input::NetRx {
            slot: 3,
            frame: vec![i; 60 + i as usize],
        });
    }
    assert!(!d.dev.irq_level());
    assert!(d.used(0).is_empty());
    let (h0, a0) = post_rx(&mut d, 1526);
    let (h1, a1) = post_rx(&mut d, 1526);
    assert_eq!(rx_frames(&d.kick(0)), 0, "RX produces no outputs");
    assert_eq!(d.used(0), [(h0 as u32, 72), (h1 as u32, 73)]);
    assert_eq!(d.get(a0 + 12, 60), vec![0; 60]);
    assert_eq!(d.get(a1 + 12, 61), vec![1; 61]);
    assert!(d.dev.irq_level());
    d.ack();
    // A new frame arriving now must queue behind frame 2, not overtake it.
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![3; 63],
    });
    assert!(d.used(0).is_empty());
    let (h2, a2) = post_rx(&mut d, 1526);
    let (h3, a3) = post_rx(&mut d, 1526);
    let (_h4, _) = post_rx(&mut d, 1526);
    d.kick(0);
    assert_eq!(d.used(0), [(h2 as u32, 74), (h3 as u32, 75)]);
    assert_eq!(d.get(a2 + 12, 62), vec![2; 62]);
    assert_eq!(d.get(a3 + 12, 63), vec![3; 63]);
    // One buffer left: the next frame goes straight in.
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![4; 64],
    });
    assert_eq!(d.used(0).len(), 1);
}

#[test]
fn net_rx_fifo_drops_newest_when_full() {
    let mut d = net();
    let n = net::RX_FIFO_FRAMES + 10;
    for i in 0..n {
        d.apply(Input::NetRx {
            slot: 3,
            frame: (i as u32).to_le_bytes().to_vec(),
        });
    }
    let DeviceState::Net(s) = &d.dev.dev else {
        unreachable!()
    };
    assert_eq!(s.stats.rx_dropped_fifo_full, 10);
    // The first RX_FIFO_FRAMES are delivered, in order.
    let mut got = Vec::new();
    while got.len() < net::RX_FIFO_FRAMES {
        let posted: Vec<(u16, u64)> = (0..8).map(|_| post_rx(&mut d, 64)).collect();
        d.kick(0);
        let used = d.used(0);
        assert_eq!(used.len(), 8);
        for (id, len) in used {
            assert_eq!(len, 16);
            let a = posted.iter().find(|p| p.0 as u32 == id).unwrap().1;
            got.push(u32::from_le_bytes(d.get(a + 12, 4).try_into().unwrap()));
        }
    }
    assert_eq!(got, (0..net::RX_FIFO_FRAMES as u32).collect::<Vec<_>>());
    // Nothing more queued.
    post_rx(&mut d, 64);
    d.kick(0);
    assert!(d.used(0).is_empty());
}

#[test]
fn net_rx_oversized_frames_dropped() {
    let mut d = net();
    let (h, a) = post_rx(&mut d, 100);
    d.kick(0);
    // 12 + 89 > 100: dropped, buffer kept.
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![1; 89],
    });
    assert!(d.used(0).is_empty());
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![2; 65536],
    });
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![3; 88],
    });
    assert_eq!(d.used(0), [(h as u32, 100)]);
    assert_eq!(d.get(a + 12, 88), vec![3; 88]);
    let DeviceState::Net(s) = &d.dev.dev else {
        unreachable!()
    };
    assert_eq!(s.stats.rx_dropped_too_big, 2);
    assert_eq!(s.stats.rx_frames, 1);
}

#[test]
fn net_rx_bad_buffers_returned_empty() {
    let mut d = net();
    let a = d.alloc(64);
    let h1 = d.add(0, &[(a, 64, false)]); // device-readable
    let h2 = d.add(0, &[(RAM_BASE + RAM_SIZE - 16, 64, true)]); // leaves RAM
    let (h3, a3) = post_rx(&mut d, 64);
    d.kick(0);
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![5; 20],
    });
    assert_eq!(d.used(0), [(h1 as u32, 0), (h2 as u32, 0), (h3 as u32, 32)]);
    assert_eq!(d.get(a3 + 12, 20), vec![5; 20]);
    assert!(!d.broken());
}

#[test]
fn net_rx_dropped_before_driver_ok_and_after_reset() {
    let mut d = Drv::new(DeviceConfig::Net { mac: MAC });
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![1; 60],
    });
    assert!(d.init(ALL, 8));
    let (_, _) = post_rx(&mut d, 128);
    d.kick(0);
    assert!(
        d.used(0).is_empty(),
        "frame from before the driver was up is gone"
    );
    // Queued frames are forgotten by a reset.
    let mut d = net();
    d.apply(Input::NetRx {
        slot: 3,
        frame: vec![1; 60],
    });
    d.wr(reg::STATUS, 0);
    assert!(d.init(ALL, 8));
    post_rx(&mut d, 128);
    d.kick(0);
    assert!(d.used(0).is_empty());
}

// ---------------------------------------------------------------------
// virtio-rng
// ---------------------------------------------------------------------

#[test]
fn rng_requests_and_fills() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let a = d.alloc(32);
    let (b, c) = (d.alloc(16), d.alloc(16));
    let h1 = d.add(0, &[(a, 32, true)]);
    let h2 = d.add(0, &[(b, 16, true), (c, 16, true)]);
    let out = d.kick(0);
    let ids: Vec<u64> = out
        .iter()
        .map(|o| match o {
            Output::Rng {
                slot: 3,
                id,
                len: 32,
            } => *id,
            o => panic!("{o:?}"),
        })
        .collect();
    assert_eq!(ids.len(), 2);
    d.apply(Input::RngData {
        slot: 3,
        id: ids[1],
        data: pattern(32, 8),
    });
    assert_eq!(d.used(0), [(h2 as u32, 32)]);
    assert_eq!(d.get(b, 16), &pattern(32, 8)[..16]);
    assert_eq!(d.get(c, 16), &pattern(32, 8)[16..]);
    // Short answer: reported as such. Long answer: truncated.
    d.apply(Input::RngData {
        slot: 3,
        id: ids[0],
        data: vec![1; 10],
    });
    assert_eq!(d.used(0), [(h1 as u32, 10)]);
    assert_eq!(d.get(a, 11), [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0]);
    let h = d.add(0, &[(a, 4, true)]);
    let out = d.kick(0);
    let [Output::Rng { id, len: 4, .. }] = out[..] else {
        panic!("{out:?}")
    };
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![2; 100],
    });
    assert_eq!(d.used(0), [(h as u32, 4)]);
    assert_eq!(d.get(a, 5), [2, 2, 2, 2, 1]);
}

#[test]
fn rng_caps_length_and_rejects_bad_buffers() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    d.add(0, &[(HEAP, u32::MAX, true)]);
    let out = d.kick(0);
    assert!(
        matches!(out[..], [Output::Rng { len: 65536, .. }]),
        "{out:?}"
    );
    let h = d.add(0, &[(RAM_BASE + RAM_SIZE - 4, 8, true)]);
    let h2 = d.add(0, &[(HEAP, 8, false)]);
    assert!(d.kick(0).is_empty());
    assert_eq!(d.used(0), [(h as u32, 0), (h2 as u32, 0)]);
}

// ---------------------------------------------------------------------
// Interrupts and notification suppression
// ---------------------------------------------------------------------

#[test]
fn interrupt_status_and_ack() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL & !EVENT_IDX, 8);
    assert_eq!(d.rd(reg::INT_STATUS), 0);
    let a = d.alloc(8);
    d.add(0, &[(a, 8, true)]);
    let out = d.kick(0);
    assert!(!d.dev.irq_level(), "nothing used yet");
    let [Output::Rng { id, .. }] = out[..] else {
        panic!()
    };
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![0; 8],
    });
    assert_eq!(d.rd(reg::INT_STATUS), 1);
    assert!(d.dev.irq_level());
    d.wr(reg::INT_ACK, 2);
    assert!(d.dev.irq_level(), "acking the other bit changes nothing");
    d.wr(reg::INT_ACK, 1);
    assert!(!d.dev.irq_level());
    assert_eq!(d.used(0).len(), 1);
    // VIRTQ_AVAIL_F_NO_INTERRUPT suppresses it.
    let avail = d.qs[0].avail;
    d.put_u16(avail, 1);
    d.add(0, &[(a, 8, true)]);
    let out = d.kick(0);
    let [Output::Rng { id, .. }] = out[..] else {
        panic!()
    };
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![0; 8],
    });
    assert_eq!(d.used(0).len(), 1);
    assert!(!d.dev.irq_level());
}

#[test]
fn event_idx_suppression() {
    let mut d = Drv::up(DeviceConfig::Net { mac: MAC }, ALL, 8);
    assert_ne!(d.features & EVENT_IDX, 0);
    let (avail, used, size) = (d.qs[1].avail, d.qs[1].used, 8u64);
    let used_event = avail + 4 + 2 * size;
    let avail_event = used + 4 + 8 * size;
    let send = |d: &mut Drv, n: usize| {
        for _ in 0..n {
            let a = d.alloc(16);
            d.add(1, &[(a, 16, false)]);
        }
        let out = d.kick(1);
        assert_eq!(out.len(), n);
        d.used(1).len()
    };
    // The first batch always interrupts (nothing signalled yet).
    assert_eq!(send(&mut d, 1), 1);
    assert!(d.dev.irq_level());
    assert_eq!(
        d.get_u16(avail_event),
        1,
        "device asks to be kicked at avail index 1"
    );
    d.ack();
    // used_event = 0: the driver wants an interrupt when entry 0 is used;
    // it already was, so used idx 1 -> 3 does not cross it.
    d.put_u16(used_event, 0);
    assert_eq!(send(&mut d, 2), 2);
    assert!(!d.dev.irq_level());
    // used_event = 4: crossing 3 -> 5 interrupts.
    d.put_u16(used_event, 4);
    assert_eq!(send(&mut d, 2), 2);
    assert!(d.dev.irq_level());
    d.ack();
    // used_event = 5 exactly: 5 -> 6 crosses it.
    d.put_u16(used_event, 5);
    assert_eq!(send(&mut d, 1), 1);
    assert!(d.dev.irq_level());
    d.ack();
    // Far ahead: no interrupt.
    d.put_u16(used_event, 100);
    assert_eq!(send(&mut d, 3), 3);
    assert!(!d.dev.irq_level());
    assert_eq!(d.get_u16(avail_event), 9);
    // The avail ring's NO_INTERRUPT flag is ignored under event index.
    d.put_u16(avail, 1);
    d.put_u16(used_event, 9);
    assert_eq!(send(&mut d, 1), 1);
    assert!(d.dev.irq_level());
}

// ---------------------------------------------------------------------
// Index wrap-around
// ---------------------------------------------------------------------

#[test]
fn index_wraparound_rng_small_queue() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL & !EVENT_IDX, 4);
    let bufs: Vec<u64> = (0..3).map(|_| d.alloc(8)).collect();
    for i in 0..70_000u32 {
        let k = i as usize % 3;
        let h = d.add(0, &[(bufs[k], 8, true)]);
        let out = d.kick(0);
        let [Output::Rng { id, len: 8, .. }] = out[..] else {
            panic!("{i}: {out:?}")
        };
        d.apply(Input::RngData {
            slot: 3,
            id,
            data: i.to_le_bytes().repeat(2),
        });
        assert_eq!(d.used(0), [(h as u32, 8)], "request {i}");
        assert_eq!(d.get(bufs[k], 4), i.to_le_bytes());
    }
    assert_eq!(d.qs[0].avail_idx, (70_000u32 % 65536) as u16);
    assert_eq!(d.get_u16(d.qs[0].used + 2), (70_000u32 % 65536) as u16);
    assert!(!d.broken());
}

#[test]
fn index_wraparound_net_tx_event_idx_batches() {
    let mut d = Drv::up(DeviceConfig::Net { mac: MAC }, ALL, 8);
    let a = d.alloc(20);
    d.put(a + 12, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let mut sent = 0usize;
    let mut i = 0u32;
    while sent < 70_000 {
        // Batches of 1..=8 frames, like a busy driver.
        let n = (i % 8 + 1) as usize;
        for _ in 0..n {
            d.add(1, &[(a, 20, false)]);
        }
        // Keep used_event right behind, as virtqueue_enable_cb does.
        let ue = d.qs[1].last_used;
        let at = d.qs[1].avail + 4 + 2 * 8;
        d.put_u16(at, ue);
        let out = d.kick(1);
        assert_eq!(out.len(), n);
        assert_eq!(d.used(1).len(), n);
        assert!(d.dev.irq_level(), "batch {i}");
        d.ack();
        sent += n;
        i += 1;
    }
    assert!(!d.broken());
}

// ---------------------------------------------------------------------
// Hostile guests
// ---------------------------------------------------------------------

/// Asserts the device flagged NEEDS_RESET with a config interrupt, then
/// that a reset and re-initialisation brings it back.
fn assert_needs_reset(d: &mut Drv) {
    assert!(d.broken(), "expected DEVICE_NEEDS_RESET");
    assert_eq!(d.rd(reg::INT_STATUS) & 2, 2, "config-change interrupt");
    assert!(d.dev.irq_level());
    assert!(!d.dev.has_work());
    d.wr(reg::STATUS, 0);
    assert!(!d.dev.irq_level());
    let size = d.qs[0].size.max(4);
    assert!(d.init(ALL, size));
    assert!(!d.broken());
}

fn rng_works(d: &mut Drv) {
    let a = d.alloc(8);
    let h = d.add(0, &[(a, 8, true)]);
    let out = d.kick(0);
    let [Output::Rng { id, .. }] = out[..] else {
        panic!("{out:?}")
    };
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![1; 8],
    });
    assert_eq!(d.used(0), [(h as u32, 8)]);
}

#[test]
fn hostile_descriptor_chain_loop() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let a = d.alloc(8);
    let desc = d.qs[0].desc;
    d.write_desc(desc, a, 8, D_WRITE | D_NEXT, 1);
    d.write_desc(desc + 16, a, 8, D_WRITE | D_NEXT, 0);
    d.publish(0, 0);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    rng_works(&mut d);
    // A self-loop inside an indirect table.
    let t = d.alloc(32);
    d.write_desc(t, a, 8, D_WRITE | D_NEXT, 1);
    d.write_desc(t + 16, a, 8, D_WRITE | D_NEXT, 1);
    let desc = d.qs[0].desc;
    d.write_desc(desc, t, 32, D_INDIRECT, 0);
    d.publish(0, 0);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
}

#[test]
fn hostile_indices_out_of_range() {
    // next index beyond the queue.
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let a = d.alloc(8);
    let desc = d.qs[0].desc;
    d.write_desc(desc, a, 8, D_WRITE | D_NEXT, 200);
    d.publish(0, 0);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    // Head index beyond the queue.
    d.publish(0, 8);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    // avail.idx claims more entries than the ring holds.
    let avail = d.qs[0].avail;
    d.put_u16(avail + 2, 9);
    d.kick(0);
    assert_needs_reset(&mut d);
    // next index beyond an indirect table.
    let t = d.alloc(32);
    d.write_desc(t, a, 8, D_WRITE | D_NEXT, 2);
    let desc = d.qs[0].desc;
    d.write_desc(desc, t, 32, D_INDIRECT, 0);
    d.publish(0, 0);
    d.kick(0);
    assert_needs_reset(&mut d);
    rng_works(&mut d);
}

#[test]
fn hostile_indirect_tables() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let a = d.alloc(8);
    let t = d.alloc(64);
    d.write_desc(t, a, 8, D_WRITE, 0);
    let bad: Vec<(u64, u32, u16)> = vec![
        (t, 17, D_INDIRECT),                        // not a multiple of 16
        (t, 0, D_INDIRECT),                         // empty
        (t, 16 * 1025, D_INDIRECT),                 // too many entries
        (t, !15, D_INDIRECT),                       // absurd
        (RAM_BASE + RAM_SIZE - 16, 32, D_INDIRECT), // leaves RAM
        (u64::MAX - 15, 16, D_INDIRECT),            // wraps the address space
        (t, 16, D_INDIRECT | D_NEXT),               // INDIRECT with NEXT
    ];
    for (addr, len, flags) in bad {
        let desc = d.qs[0].desc;
        d.write_desc(desc, addr, len, flags, 1);
        d.publish(0, 0);
        assert!(d.kick(0).is_empty(), "{addr:#x} {len} {flags}");
        assert_needs_reset(&mut d);
    }
    // An indirect descriptor inside an indirect table.
    let t2 = d.alloc(16);
    d.write_desc(t2, a, 8, D_WRITE, 0);
    d.write_desc(t, t2, 16, D_INDIRECT, 0);
    let desc = d.qs[0].desc;
    d.write_desc(desc, t, 16, D_INDIRECT, 0);
    d.publish(0, 0);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    // Indirect descriptors when the driver did not negotiate them.
    assert!(d.init(ALL & !INDIRECT, 8));
    d.write_desc(t, a, 8, D_WRITE, 0);
    let desc = d.qs[0].desc;
    d.write_desc(desc, t, 16, D_INDIRECT, 0);
    d.publish(0, 0);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    // And a good one works.
    let h = d.add_indirect(0, &[(a, 8, true)]);
    let out = d.kick(0);
    assert!(matches!(out[..], [Output::Rng { len: 8, .. }]));
    let _ = h;
}

#[test]
fn hostile_readable_after_writable() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let a = d.alloc(16);
    d.add(0, &[(a, 16, true), (a, 16, false)]);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
}

#[test]
fn hostile_buffers_outside_ram() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let hdr = d.alloc(16);
    d.put(hdr, &[0; 16]);
    let st = d.alloc(1);
    for (addr, len) in [
        (0u64, 512u32),
        (RAM_BASE - 512, 512),
        (RAM_BASE + RAM_SIZE - 256, 512),
        (u64::MAX - 255, 512),
        (HEAP, u32::MAX),
    ] {
        d.put(st, &[0xff]);
        let h = d.add(0, &[(hdr, 16, false), (addr, len, true), (st, 1, true)]);
        assert!(d.kick(0).is_empty(), "{addr:#x}");
        assert_eq!(d.status_byte(st), 1, "IOERR for {addr:#x}+{len}");
        assert_eq!(d.used(0), [(h as u32, 1)]);
    }
    // Header outside RAM.
    d.put(st, &[0xff]);
    let h = d.add(0, &[(u64::MAX - 7, 16, false), (st, 1, true)]);
    d.kick(0);
    assert_eq!(d.status_byte(st), 1);
    assert_eq!(d.used(0), [(h as u32, 1)]);
    // Status byte outside RAM: returned with nothing written.
    let h = d.add(0, &[(hdr, 16, false), (u64::MAX, 1, true)]);
    let h2 = d.add(0, &[(hdr, 16, false), (RAM_BASE + RAM_SIZE, 1, true)]);
    assert!(d.kick(0).is_empty());
    assert_eq!(d.used(0), [(h as u32, 0), (h2 as u32, 0)]);
    assert!(!d.broken());
}

#[test]
fn hostile_queue_layout() {
    type Setup = fn(&mut Drv);
    let cases: [(&str, Setup); 7] = [
        ("desc outside RAM", |d| {
            d.wr(reg::DESC_LO, 0x1000);
            d.wr(reg::DESC_HI, 0);
        }),
        ("used ring past the end", |d| {
            d.wr(reg::DEVICE_LO, (RAM_BASE + RAM_SIZE - 8) as u32)
        }),
        ("avail ring high address", |d| {
            d.wr(reg::DRIVER_HI, 0xffff_ffff)
        }),
        ("size not a power of two", |d| d.wr(reg::QUEUE_NUM, 6)),
        ("size zero", |d| d.wr(reg::QUEUE_NUM, 0)),
        ("size above max", |d| d.wr(reg::QUEUE_NUM, 512)),
        ("misaligned descriptor table", |d| {
            d.wr(reg::DESC_LO, (RAM_BASE + 8) as u32)
        }),
    ];
    for (what, f) in cases {
        let mut d = Drv::new(DeviceConfig::Rng);
        assert!(d.negotiate(ALL));
        d.setup_queue(0, 8);
        d.wr(reg::QUEUE_READY, 0);
        f(&mut d);
        d.wr(reg::QUEUE_READY, 1);
        d.driver_ok();
        d.run();
        assert!(d.broken(), "{what}");
        assert_needs_reset(&mut d);
        rng_works(&mut d);
    }
}

#[test]
fn hostile_notify_before_ready() {
    let mut d = Drv::new(DeviceConfig::Rng);
    // Before anything at all.
    d.notify(0);
    d.notify(5);
    d.wr(reg::QUEUE_NOTIFY, u32::MAX);
    d.run();
    assert!(!d.dev.has_work());
    assert!(d.negotiate(ALL));
    d.notify(0);
    assert!(!d.dev.has_work(), "not live before DRIVER_OK");
    // Queue configured, buffers posted, notified, but QueueReady never set.
    d.wr(reg::QUEUE_SEL, 0);
    d.wr(reg::QUEUE_NUM, 8);
    d.qs = vec![DQ {
        size: 8,
        desc: RING_AREA,
        avail: RING_AREA + 0x1000,
        used: RING_AREA + 0x2000,
        free: (0..8).rev().collect(),
        ..DQ::default()
    }];
    d.wr(reg::DESC_LO, RING_AREA as u32);
    d.wr(reg::DRIVER_LO, (RING_AREA + 0x1000) as u32);
    d.wr(reg::DEVICE_LO, (RING_AREA + 0x2000) as u32);
    let a = d.alloc(8);
    d.add(0, &[(a, 8, true)]);
    d.notify(0);
    d.driver_ok();
    d.run();
    assert!(d.out.is_empty());
    assert!(!d.broken());
    // Once ready, the next notify picks the buffer up.
    d.wr(reg::QUEUE_READY, 1);
    assert_eq!(d.kick(0).len(), 1);
}

#[test]
fn buffers_posted_before_driver_ok_are_seen() {
    let mut d = Drv::new(DeviceConfig::Rng);
    assert!(d.negotiate(ALL));
    d.setup_queue(0, 8);
    let a = d.alloc(8);
    d.add(0, &[(a, 8, true)]);
    d.notify(0);
    assert!(!d.dev.has_work());
    d.driver_ok();
    assert!(d.dev.has_work());
    d.run();
    assert_eq!(d.out.len(), 1);
}

#[test]
fn hostile_head_reused_while_in_flight() {
    let mut d = Drv::up(blk_cfg(64, false), ALL, 8);
    let (h, _, _) = d.blk(BLK_IN, 0, &[], 512);
    assert_eq!(d.kick(0).len(), 1);
    d.publish(0, h);
    assert!(d.kick(0).is_empty());
    assert_needs_reset(&mut d);
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let a = d.alloc(8);
    let h = d.add(0, &[(a, 8, true)]);
    d.publish(0, h);
    assert_eq!(
        d.kick(0).len(),
        1,
        "the first one went out before the duplicate was seen"
    );
    assert!(d.broken());
    // Completions after NEEDS_RESET are ignored.
    let id = d.dev.next_id - 1;
    d.apply(Input::RngData {
        slot: 3,
        id,
        data: vec![0; 8],
    });
    assert!(d.used(0).is_empty());
}

#[test]
fn apply_with_garbage_is_ignored() {
    for cfg in [
        blk_cfg(8, false),
        DeviceConfig::Net { mac: MAC },
        DeviceConfig::Rng,
    ] {
        let mut d = Drv::new(cfg.clone());
        let inputs = [
            Input::BlkDone {
                slot: 3,
                id: 1,
                status: 0,
                data: vec![0; 4096],
            },
            Input::RngData {
                slot: 3,
                id: 1,
                data: vec![0; 10],
            },
            Input::NetRx {
                slot: 3,
                frame: vec![0; 10],
            },
            Input::BlkDone {
                slot: 3,
                id: u64::MAX,
                status: 255,
                data: vec![],
            },
        ];
        for i in &inputs {
            d.apply(i.clone());
        }
        assert!(d.init(ALL, 8));
        for i in &inputs {
            d.apply(i.clone());
        }
        assert!(!d.dev.irq_level(), "{cfg:?}");
        assert!(!d.broken());
    }
}

// ---------------------------------------------------------------------
// Randomized: nothing a guest or backend does may panic or hang
// ---------------------------------------------------------------------

/// splitmix64.
struct Rng64(u64);

impl Rng64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

const OFFSETS: [u64; 24] = [
    reg::DEV_FEAT_SEL,
    reg::DRV_FEAT,
    reg::DRV_FEAT_SEL,
    reg::QUEUE_SEL,
    reg::QUEUE_NUM,
    reg::QUEUE_READY,
    reg::QUEUE_NOTIFY,
    reg::QUEUE_NOTIFY,
    reg::QUEUE_NOTIFY,
    reg::INT_ACK,
    reg::STATUS,
    reg::STATUS,
    reg::DESC_LO,
    reg::DESC_HI,
    reg::DRIVER_LO,
    reg::DRIVER_HI,
    reg::DEVICE_LO,
    reg::DEVICE_HI,
    reg::SHM_SEL,
    reg::QUEUE_RESET,
    reg::CONFIG,
    reg::CONFIG + 6,
    0x0f8,
    0x0a8,
];

/// A plausible value for a register write.
fn reg_value(r: &mut Rng64, off: u64) -> u32 {
    match (off, r.below(4)) {
        (reg::QUEUE_NUM, 0) => 1 << r.below(10),
        (reg::STATUS, 0) => 0,
        (reg::STATUS, _) => {
            [ACK, ACK | DRIVER, ACK | DRIVER | FEATURES_OK, 0xf, 0x4f][r.below(5) as usize]
        }
        (reg::DESC_LO | reg::DRIVER_LO | reg::DEVICE_LO, 0 | 1) => {
            (RAM_BASE + r.below(RAM_SIZE + 0x100)) as u32 & !r.below(16) as u32
        }
        (reg::QUEUE_NOTIFY | reg::QUEUE_SEL | reg::DEV_FEAT_SEL | reg::DRV_FEAT_SEL, _) => {
            r.below(4) as u32
        }
        _ => r.next() as u32,
    }
}

fn random_input(r: &mut Rng64, next_id: u64) -> Input {
    let slot = if r.chance(8) { r.below(8) as u8 } else { 3 };
    let id = next_id.wrapping_sub(r.below(6));
    let len = match r.below(4) {
        0 => 0,
        1 => 512,
        2 => r.below(2000) as usize,
        _ => r.below(70_000) as usize,
    };
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    match r.below(3) {
        0 => Input::BlkDone {
            slot,
            id,
            status: r.below(4) as u8,
            data,
        },
        1 => Input::RngData { slot, id, data },
        _ => Input::NetRx { slot, frame: data },
    }
}

/// Scribbles on guest memory the device reads: rings, descriptors, buffers.
fn scribble(r: &mut Rng64, d: &mut Drv) {
    let area = if r.chance(2) {
        RING_AREA + r.below(0x8000)
    } else {
        HEAP + r.below(0x2000)
    };
    let n = 1 + r.below(24) as usize;
    let mut bytes: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
    // Bias towards small, mostly valid-looking values.
    if r.chance(2) {
        for b in bytes.iter_mut() {
            *b &= 0x0f;
        }
    }
    d.ram.write_bytes(area, &bytes);
}

/// Posts a well-formed (or nearly so) request suited to the device.
fn fuzz_post(r: &mut Rng64, d: &mut Drv) {
    let qi = r.below(d.qs.len().max(1) as u64) as usize;
    let Some(q) = d.qs.get(qi) else {
        return;
    };
    if q.free.len() < 4 {
        return;
    }
    let bufs: Vec<Buf> = match d.dev.config() {
        DeviceConfig::Blk { .. } => {
            let t =
                [BLK_IN, BLK_IN, BLK_OUT, BLK_OUT, BLK_FLUSH, BLK_GET_ID, 11][r.below(7) as usize];
            let hdr = d.alloc(16);
            let mut h = [0u8; 16];
            h[0..4].copy_from_slice(&t.to_le_bytes());
            h[8..16].copy_from_slice(&r.below(80).to_le_bytes());
            d.put(hdr, &h);
            let len = if r.chance(8) {
                r.below(2000) as u32
            } else {
                512 * r.below(3) as u32
            };
            let data = d.alloc(len as u64);
            let st = d.alloc(1);
            let mut v = vec![(hdr, 16, false)];
            if len > 0 {
                v.push((data, len, t != BLK_OUT));
            }
            v.push((st, 1, true));
            v
        }
        DeviceConfig::Net { .. } if qi == 0 => {
            let len = [64, 1526, 20, 13][r.below(4) as usize];
            vec![(d.alloc(len as u64), len, true)]
        }
        DeviceConfig::Net { .. } => {
            let len = 12 + r.below(100) as u32;
            vec![(d.alloc(len as u64), len, false)]
        }
        DeviceConfig::Rng => {
            let len = 1 + r.below(64) as u32;
            vec![(d.alloc(len as u64), len, true)]
        }
    };
    if r.chance(3) && d.features & INDIRECT != 0 {
        d.add_indirect(qi, &bufs);
    } else {
        d.add(qi, &bufs);
    }
    d.notify(qi);
}

/// Corrupts one field of a live driver-side queue (or random memory).
fn fuzz_corrupt(r: &mut Rng64, d: &mut Drv) {
    let Some(q) =
        d.qs.get(r.below(d.qs.len().max(1) as u64) as usize)
            .cloned()
    else {
        scribble(r, d);
        return;
    };
    let addr = [
        HEAP,
        RAM_BASE + RAM_SIZE - 8,
        0,
        u64::MAX - 3,
        r.next(),
        q.desc,
    ][r.below(6) as usize];
    let len = [0, 1, 16, 512, 0xffff_ffff, r.next() as u32][r.below(6) as usize];
    match r.below(5) {
        0 => {
            let i = r.below(q.size as u64);
            let flags = r.below(8) as u16;
            let next = r.below(q.size as u64 + 2) as u16;
            d.write_desc(q.desc + 16 * i, addr, len, flags, next);
        }
        1 => {
            let idx = d.get_u16(q.avail + 2).wrapping_add(r.below(3) as u16);
            d.put_u16(q.avail + 2, idx);
        }
        2 => {
            let slot = q.avail + 4 + 2 * r.below(q.size as u64);
            d.put_u16(slot, r.below(q.size as u64 + 2) as u16);
        }
        3 => d.put_u16(q.avail + 4 + 2 * q.size as u64, r.next() as u16),
        _ => scribble(r, d),
    }
}

fn fuzz_one(seed: u64) -> (VirtioMmio, Vec<Output>, Vec<u8>) {
    let mut r = Rng64(seed);
    let cfg = match seed % 4 {
        0 => blk_cfg(64, seed & 7 == 0),
        1 => DeviceConfig::Net { mac: MAC },
        _ => DeviceConfig::Rng,
    };
    let mut d = Drv::new(cfg);
    let mut all_out = Vec::new();
    // Requests the backend has not answered: (id, expected data length).
    let mut outstanding: Vec<(u64, usize)> = Vec::new();
    let init = |r: &mut Rng64, d: &mut Drv| {
        let size = 1 << r.below(6);
        let want = if r.chance(4) { r.next() } else { ALL };
        d.init(want, size);
    };
    if !r.chance(8) {
        init(&mut r, &mut d);
    }
    for _ in 0..400 {
        match r.below(20) {
            0 => {
                let off = OFFSETS[r.below(OFFSETS.len() as u64) as usize];
                let v = reg_value(&mut r, off);
                d.wr(off, v);
            }
            1 => {
                let off = r.below(0x110);
                let size = [1, 2, 4, 8][r.below(4) as usize];
                d.dev.read(off, size);
            }
            2..=4 => fuzz_corrupt(&mut r, &mut d),
            5..=10 => fuzz_post(&mut r, &mut d),
            11..=14 if !outstanding.is_empty() => {
                let (id, len) = outstanding.remove(r.below(outstanding.len() as u64) as usize);
                let len = if r.chance(8) {
                    r.below(2000) as usize
                } else {
                    len
                };
                let data = vec![id as u8; len];
                let input = match d.dev.config() {
                    DeviceConfig::Rng => Input::RngData { slot: 3, id, data },
                    _ => Input::BlkDone {
                        slot: 3,
                        id,
                        status: if r.chance(8) { r.below(256) as u8 } else { 0 },
                        data,
                    },
                };
                d.apply(input);
            }
            15 => {
                let next = d.dev.next_id;
                let i = random_input(&mut r, next);
                d.apply(i);
            }
            16 | 17 => {
                let len = r.below(1600) as usize;
                d.apply(Input::NetRx {
                    slot: 3,
                    frame: vec![0xee; len],
                });
            }
            18 if !d.dev.live() => init(&mut r, &mut d),
            _ => {
                let qi = r.below(3) as u32;
                d.wr(reg::QUEUE_NOTIFY, qi);
            }
        }
        d.run();
        for o in &d.out {
            match o {
                Output::Blk { id, op, .. } => {
                    let len = match op {
                        BlkOp::Read { len, .. } => *len as usize,
                        _ => 0,
                    };
                    outstanding.push((*id, len));
                }
                Output::Rng { id, len, .. } => outstanding.push((*id, *len as usize)),
                _ => {}
            }
        }
        all_out.append(&mut d.out);
        for qi in 0..d.qs.len() {
            d.used(qi);
        }
        if r.chance(4) {
            let s = d.rd(reg::INT_STATUS);
            d.wr(reg::INT_ACK, s);
        }
        assert_eq!(d.dev.irq_level(), d.dev.interrupt_status != 0);
        // Device state stays bounded.
        match &d.dev.dev {
            DeviceState::Net(n) => assert!(n.rx_fifo.len() <= net::RX_FIFO_FRAMES),
            DeviceState::Blk(b) => assert!(b.inflight.len() <= 256),
            DeviceState::Rng(x) => assert!(x.inflight.len() <= 256),
        }
    }
    (d.dev, all_out, d.ram.as_bytes().to_vec())
}

#[test]
fn randomized_never_panics() {
    for seed in 0..400 {
        fuzz_one(seed);
    }
}

#[test]
fn randomized_is_deterministic() {
    for seed in [3, 17, 42, 1001] {
        let a = fuzz_one(seed);
        let b = fuzz_one(seed);
        assert!(a == b, "seed {seed} diverged");
    }
}

#[test]
fn clone_compares_state() {
    let mut d = Drv::up(DeviceConfig::Rng, ALL, 8);
    let before = d.dev.clone();
    assert_eq!(before, d.dev);
    let a = d.alloc(8);
    d.add(0, &[(a, 8, true)]);
    d.kick(0);
    assert_ne!(before, d.dev, "in-flight request is state");
}
