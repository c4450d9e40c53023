//! virtio devices on the command line (`--drive`, `--net`, `--no-rng`) and
//! the host backends that serve them: disks (a raw image file, or an export
//! of an NBD server such as `ftvm storage` or `qemu-nbd`, both behind the
//! [`DiskBackend`] trait, served by a worker thread since their calls
//! block), TAP devices (read by the driver's event loop, no thread) and the
//! host entropy source. Slots are assigned in a fixed
//! order: drives, then network cards, then the RNG, so the first drive is
//! always `/dev/vda`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::mpsc::Sender;
use std::thread;

use anyhow::{bail, Context, Result};
use ftvm_host::{DiskImage, HostError, TapDevice};
use ftvm_machine::{BlkOp, DeviceConfig, Input, Slot};
use ftvm_storage::{NbdClient, NbdClientOptions, NbdError};
use ftvm_tls::ClientTls;

use crate::events::{EventSender, HostEvent};
use crate::reactor::{FrameSource, Reactor};

/// The NBD port when `nbd://HOST/EXPORT` names none (the IANA-assigned one).
pub const NBD_DEFAULT_PORT: u16 = 10809;

/// Where a drive's bytes live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DriveSource {
    /// A raw image file (or block device) on this host.
    File(PathBuf),
    /// An export of an NBD server (`ftvm storage`, `qemu-nbd`, ...). The
    /// empty name asks for the server's default export.
    Nbd { addr: SocketAddr, export: String },
}

impl fmt::Display for DriveSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveSource::File(p) => write!(f, "{}", p.display()),
            DriveSource::Nbd { addr, export } => write!(f, "nbd://{addr}/{export}"),
        }
    }
}

/// `--drive file=PATH[,readonly]` (a bare PATH also works) or
/// `--drive nbd://HOST[:PORT]/EXPORT[,readonly]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriveSpec {
    pub source: DriveSource,
    pub read_only: bool,
}

/// Parses the `HOST[:PORT]/EXPORT` after `nbd://`. A host name is resolved
/// here (the first address wins), so a typo fails before anything starts.
fn parse_nbd_url(rest: &str) -> Result<DriveSource, String> {
    let (authority, export) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!(
            "nbd://{rest}: no server address (expected nbd://HOST[:PORT]/EXPORT)"
        ));
    }
    // Like qemu's nbd:// URIs, everything after the first `/` is the name.
    if export.chars().any(char::is_control) {
        return Err(format!(
            "nbd://{rest}: {export:?} is not a valid export name"
        ));
    }
    let addr =
        resolve_addr(authority, NBD_DEFAULT_PORT).map_err(|e| format!("nbd://{rest}: {e}"))?;
    Ok(DriveSource::Nbd {
        addr,
        export: export.to_string(),
    })
}

/// `HOST:PORT`, `[V6]:PORT`, or a bare `HOST` / `[V6]` with `default_port`;
/// host names are looked up.
pub fn resolve_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let has_port = if s.starts_with('[') {
        s.contains("]:")
    } else {
        s.matches(':').count() == 1
    };
    let with_port = if has_port {
        s.to_string()
    } else {
        format!("{s}:{default_port}")
    };
    match with_port.to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .ok_or_else(|| format!("{s:?} resolves to no address")),
        Err(e) => Err(format!("bad address {s:?}: {e}")),
    }
}

