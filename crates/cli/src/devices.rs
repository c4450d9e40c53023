//! virtio devices on the command line (`--drive`, `--net`, `--no-rng`) and
//! the host backends that serve them: raw disk images, TAP devices (each
//! with a reader thread feeding the driver) and the host entropy source.
//! Slots are assigned in a fixed order: drives, then network cards, then
//! the RNG, so the first drive is always `/dev/vda`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread;

use anyhow::{bail, Context, Result};
use ftvm_host::{DiskImage, TapDevice, TapStopper};
use ftvm_machine::{BlkOp, DeviceConfig, Input, Slot};

use crate::events::HostEvent;

/// `--drive file=PATH[,readonly]` (a bare PATH also works).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    pub path: PathBuf,
    pub read_only: bool,
}

impl std::str::FromStr for DriveSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut path = None;
        let mut read_only = false;
        for part in s.split(',') {
            match part.split_once('=') {
                Some(("file", p)) => path = Some(PathBuf::from(p)),
                Some(("readonly", v)) => read_only = matches!(v, "on" | "true" | "yes" | "1"),
                None if part == "readonly" || part == "ro" => read_only = true,
                None if path.is_none() && !part.is_empty() => path = Some(PathBuf::from(part)),
                _ => {
                    return Err(format!(
                        "unknown drive option {part:?} (expected file=PATH[,readonly])"
                    ))
                }
            }
        }
        let path = path.ok_or("--drive needs file=PATH")?;
        Ok(DriveSpec { path, read_only })
    }
}

/// `--net tap:NAME[,mac=52:54:00:12:34:56]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSpec {
    pub tap: String,
    pub mac: [u8; 6],
}

pub const DEFAULT_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(format!("bad MAC address {s:?}"));
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).map_err(|_| format!("bad MAC address {s:?}"))?;
    }
    if mac[0] & 1 != 0 {
        return Err(format!("MAC address {s:?} is a multicast address"));
    }
    Ok(mac)
}

impl std::str::FromStr for NetSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let first = parts.next().unwrap_or_default();
        let tap = first
            .strip_prefix("tap:")
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("unsupported network backend {first:?} (expected tap:NAME)"))?
            .to_string();
        let mut mac = DEFAULT_MAC;
        for p in parts {
            match p.split_once('=') {
                Some(("mac", m)) => mac = parse_mac(m)?,
                _ => {
                    return Err(format!(
                        "unknown network option {p:?} (expected mac=XX:XX:XX:XX:XX:XX)"
                    ))
                }
            }
        }
        Ok(NetSpec { tap, mac })
    }
}

/// What serves a virtio-net card: frames out, and a reader feeding frames
/// in. TAP devices are the one backend today; a userspace network stack
/// would be another.
pub trait NetBackend: Send {
    /// Sends one Ethernet frame (dropped, as a NIC would, on failure).
    fn transmit(&self, frame: &[u8]);
    /// Starts a thread that forwards received frames for `slot` to `tx`;
    /// returns a handle that stops it.
    fn start_reader(&self, slot: Slot, tx: Sender<HostEvent>) -> Result<TapStopper>;
}

impl NetBackend for TapDevice {
    fn transmit(&self, frame: &[u8]) {
        if let Err(e) = self.send(frame) {
            tracing::debug!("TAP send failed (frame dropped, as a NIC would): {e}");
        }
    }

    fn start_reader(&self, slot: Slot, tx: Sender<HostEvent>) -> Result<TapStopper> {
        let reader = self.try_clone().context("cannot clone the TAP handle")?;
        let stopper = reader.stopper();
        thread::Builder::new()
            .name(format!("tap-{slot}"))
            .spawn(move || {
                let mut buf = vec![0u8; ftvm_host::tap::MAX_FRAME];
                loop {
                    match reader.recv(&mut buf) {
                        Ok(n) => {
                            if tx.send(HostEvent::Frame(slot, buf[..n].to_vec())).is_err() {
                                break;
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            if !reader.stopper().is_stopped() {
                                tracing::warn!("TAP reader for slot {slot} stopped: {e}");
                            }
                            break;
                        }
                    }
                }
            })
            .context("cannot start a TAP reader thread")?;
        Ok(stopper)
    }
}

/// Opens an existing TAP device. ftvm does not create one on the fly: a
/// network that silently appears unconnected is worse than an error.
fn open_tap(name: &str) -> Result<TapDevice> {
    // Names the kernel would refuse get the host library's own message.
    let plausible = !name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', ':']);
    if plausible && !std::path::Path::new("/sys/class/net").join(name).exists() {
        bail!("TAP device {name:?} does not exist in this network namespace; create it with `ip tuntap add dev {name} mode tap` (scripts/netns.sh does)");
    }
    Ok(TapDevice::open(name)?)
}

/// The virtio device list for the machine config, and what serves each slot.
pub struct Backends {
    pub disks: BTreeMap<Slot, DiskImage>,
    pub nets: BTreeMap<Slot, Box<dyn NetBackend>>,
    stoppers: Vec<TapStopper>,
    /// Block requests for the disk worker thread, once started.
    disk_queue: Option<Sender<(Slot, u64, BlkOp)>>,
}

impl Drop for Backends {
    fn drop(&mut self) {
        for s in &self.stoppers {
            s.stop();
        }
    }
}

/// Opens every backend, so that a bad image or a busy TAP is reported
/// before the machine starts. Returns the device configs in slot order.
pub fn open(
    drives: &[DriveSpec],
    nets: &[NetSpec],
    rng: bool,
) -> Result<(Vec<DeviceConfig>, Backends)> {
    let mut cfgs = Vec::new();
    let mut b = Backends {
        disks: BTreeMap::new(),
        nets: BTreeMap::new(),
        stoppers: Vec::new(),
        disk_queue: None,
    };
    for d in drives {
        let disk = DiskImage::open(&d.path, d.read_only)
            .with_context(|| format!("drive {}", d.path.display()))?;
        cfgs.push(DeviceConfig::Blk {
            capacity_bytes: disk.size(),
            read_only: d.read_only,
        });
        b.disks.insert((cfgs.len() - 1) as Slot, disk);
    }
    for n in nets {
        let tap = open_tap(&n.tap).with_context(|| format!("network backend tap:{}", n.tap))?;
        cfgs.push(DeviceConfig::Net { mac: n.mac });
        b.nets.insert((cfgs.len() - 1) as Slot, Box::new(tap));
    }
    if rng {
        cfgs.push(DeviceConfig::Rng);
    }
    if cfgs.len() > ftvm_machine::layout::VIRTIO_SLOTS as usize {
        bail!(
            "{} virtio devices requested; the board has {} slots",
            cfgs.len(),
            ftvm_machine::layout::VIRTIO_SLOTS
        );
    }
    Ok((cfgs, b))
}

impl Backends {
    /// Starts a reader per network backend, forwarding frames to `tx`.
    pub fn start_readers(&mut self, tx: &Sender<HostEvent>) -> Result<()> {
        for (&slot, net) in &self.nets {
            self.stoppers.push(net.start_reader(slot, tx.clone())?);
        }
        Ok(())
    }

