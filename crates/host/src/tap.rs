//! TAP devices: the guest's Ethernet link to the host.
//!
//! [`TapDevice::open`] attaches to the TAP interface of the given name in the
//! calling thread's network namespace through `/dev/net/tun`, with
//! `IFF_TAP | IFF_NO_PI`: every `read` is one whole Ethernet frame (no
//! packet-information header, no virtio-net header) and every `write` sends
//! one.
//!
//! Which device you get: if an interface of that name exists (the usual case:
//! a persistent TAP made by `ip tuntap add dev NAME mode tap`, as
//! `scripts/netns.sh` does), `open` attaches to it and the device outlives
//! this process. If none exists, the kernel creates a *transient* TAP of that
//! name (this needs CAP_NET_ADMIN) which disappears when the last handle is
//! closed; [`TapDevice::is_persistent`] tells which happened. A TAP that is
//! already attached to another file descriptor is refused with
//! [`HostError::TapBusy`], so two VMs can never share one device by mistake.
//!
//! Bringing the link up and putting it on a bridge is the caller's (or the
//! scripts') job; [`TapDevice::set_up`] is there for convenience.
//!
//! Threads: the device is `Send + Sync` and every method takes `&self`, so
//! one thread may block in [`TapDevice::recv`] while another sends.
//! [`TapDevice::try_clone`] gives a second handle (its own file descriptor
//! on the same open device) to move into a reader thread. A blocked reader
//! is ended by [`TapStopper::stop`] (or [`TapDevice::stop`]): the stop is
//! sticky and shared by all clones, after which `recv` fails with
//! `ErrorKind::ConnectionAborted` and [`TapDevice::recv_timeout`] returns
//! [`Recv::Stopped`]. An event loop instead registers the (non-blocking)
//! descriptor with epoll and calls [`TapDevice::try_recv`] when it is
//! readable, with no thread at all.

use crate::HostError;
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A receive buffer of this many bytes holds any frame a TAP can deliver
/// (a smaller buffer silently truncates frames larger than itself).
pub const MAX_FRAME: usize = 65536;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
const MAX_NAME: usize = libc::IFNAMSIZ - 1;

/// The outcome of [`TapDevice::recv_timeout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recv {
    /// A frame of this many bytes was read into the buffer.
    Frame(usize),
    /// The timeout passed with no frame.
    Timeout,
    /// The device was stopped with [`TapStopper::stop`].
    Stopped,
}

/// An open TAP device. See the module documentation.
#[derive(Debug)]
pub struct TapDevice {
    name: String,
    /// The `/dev/net/tun` file descriptor bound to the interface
    /// (non-blocking; waits happen in `poll`).
    fd: OwnedFd,
    /// An AF_INET datagram socket created in the TAP's network namespace,
    /// for interface ioctls (SIOCGIFFLAGS/SIOCSIFFLAGS).
    ctl: Arc<OwnedFd>,
    /// The eventfd that `stop` makes readable; shared by all clones.
    stop: Arc<OwnedFd>,
    persistent: bool,
}

/// Ends blocked and future receives on a [`TapDevice`] and all its clones.
#[derive(Clone, Debug)]
pub struct TapStopper {
    stop: Arc<OwnedFd>,
}

impl TapStopper {
    /// Wakes every thread blocked in `recv`/`recv_timeout` on the device and
    /// makes every later receive return at once as stopped. Sending is not
    /// affected. Idempotent.
    pub fn stop(&self) {
        signal_eventfd(&self.stop);
    }

    /// Whether [`TapStopper::stop`] has been called.
    pub fn is_stopped(&self) -> bool {
        is_readable(self.stop.as_fd())
    }
}