impl std::str::FromStr for DriveSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut source = None;
        let mut read_only = false;
        for part in s.split(',') {
            // A repeated file= replaces the earlier one (as it always did);
            // an NBD source never mixes with another.
            let set = |source: &mut Option<DriveSource>, new: DriveSource| {
                let file = matches!(new, DriveSource::File(_));
                if matches!(source, Some(DriveSource::Nbd { .. })) || (!file && source.is_some()) {
                    return Err(format!(
                        "--drive {s:?} names more than one source (give file=PATH or nbd://HOST:PORT/EXPORT)"
                    ));
                }
                *source = Some(new);
                Ok(())
            };
            if let Some(rest) = part.strip_prefix("nbd://") {
                set(&mut source, parse_nbd_url(rest)?)?;
                continue;
            }
            match part.split_once('=') {
                Some(("file", p)) => set(&mut source, DriveSource::File(PathBuf::from(p)))?,
                Some(("readonly", v)) => read_only = matches!(v, "on" | "true" | "yes" | "1"),
                None if part == "readonly" || part == "ro" => read_only = true,
                None if source.is_none() && !part.is_empty() => {
                    set(&mut source, DriveSource::File(PathBuf::from(part)))?
                }
                _ => {
                    return Err(format!(
                        "unknown drive option {part:?} (expected file=PATH[,readonly] or nbd://HOST:PORT/EXPORT[,readonly])"
                    ))
                }
            }
        }
        let source = source.ok_or("--drive needs file=PATH or nbd://HOST:PORT/EXPORT")?;
        Ok(DriveSpec { source, read_only })
    }
}

/// A failed disk operation of a [`DiskBackend`].
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error(transparent)]
    File(#[from] HostError),
    #[error(transparent)]
    Nbd(#[from] NbdError),
}

/// What serves a virtio-blk device: a byte-addressed disk of fixed size.
/// Implementations bounds-check every request and are shared with the disk
/// worker thread. A write with `fua` (and everything before a successful
/// `flush`) must be durable when the call returns.
pub trait DiskBackend: Send + Sync {
    /// Size in bytes (a multiple of 512).
    fn size(&self) -> u64;
    /// Reads `len` bytes at `offset`.
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, DiskError>;
    /// Writes `data` at `offset`; with `fua`, durably.
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError>;
    /// Makes every completed write durable.
    fn flush(&self) -> Result<(), DiskError>;
    /// Drops the contents of a range (reads may then return zeros); a hint
    /// that a backend may ignore.
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError>;
}

impl DiskBackend for DiskImage {
    fn size(&self) -> u64 {
        DiskImage::size(self)
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        Ok(DiskImage::read_at(self, offset, len)?)
    }
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        Ok(DiskImage::write_at(self, offset, data, fua)?)
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(DiskImage::flush(self)?)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        Ok(DiskImage::discard(self, offset, len)?)
    }
}

/// An NBD export. The client reconnects and re-sends on its own, for as
/// long as it takes (see [`open_nbd`]), so a call blocks while the server
/// is away instead of failing. FUA is passed through; `ftvm storage` makes
/// every write durable before acknowledging it anyway.
impl DiskBackend for NbdClient {
    fn size(&self) -> u64 {
        NbdClient::size(self)
    }
    fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, DiskError> {
        let mut buf = vec![0u8; len];
        NbdClient::read_at(self, offset, &mut buf)?;
        Ok(buf)
    }
    fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), DiskError> {
        Ok(NbdClient::write_at(self, offset, data, fua)?)
    }
    fn flush(&self) -> Result<(), DiskError> {
        Ok(NbdClient::flush(self)?)
    }
    fn discard(&self, offset: u64, len: u64) -> Result<(), DiskError> {
        // A server without TRIM makes this a no-op inside the client.
        Ok(NbdClient::trim(self, offset, len)?)
    }
}