    /// Starts the disk worker: block requests are served in order on their
    /// own thread, so a slow fdatasync does not stall the guest; each
    /// completion comes back to `tx` as an input for the driver to apply.
    pub fn start_disk_worker(&mut self, tx: &Sender<HostEvent>) -> Result<()> {
        if self.disks.is_empty() {
            return Ok(());
        }
        let disks = std::mem::take(&mut self.disks);
        let (qtx, qrx) = std::sync::mpsc::channel::<(Slot, u64, BlkOp)>();
        let tx = tx.clone();
        thread::Builder::new()
            .name("disk-io".into())
            .spawn(move || {
                for (slot, id, op) in qrx {
                    if tx
                        .send(HostEvent::Completion(block(&disks, slot, id, &op)))
                        .is_err()
                    {
                        break;
                    }
                }
            })
            .context("cannot start the disk I/O thread")?;
        self.disk_queue = Some(qtx);
        Ok(())
    }

    /// Queues a block request for the disk worker. Returns the completion
    /// at once (an I/O error) only if there is no worker to take it.
    pub fn submit_block(&self, slot: Slot, id: u64, op: BlkOp) -> Option<Input> {
        match &self.disk_queue {
            Some(q) => match q.send((slot, id, op)) {
                Ok(()) => None,
                // The worker is gone (it only stops when the driver does).
                Err(e) => Some(block(&self.disks, slot, id, &e.0 .2)),
            },
            None => Some(block(&self.disks, slot, id, &op)),
        }
    }
}

/// Serves one block request; returns the completion input.
fn block(disks: &BTreeMap<Slot, DiskImage>, slot: Slot, id: u64, op: &BlkOp) -> Input {
    {
        let (status, data) = match disks.get(&slot) {
            None => (1, Vec::new()),
            Some(disk) => {
                let r = match op {
                    BlkOp::Read { offset, len } => disk.read_at(*offset, *len as usize),
                    BlkOp::Write { offset, data, fua } => {
                        disk.write_at(*offset, data, *fua).map(|_| Vec::new())
                    }
                    BlkOp::Flush => disk.flush().map(|_| Vec::new()),
                    BlkOp::Discard { offset, len } => {
                        disk.discard(*offset, *len).map(|_| Vec::new())
                    }
                };
                match r {
                    Ok(d) => (0, d),
                    Err(e) => {
                        tracing::error!("disk I/O failed, the guest sees an I/O error: {e}");
                        (1, Vec::new())
                    }
                }
            }
        };
        Input::BlkDone {
            slot,
            id,
            status,
            data,
        }
    }
}

impl Backends {
    /// Sends a frame out of the network backend in `slot`.
    pub fn transmit(&self, slot: Slot, frame: &[u8]) {
        if let Some(net) = self.nets.get(&slot) {
            net.transmit(frame);
        }
    }
}

/// Entropy for a virtio-rng request.
pub fn entropy(slot: Slot, id: u64, len: u32) -> Input {
    let mut data = vec![0u8; len as usize];
    if let Err(e) = ftvm_host::entropy::fill(&mut data) {
        tracing::error!("host entropy failed: {e}");
        data.clear();
    }
    Input::RngData { slot, id, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_drive_and_net_specs() {
        let d: DriveSpec = "file=/tmp/x.img,readonly".parse().unwrap();
        assert_eq!(d.path, PathBuf::from("/tmp/x.img"));
        assert!(d.read_only);
        let d: DriveSpec = "/tmp/y.img".parse().unwrap();
        assert!(!d.read_only);
        assert!("file=a,bogus=1".parse::<DriveSpec>().is_err());
        let n: NetSpec = "tap:tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, [2, 0, 0, 0, 0, 1]);
        assert!("user".parse::<NetSpec>().is_err());
        assert!("tap:t,mac=01:00:00:00:00:00".parse::<NetSpec>().is_err());
    }
}