impl TapDevice {
    /// Attaches to the TAP interface `name` in the calling thread's network
    /// namespace, or creates a transient one if no interface has that name.
    pub fn open(name: &str) -> Result<TapDevice, HostError> {
        validate_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => HostError::TunMissing,
                io::ErrorKind::PermissionDenied => HostError::TapPermission {
                    name: name.to_string(),
                },
                _ => HostError::Tap {
                    name: name.to_string(),
                    what: "opening /dev/net/tun",
                    source: e,
                },
            })?;
        let fd = OwnedFd::from(file);

        let mut ifr = ifreq_for(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: `fd` is an open /dev/net/tun descriptor and `ifr` is a
        // valid, initialised `ifreq` that outlives the call; TUNSETIFF reads
        // and writes only that struct.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EBUSY) => HostError::TapBusy {
                    name: name.to_string(),
                },
                Some(libc::EPERM) | Some(libc::EACCES) => HostError::TapPermission {
                    name: name.to_string(),
                },
                Some(libc::EINVAL) => HostError::NotATap {
                    name: name.to_string(),
                },
                _ => HostError::Tap {
                    name: name.to_string(),
                    what: "attaching (TUNSETIFF)",
                    source: e,
                },
            });
        }

        let mut got = ifreq_for(name);
        // SAFETY: as above; TUNGETIFF fills in the name and flags of the
        // device `fd` is attached to.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNGETIFF as _, &mut got) };
        let persistent = if rc < 0 {
            false
        } else {
            // SAFETY: TUNGETIFF stores the flags in `ifru_flags`, and any
            // bit pattern is a valid c_short.
            let flags = unsafe { got.ifr_ifru.ifru_flags } as libc::c_int;
            flags & libc::IFF_PERSIST != 0
        };

        // SAFETY: plain socket(2) call; the result is checked before use.
        let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if s < 0 {
            return Err(HostError::Tap {
                name: name.to_string(),
                what: "creating a control socket",
                source: io::Error::last_os_error(),
            });
        }
        // SAFETY: `s` is a freshly created descriptor owned by nobody else.
        let ctl = unsafe { OwnedFd::from_raw_fd(s) };

        let stop = new_eventfd().map_err(|e| HostError::Tap {
            name: name.to_string(),
            what: "creating the stop eventfd",
            source: e,
        })?;

        tracing::debug!(tap = name, persistent, "attached TAP device");
        Ok(TapDevice {
            name: name.to_string(),
            fd,
            ctl: Arc::new(ctl),
            stop: Arc::new(stop),
            persistent,
        })
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the interface is persistent (made by `ip tuntap add`) rather
    /// than a transient one created by [`TapDevice::open`].
    pub fn is_persistent(&self) -> bool {
        self.persistent
    }

    /// The MAC address of the host side of the TAP interface (not the
    /// guest's: the guest's NIC has its own address).
    pub fn mac(&self) -> Result<[u8; 6], HostError> {
        let mut ifr = ifreq_for(&self.name);
        // SAFETY: the tun driver answers SIOCGIFHWADDR on its own descriptor
        // by filling `ifr.ifr_ifru.ifru_hwaddr`; `ifr` is valid for the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::SIOCGIFHWADDR as _, &mut ifr) };
        if rc < 0 {
            return Err(self.err("reading the MAC address", io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFHWADDR succeeded, so `ifru_hwaddr` is the active
        // field; any bytes are valid c_chars.
        let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
        let mut mac = [0u8; 6];
        for (m, d) in mac.iter_mut().zip(data.iter()) {
            *m = *d as u8;
        }
        Ok(mac)
    }

    /// Sets the interface administratively up (SIOCSIFFLAGS), as
    /// `ip link set NAME up` does. Needs CAP_NET_ADMIN.
    pub fn set_up(&self) -> Result<(), HostError> {
        let flags = self.flags()?;
        let mut ifr = ifreq_for(&self.name);
        ifr.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
        // SAFETY: SIOCSIFFLAGS reads the name and flags of a valid `ifreq`.
        let rc = unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCSIFFLAGS as _, &mut ifr) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return Err(HostError::TapPermission {
                    name: self.name.clone(),
                });
            }
            return Err(self.err("setting the link up", e));
        }
        Ok(())
    }

    /// Whether the link is operationally up (`IFF_RUNNING`): administratively
    /// up, with carrier, and noticed as such by the kernel. Until it is,
    /// frames written into the TAP are dropped by a bridge it is on and
    /// frames for it are not queued.
    pub fn is_running(&self) -> Result<bool, HostError> {
        Ok(self.flags()? & libc::IFF_RUNNING != 0)
    }

    /// Waits up to `timeout` for [`TapDevice::is_running`]; returns whether
    /// it became true. Attaching gives the TAP carrier at once, but the
    /// kernel acts on carrier changes in batches at most once a second, so
    /// for up to about a second after [`TapDevice::open`] frames are lost.
    /// Call this before anything whose first frames matter (an ARP
    /// announcement, a test), or attach ahead of need.
    pub fn wait_running(&self, timeout: Duration) -> Result<bool, HostError> {
        let end = Instant::now() + timeout;
        loop {
            if self.is_running()? {
                return Ok(true);
            }
            if Instant::now() >= end {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn flags(&self) -> Result<libc::c_int, HostError> {
        let mut ifr = ifreq_for(&self.name);
        // SAFETY: SIOCGIFFLAGS on a socket fills `ifru_flags` of a valid
        // `ifreq` naming the interface.
        let rc = unsafe { libc::ioctl(self.ctl.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) };
        if rc < 0 {
            return Err(self.err("reading interface flags", io::Error::last_os_error()));
        }
        // SAFETY: SIOCGIFFLAGS succeeded, so `ifru_flags` is the active field.
        Ok(libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags }) & 0xffff)
    }

    /// Sends one Ethernet frame (destination MAC first, no FCS).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        loop {
            // SAFETY: writes `frame.len()` bytes from a valid slice to an
            // open descriptor.
            let n = unsafe {
                libc::write(
                    self.fd.as_raw_fd(),
                    frame.as_ptr().cast::<libc::c_void>(),
                    frame.len(),
                )
            };
            if n >= 0 {
                if n as usize != frame.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("TAP {}: short write {n} of {}", self.name, frame.len()),
                    ));
                }
                return Ok(());
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => {
                    poll_fds(&mut [pollfd(self.fd.as_fd(), libc::POLLOUT)], None)?;
                }
                _ => return Err(e),
            }
        }
    }

    /// Reads one frame if one is queued, without waiting: `Ok(None)` when
    /// none is. This is what an event loop calls once epoll reported the
    /// descriptor ([`AsRawFd`]) readable; since epoll reports edges, the
    /// caller reads until `None`. The stop signal is not consulted.
    pub fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: reads at most `buf.len()` bytes into a valid, writable
            // slice from an open, non-blocking descriptor.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(Some(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// Receives one frame into `buf`, blocking until one arrives; returns
    /// its length. Fails with `ErrorKind::ConnectionAborted` once the device
    /// has been stopped. `buf` should hold [`MAX_FRAME`] bytes: a longer
    /// frame is truncated to the buffer.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.recv_timeout(buf, None)? {
                Recv::Frame(n) => return Ok(n),
                Recv::Stopped => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        format!("TAP {}: reader stopped", self.name),
                    ))
                }
                Recv::Timeout => continue,
            }
        }
    }

    /// Receives one frame into `buf`, waiting at most `timeout` (`None`:
    /// forever). A stop takes precedence over pending frames.
    pub fn recv_timeout(&self, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<Recv> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let mut fds = [
                pollfd(self.stop.as_fd(), libc::POLLIN),
                pollfd(self.fd.as_fd(), libc::POLLIN),
            ];
            let ready = poll_fds(&mut fds, left)?;
            if fds[0].revents != 0 {
                return Ok(Recv::Stopped);
            }
            if ready == 0 {
                if left.is_some_and(|l| l.is_zero())
                    || deadline.is_some_and(|d| Instant::now() >= d)
                {
                    return Ok(Recv::Timeout);
                }
                continue;
            }
            // SAFETY: reads at most `buf.len()` bytes into a valid, writable
            // slice from an open descriptor.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast::<libc::c_void>(),
                    buf.len(),
                )
            };
            if n >= 0 {
                return Ok(Recv::Frame(n as usize));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                // Spurious readiness or a signal: wait again.
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                _ => return Err(e),
            }
        }
    }

    /// A second handle on the same device (a duplicated descriptor sharing
    /// the stop signal), e.g. to move into a reader thread.
    pub fn try_clone(&self) -> Result<TapDevice, HostError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| self.err("duplicating the descriptor", e))?;
        Ok(TapDevice {
            name: self.name.clone(),
            fd,
            ctl: Arc::clone(&self.ctl),
            stop: Arc::clone(&self.stop),
            persistent: self.persistent,
        })
    }

    /// A handle that stops receivers on this device and its clones.
    pub fn stopper(&self) -> TapStopper {
        TapStopper {
            stop: Arc::clone(&self.stop),
        }
    }

    /// Same as `self.stopper().stop()`.
    pub fn stop(&self) {
        signal_eventfd(&self.stop);
    }

    fn err(&self, what: &'static str, source: io::Error) -> HostError {
        HostError::Tap {
            name: self.name.clone(),
            what,
            source,
        }
    }
}