/// Connects to an NBD export now — an unreachable server or a missing
/// export is an error here — and from then on retries forever: once the
/// machine runs, disk I/O waits for a storage server that went away and
/// resumes when it is back, rather than failing in the guest.
fn open_nbd(addr: SocketAddr, export: &str, tls: Option<&ClientTls>) -> Result<NbdClient> {
    let opts = NbdClientOptions {
        retry_for: None,
        tls: tls.cloned(),
        ..NbdClientOptions::default()
    };
    // The message already names its cause; keeping the chain would repeat it.
    let client = NbdClient::connect_with(addr, export, opts).map_err(|e| match e {
        NbdError::Io { .. } => {
            anyhow::anyhow!("{e} (is the NBD server running and listening there?)")
        }
        e => anyhow::anyhow!("{e}"),
    })?;
    let size = client.size();
    if size == 0 || size % ftvm_host::disk::SECTOR != 0 {
        bail!(
            "NBD export {export:?} on {addr} is {size} bytes; a disk must be a non-zero multiple of {} bytes",
            ftvm_host::disk::SECTOR
        );
    }
    Ok(client)
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

/// What serves a virtio-net card: frames out, and a source of received
/// frames that the driver's event loop reads ([`crate::reactor`]). TAP
/// devices are the one backend today; a userspace network stack would be
/// another.
pub trait NetBackend: Send {
    /// Sends one Ethernet frame (dropped, as a NIC would, on failure).
    fn transmit(&self, frame: &[u8]);
    /// A handle the event loop reads received frames from.
    fn source(&self) -> Result<Box<dyn FrameSource>>;
}

impl NetBackend for TapDevice {
    fn transmit(&self, frame: &[u8]) {
        if let Err(e) = self.send(frame) {
            tracing::debug!("TAP send failed (frame dropped, as a NIC would): {e}");
        }
    }

    fn source(&self) -> Result<Box<dyn FrameSource>> {
        Ok(Box::new(
            self.try_clone().context("cannot clone the TAP handle")?,
        ))
    }
}

/// The TAP's descriptor is non-blocking (see `ftvm_host::tap`).
impl FrameSource for TapDevice {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }
    fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        TapDevice::try_recv(self, buf)
    }
}

/// Opens an existing TAP device. ftvm does not create one on the fly: a
/// network that silently appears unconnected is worse than an error.
pub fn open_tap(name: &str) -> Result<TapDevice> {
    // Names the kernel would refuse get the host library's own message.
    let plausible = !name.is_empty() && name.len() < 16 && !name.contains(['/', ' ', ':']);
    if plausible && !std::path::Path::new("/sys/class/net").join(name).exists() {
        bail!("TAP device {name:?} does not exist in this network namespace; create it with `ip tuntap add dev {name} mode tap` (scripts/netns.sh does)");
    }
    Ok(TapDevice::open(name)?)
}

/// The virtio device list for the machine config, and what serves each slot.
pub struct Backends {
    pub disks: BTreeMap<Slot, Box<dyn DiskBackend>>,
    pub nets: BTreeMap<Slot, Box<dyn NetBackend>>,
    /// Block requests for the disk worker thread, once started.
    disk_queue: Option<Sender<(Slot, u64, BlkOp)>>,
}

