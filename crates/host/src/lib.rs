//! ftvm-host: the host side of ftvm's I/O — the thin driver layer that owns
//! real devices and files so that the machine core never has to.
//!
//! The machine (`ftvm-machine`) is a pure state machine: every outside value
//! enters it as an input and everything it does to the world leaves as an
//! output. The backends here serve those ports with plain bytes and know
//! nothing about the machine's types, so they can be tested on their own and
//! used by the primary, the backup after it goes live, and tools alike:
//!
//! - [`tap::TapDevice`]: an Ethernet TAP interface (`/dev/net/tun`), one
//!   frame per `send`/`recv`, with a [`tap::TapStopper`] to end a blocked
//!   reader thread.
//! - [`disk::DiskImage`]: a raw disk image (or block device) under an
//!   advisory `flock`, with bounds-checked positional reads and writes,
//!   flush (fdatasync), FUA writes and discard (hole punching).
//! - [`entropy::fill`]: bytes from the host's random source (getrandom(2)).
//!
//! Every failure is a [`HostError`] whose message says what went wrong and,
//! where there is one, what the user can do about it.

pub mod disk;
pub mod entropy;
pub mod tap;

pub use disk::DiskImage;
pub use tap::{Recv, TapDevice, TapStopper};

use std::io;
use std::path::PathBuf;

/// Errors from the host backends.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// `/dev/net/tun` does not exist.
    #[error(
        "/dev/net/tun is missing: load the TUN/TAP driver (`modprobe tun`), or, in a \
         container, pass the device in (e.g. `--device /dev/net/tun`)"
    )]
    TunMissing,
    /// Not allowed to open `/dev/net/tun` or to attach to / create the TAP.
    #[error(
        "permission denied for TAP device {name:?}: run ftvm as root or with CAP_NET_ADMIN, \
         or create the device beforehand owned by your user \
         (`ip tuntap add dev {name} mode tap user $USER`)"
    )]
    TapPermission { name: String },
    /// The TAP device is already attached to another file descriptor.
    #[error(
        "TAP device {name:?} is busy: another process (perhaps another ftvm) has it open; \
         stop that process or use another device"
    )]
    TapBusy { name: String },
    /// An interface with that name exists but is not a (single-queue) TAP.
    #[error(
        "interface {name:?} exists but is not a single-queue TAP device; \
         delete it or recreate it with `ip tuntap add dev {name} mode tap`"
    )]
    NotATap { name: String },
    /// The name cannot be an interface name.
    #[error(
        "invalid TAP device name {name:?}: it must be 1 to 15 bytes with no '/', ':' or whitespace"
    )]
    TapName { name: String },
    /// Any other failure while setting up or controlling a TAP device.
    #[error("TAP device {name:?}: {what}: {source}")]
    Tap {
        name: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },

    /// The disk image could not be opened or inspected.
    #[error("cannot open disk image {path}: {source}")]
    DiskOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The disk image has size zero.
    #[error("disk image {path} is empty: give it a size, e.g. `truncate -s 64M {path}`")]
    DiskEmpty { path: PathBuf },
    /// The disk image's size is not a whole number of 512-byte sectors.
    #[error(
        "disk image {path} is {size} bytes, which is not a multiple of 512 (the sector size): \
         round it up with `truncate -s {rounded} {path}`"
    )]
    DiskUnaligned {
        path: PathBuf,
        size: u64,
        rounded: u64,
    },
    /// Another process holds the image's lock.
    #[error(
        "disk image {path} is locked by another process (another ftvm using it?): \
         stop that process or use a copy of the image"
    )]
    DiskLocked { path: PathBuf },
    /// A write, flush-of-writes or discard on an image opened read-only.
    #[error("disk image {path} is open read-only: cannot {op}")]
    DiskReadOnly { path: PathBuf, op: &'static str },
    /// A request reaches past the end of the image.
    #[error(
        "disk request out of bounds on {path}: offset {offset} + length {len} exceeds \
         the image size {size}"
    )]
    OutOfBounds {
        path: PathBuf,
        offset: u64,
        len: u64,
        size: u64,
    },
    /// An I/O error on the disk image.
    #[error("disk image {path}: {op} failed: {source}")]
    DiskIo {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: io::Error,
    },

    /// The host's random source failed.
    #[error("cannot read host entropy: {0}")]
    Entropy(#[source] io::Error),
}