impl AsFd for TapDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for TapDevice {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn validate_name(name: &str) -> Result<(), HostError> {
    let bad = name.is_empty()
        || name.len() > MAX_NAME
        || name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b == 0 || b.is_ascii_whitespace());
    if bad {
        return Err(HostError::TapName {
            name: name.to_string(),
        });
    }
    Ok(())
}

/// A zeroed `ifreq` carrying `name` (which `validate_name` has checked fits).
fn ifreq_for(name: &str) -> libc::ifreq {
    // SAFETY: `ifreq` is plain old data (arrays, integers, a union of such
    // and a raw pointer); all-zero bytes are a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(MAX_NAME)) {
        *dst = src as libc::c_char;
    }
    ifr
}

fn new_eventfd() -> io::Result<OwnedFd> {
    // SAFETY: plain eventfd(2) call; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn signal_eventfd(fd: &OwnedFd) {
    let one: u64 = 1;
    // SAFETY: writes the 8 bytes of a live u64 to an eventfd, as eventfd(2)
    // requires. It can only fail with EAGAIN when the counter is at its
    // maximum, in which case it is readable already: the stop holds anyway.
    let _ = unsafe {
        libc::write(
            fd.as_raw_fd(),
            (&one as *const u64).cast::<libc::c_void>(),
            std::mem::size_of::<u64>(),
        )
    };
}