/// Opens every backend, so that a bad image or a busy TAP is reported
/// before the machine starts. Returns the device configs in slot order.
pub fn open(
    drives: &[DriveSpec],
    nets: &[NetSpec],
    rng: bool,
    nbd_tls: Option<&ClientTls>,
) -> Result<(Vec<DeviceConfig>, Backends)> {
    let mut cfgs = Vec::new();
    let mut b = Backends {
        disks: BTreeMap::new(),
        nets: BTreeMap::new(),
        disk_queue: None,
    };
    for d in drives {
        let (disk, read_only): (Box<dyn DiskBackend>, bool) = match &d.source {
            DriveSource::File(path) => {
                let img = DiskImage::open(path, d.read_only)
                    .with_context(|| format!("drive {}", path.display()))?;
                (Box::new(img), d.read_only)
            }
            DriveSource::Nbd { addr, export } => {
                let client = open_nbd(*addr, export, nbd_tls)
                    .with_context(|| format!("drive {}", d.source))?;
                // A read-only export is a read-only disk, whatever was asked.
                let ro = d.read_only || client.is_read_only();
                (Box::new(client), ro)
            }
        };
        cfgs.push(DeviceConfig::Blk {
            capacity_bytes: disk.size(),
            read_only,
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

/// The device configs [`open`] would return, without keeping anything
/// open: what a backup needs to build its machine while the primary holds
/// the devices. Image files are checked and sized (not locked: the primary
/// has them), NBD exports and TAP devices are opened once and closed again.
pub fn probe(
    drives: &[DriveSpec],
    nets: &[NetSpec],
    rng: bool,
    nbd_tls: Option<&ClientTls>,
) -> Result<Vec<DeviceConfig>> {
    let mut cfgs = Vec::new();
    for d in drives {
        let capacity_bytes = match &d.source {
            DriveSource::File(path) => {
                let meta = std::fs::metadata(path).with_context(|| {
                    format!("drive {}: cannot access the image", path.display())
                })?;
                if !meta.is_file() {
                    bail!("drive {}: not a regular file", path.display());
                }
                meta.len()
            }
            DriveSource::Nbd { addr, export } => open_nbd(*addr, export, nbd_tls)
                .with_context(|| format!("drive {}", d.source))?
                .size(),
        };
        cfgs.push(DeviceConfig::Blk {
            capacity_bytes,
            read_only: d.read_only,
        });
    }
    for n in nets {
        drop(open_tap(&n.tap).with_context(|| format!("network backend tap:{}", n.tap))?);
        cfgs.push(DeviceConfig::Net { mac: n.mac });
    }
    if rng {
        cfgs.push(DeviceConfig::Rng);
    }
    Ok(cfgs)
}

impl Backends {
    /// Registers every network backend's received frames with `reactor`,
    /// which reads them on the driver's thread.
    pub fn register_nets(&self, reactor: &mut Reactor) -> Result<()> {
        for (&slot, net) in &self.nets {
            reactor.add_frames(slot, net.source()?)?;
        }
        Ok(())
    }

    /// Starts the disk worker: block requests are served in order on their
    /// own thread, so a slow fdatasync does not stall the guest; each
    /// completion comes back to `tx` as an input for the driver to apply.
    pub fn start_disk_worker(&mut self, tx: &EventSender) -> Result<()> {
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
pub fn block(
    disks: &BTreeMap<Slot, Box<dyn DiskBackend>>,
    slot: Slot,
    id: u64,
    op: &BlkOp,
) -> Input {
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
        assert_eq!(d.source, DriveSource::File(PathBuf::from("/tmp/x.img")));
        assert!(d.read_only);
        let d: DriveSpec = "/tmp/y.img".parse().unwrap();
        assert!(!d.read_only);
        assert!("file=a,bogus=1".parse::<DriveSpec>().is_err());
        let d: DriveSpec = "file=a,file=b".parse().unwrap();
        assert_eq!(d.source, DriveSource::File(PathBuf::from("b")));
        let n: NetSpec = "tap:tap0,mac=02:00:00:00:00:01".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        assert_eq!(n.mac, [2, 0, 0, 0, 0, 1]);
        assert!("user".parse::<NetSpec>().is_err());
        assert!("tap:t,mac=01:00:00:00:00:00".parse::<NetSpec>().is_err());
    }

    #[test]
    fn parses_nbd_drives() {
        let d: DriveSpec = "nbd://127.0.0.1:10900/vm1-disk0,readonly".parse().unwrap();
        assert_eq!(
            d.source,
            DriveSource::Nbd {
                addr: "127.0.0.1:10900".parse().unwrap(),
                export: "vm1-disk0".into()
            }
        );
        assert!(d.read_only);
        let d: DriveSpec = "nbd://127.0.0.1/disk".parse().unwrap();
        assert_eq!(
            d.source,
            DriveSource::Nbd {
                addr: "127.0.0.1:10809".parse().unwrap(),
                export: "disk".into()
            }
        );
        assert!(!d.read_only);
        assert_eq!(d.source.to_string(), "nbd://127.0.0.1:10809/disk");
        let d: DriveSpec = "nbd://[::1]:7000".parse().unwrap();
        assert_eq!(
            d.source,
            DriveSource::Nbd {
                addr: "[::1]:7000".parse().unwrap(),
                export: String::new()
            }
        );
        let d: DriveSpec = "nbd://localhost:7000/x".parse().unwrap();
        assert!(matches!(d.source, DriveSource::Nbd { addr, .. } if addr.port() == 7000));
        assert!("nbd:///x".parse::<DriveSpec>().is_err());
        assert!("nbd://127.0.0.1:99999/x".parse::<DriveSpec>().is_err());
        let d: DriveSpec = "nbd://127.0.0.1:1/a/b".parse().unwrap();
        assert!(matches!(d.source, DriveSource::Nbd { export, .. } if export == "a/b"));
        assert!("file=y,nbd://127.0.0.1:1/x".parse::<DriveSpec>().is_err());
        assert!("nbd://127.0.0.1:1/x,file=y".parse::<DriveSpec>().is_err());
    }
}