fn is_readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [pollfd(fd, libc::POLLIN)];
    matches!(poll_fds(&mut fds, Some(Duration::ZERO)), Ok(n) if n > 0)
}

fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// poll(2) over `fds`, retrying on EINTR within the timeout; returns the
/// number of ready descriptors (0 on timeout).
fn poll_fds(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: libc::c_int = match deadline {
            None => -1,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // Round up so that a sub-millisecond remainder still waits.
                let ms = left.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        // SAFETY: `fds` is a valid, writable array of `fds.len()` pollfds
        // holding open descriptors borrowed for the duration of the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn bad_names_are_refused() {
        for name in ["", "a/b", "a:b", "with space", "sixteen-chars-xx", ".."] {
            assert!(
                matches!(TapDevice::open(name), Err(HostError::TapName { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn unprivileged_open_names_the_fix() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 || !std::path::Path::new("/dev/net/tun").exists() {
            eprintln!("note: skipping the unprivileged TAP test (root, or no /dev/net/tun)");
            return;
        }
        match TapDevice::open("ftvmnoperm0") {
            Err(e @ HostError::TapPermission { .. }) => {
                assert!(e.to_string().contains("CAP_NET_ADMIN"), "{e}");
            }
            other => panic!("expected TapPermission, got {other:?}"),
        }
    }

    /// Why the TAP test cannot run here, or `None` if it can.
    fn tap_test_blocker() -> Option<String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Some("not running as root".into());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("/dev/net/tun is missing".into());
        }
        match Command::new("ip").arg("-V").output() {
            Ok(o) if o.status.success() => None,
            _ => Some("the `ip` command (iproute2) is missing".into()),
        }
    }

    fn ip(args: &[&str]) -> Result<(), String> {
        let out = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
        if !out.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    /// A network namespace that is deleted when dropped (also on panic).
    struct Netns(String);

    impl Netns {
        fn create() -> Result<Netns, String> {
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "ftvmhost-test-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            );
            ip(&["netns", "add", &name])?;
            Ok(Netns(name))
        }

        fn ip(&self, args: &[&str]) -> Result<(), String> {
            let mut all = vec!["-n", self.0.as_str()];
            all.extend_from_slice(args);
            ip(&all)
        }
    }

    impl Drop for Netns {
        fn drop(&mut self) {
            // Deleting the namespace deletes the bridge and TAPs in it.
            if let Err(e) = ip(&["netns", "del", &self.0]) {
                eprintln!("cleanup: {e}");
            }
        }
    }

    const ETHERTYPE_TEST: [u8; 2] = [0x88, 0xb5]; // IEEE local experimental

    fn test_frame(src: [u8; 6], payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6]; // broadcast: the bridge floods it
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE_TEST);
        f.extend_from_slice(payload);
        f.resize(f.len().max(60), 0);
        f
    }

    /// Two persistent TAPs on a bridge in a throwaway namespace: a frame
    /// sent into one comes out of the other; busy and stop behave.
    fn two_taps_on_a_bridge() -> Result<(), String> {
        let ns = Netns::create()?;
        // Keep IPv6 chatter (router solicitations etc.) off the links.
        let _ = Command::new("ip")
            .args(["netns", "exec", &ns.0, "sysctl", "-q", "-w"])
            .arg("net.ipv6.conf.all.disable_ipv6=1")
            .output();
        ns.ip(&["link", "add", "br0", "type", "bridge", "forward_delay", "0"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        for t in ["tapa", "tapb"] {
            ns.ip(&["tuntap", "add", "dev", t, "mode", "tap"])?;
            ns.ip(&["link", "set", t, "master", "br0"])?;
        }
        ns.ip(&["link", "set", "tapa", "up"])?;

        // Everything that talks to the TAPs runs in a thread inside the
        // namespace; the test thread stays where it was.
        let ns_name = ns.0.clone();
        let worker = std::thread::spawn(move || -> Result<(), String> {
            enter_netns(&ns_name)?;
            let a = TapDevice::open("tapa").map_err(|e| e.to_string())?;
            let b = TapDevice::open("tapb").map_err(|e| e.to_string())?;
            if !a.is_persistent() || !b.is_persistent() {
                return Err("ip tuntap add made TAPs that do not report IFF_PERSIST".into());
            }
            b.set_up().map_err(|e| e.to_string())?; // tapa was set up by ip
            for t in [&a, &b] {
                if !t
                    .wait_running(Duration::from_secs(5))
                    .map_err(|e| e.to_string())?
                {
                    return Err(format!("{} did not become RUNNING", t.name()));
                }
            }
            match TapDevice::open("tapa") {
                Err(HostError::TapBusy { name }) if name == "tapa" => {}
                other => return Err(format!("second open of tapa: {other:?}")),
            }
            match TapDevice::open("br0") {
                Err(HostError::NotATap { .. }) => {}
                other => return Err(format!("opening the bridge as a TAP: {other:?}")),
            }
            // No such interface: the kernel makes a transient one, gone on close.
            let t = TapDevice::open("tapt").map_err(|e| e.to_string())?;
            if t.is_persistent() {
                return Err("a TAP created by open reports IFF_PERSIST".into());
            }
            drop(t);
            // SAFETY: the argument is a NUL-terminated string literal.
            if unsafe { libc::if_nametoindex(c"tapt".as_ptr()) } != 0 {
                return Err("the transient TAP outlived its last handle".into());
            }
            let mac = a.mac().map_err(|e| e.to_string())?;
            if mac == [0; 6] {
                return Err("tapa has an all-zero MAC".into());
            }

            // Ports may take a moment to forward: resend until seen.
            let frame = test_frame([0x02, 0, 0, 0, 0, 0xaa], b"ftvm-host tap test");
            let reader = b.try_clone().map_err(|e| e.to_string())?;
            let mut buf = vec![0u8; MAX_FRAME];
            let give_up = Instant::now() + Duration::from_secs(10);
            let mut seen = false;
            while !seen && Instant::now() < give_up {
                a.send(&frame).map_err(|e| format!("send: {e}"))?;
                let until = Instant::now() + Duration::from_millis(200);
                while Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    match reader.recv_timeout(&mut buf, Some(left)) {
                        Ok(Recv::Frame(n)) if buf[..n] == frame[..] => {
                            seen = true;
                            break;
                        }
                        Ok(Recv::Frame(_)) => continue, // other traffic
                        Ok(Recv::Timeout) => break,
                        Ok(Recv::Stopped) => return Err("stopped unexpectedly".into()),
                        Err(e) => return Err(format!("recv: {e}")),
                    }
                }
            }
            if !seen {
                return Err("the frame sent into tapa never came out of tapb".into());
            }

            // A reader blocked in recv is woken by stop from another thread.
            let stopper = b.stopper();
            let blocked = std::thread::spawn(move || {
                let mut buf = vec![0u8; MAX_FRAME];
                loop {
                    match reader.recv(&mut buf) {
                        Ok(_) => continue,
                        Err(e) => return e.kind(),
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(50));
            stopper.stop();
            let kind = blocked
                .join()
                .map_err(|_| "reader thread panicked".to_string())?;
            if kind != io::ErrorKind::ConnectionAborted {
                return Err(format!("stopped reader ended with {kind:?}"));
            }
            if b.recv_timeout(&mut buf, None).map_err(|e| e.to_string())? != Recv::Stopped {
                return Err("stop is not sticky".into());
            }
            Ok(())
        });
        let result = worker
            .join()
            .map_err(|_| "TAP worker thread panicked".to_string())?;
        drop(ns);
        result
    }

    /// Moves the calling thread (only) into the named network namespace.
    fn enter_netns(name: &str) -> Result<(), String> {
        let path = format!("/run/netns/{name}");
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        // SAFETY: `f` is an open namespace file; setns with CLONE_NEWNET
        // changes the network namespace of this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc < 0 {
            return Err(format!("setns: {}", io::Error::last_os_error()));
        }
        Ok(())
    }

    #[test]
    fn tap_frames_cross_a_bridge() {
        if let Some(why) = tap_test_blocker() {
            eprintln!("note: skipping the TAP test: {why}");
            return;
        }
        if let Err(e) = two_taps_on_a_bridge() {
            panic!("TAP test failed: {e}");
        }
    }
}
