//! The readiness loop of a VM process: one `mio` poll (epoll on Linux) per
//! driver, on which the driver's own thread waits for everything that can
//! arrive from outside. The hot-path sources are registered with it and
//! read on that thread, with no thread hop: the logging connection and its
//! listeners (registered by [`crate::ft::link`] under tokens of their
//! choosing, read by the driver), and — read here, in [`Reactor::poll`],
//! and queued as [`HostEvent`]s — the TAP devices (non-blocking
//! descriptors, read until empty on each edge), the console's stdin and the
//! status endpoint (answered at once, one line of JSON per connection).
//!
//! What stays on a thread wakes the loop through its waker, after queueing
//! an event on the channel this module also owns ([`Reactor::sender`]):
//! the disk worker, because reads, writes and `fdatasync` on an image file
//! or an NBD export block, and a slow flush must not stall the guest (a
//! file cannot be waited on with epoll; NBD replies could, but the client
//! is blocking and reconnects on its own); and off-hot-path one-shots of
//! the FT drivers — a dial attempt to the backup, a test-and-set at the
//! arbiter, a backup building the primary's machine — which happen at
//! startup, on reconnection and on failover, never per output. A stdin that epoll cannot watch (a regular file,
//! `/dev/null`) is read by a thread too: such reads never wait, and the
//! terminal, the one interactive case, is pollable.
//!
//! The drivers interleave the loop with the machine: between short slices
//! of guest execution they poll with a zero timeout, and while the guest
//! idles they block here until the next timer. [`HOST_EVENTS`] among the
//! ready tokens says that host events wait in [`Reactor::try_recv`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use ftvm_machine::Slot;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::events::{EventSender, HostEvent};

/// Reported when host events are queued: the waker was rung, or a source
/// read by the loop itself (TAP, stdin) produced input.
pub const HOST_EVENTS: Token = Token(usize::MAX);
/// The backup's logging listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// The `--join-listen` listener.
pub const JOIN_LISTENER: Token = Token(usize::MAX - 2);
/// The console's stdin.
const STDIN: Token = Token(usize::MAX - 3);
/// The status endpoint's listener.
const STATUS: Token = Token(usize::MAX - 4);
/// The TAP device of virtio slot `s` is `TAP_BASE - s`.
const TAP_BASE: usize = usize::MAX - 16;

/// Bytes read from stdin per `read`.
const STDIN_CHUNK: usize = 4096;

/// A source of received frames the loop reads itself: a non-blocking
/// descriptor and a read that never waits.
pub trait FrameSource: Send {
    fn raw_fd(&self) -> RawFd;
    /// One frame into `buf`, or `Ok(None)` when none is queued.
    fn try_recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;
}

struct Net {
    slot: Slot,
    src: Box<dyn FrameSource>,
}

struct Status {
    listener: mio::net::TcpListener,
    latest: Arc<Mutex<String>>,
}

pub struct Reactor {
    poll: Poll,
    events: Events,
    rx: Receiver<HostEvent>,
    tx: EventSender,
    nets: Vec<Net>,
    /// stdin is registered (and not at its end yet).
    stdin: bool,
    status: Option<Status>,
    /// Host events read by the loop itself, delivered before the channel's.
    local: VecDeque<HostEvent>,
    buf: Vec<u8>,
}

impl Reactor {
    pub fn new() -> Result<Reactor> {
        let poll = Poll::new().context("cannot create the event loop (epoll)")?;
        let waker = mio::Waker::new(poll.registry(), HOST_EVENTS)
            .context("cannot create the event loop's waker")?;
        let (tx, rx) = mpsc::channel();
        Ok(Reactor {
            poll,
            events: Events::with_capacity(64),
            rx,
            tx: EventSender::new(tx, Arc::new(waker)),
            nets: Vec::new(),
            stdin: false,
            status: None,
            local: VecDeque::new(),
            buf: Vec::new(),
        })
    }

    /// A sender for host threads.
    pub fn sender(&self) -> EventSender {
        self.tx.clone()
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Reads received frames of `slot` from `src` on the loop from now on.
    /// Frames already queued on it are reported by the first poll (epoll
    /// reports a descriptor that is readable when it is added).
    pub fn add_frames(&mut self, slot: Slot, src: Box<dyn FrameSource>) -> Result<()> {
        let fd = src.raw_fd();
        self.poll
            .registry()
            .register(
                &mut SourceFd(&fd),
                Token(TAP_BASE - slot as usize),
                Interest::READABLE,
            )
            .with_context(|| {
                format!("cannot add the network backend of slot {slot} to the event loop")
            })?;
        self.nets.push(Net { slot, src });
        Ok(())
    }

    /// Forwards stdin as `Console` events: read on the loop when epoll can
    /// watch it (a terminal, a pipe, a socket), else by a thread.
    pub fn read_stdin(&mut self) -> Result<()> {
        let fd: RawFd = libc::STDIN_FILENO;
        match self
            .poll
            .registry()
            .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)
        {
            Ok(()) => {
                self.stdin = true;
                Ok(())
            }
            // A regular file or /dev/null: reading never waits, so a thread
            // costs no latency; it ends at the end of the file.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                let tx = self.tx.clone();
                std::thread::Builder::new()
                    .name("console-in".into())
                    .spawn(move || {
                        let mut buf = [0u8; STDIN_CHUNK];
                        let mut stdin = io::stdin();
                        loop {
                            match stdin.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => {
                                    if tx.send(HostEvent::Console(buf[..n].to_vec())).is_err() {
                                        break;
                                    }
                                }
                            }
                        }
                    })
                    .context("cannot start the console input thread")?;
                Ok(())
            }
            Err(e) => Err(e).context("cannot add stdin to the event loop"),
        }
    }

    /// Serves `latest` (one line of JSON) to every connection on `addr`,
    /// answered on the loop. Returns the address bound.
    pub fn serve_status(
        &mut self,
        addr: SocketAddr,
        latest: Arc<Mutex<String>>,
    ) -> Result<SocketAddr> {
        let l = std::net::TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for status requests on {addr}"))?;
        let local = l.local_addr()?;
        l.set_nonblocking(true)
            .context("cannot make the status listener non-blocking")?;
        let mut listener = mio::net::TcpListener::from_std(l);
        self.poll
            .registry()
            .register(&mut listener, STATUS, Interest::READABLE)
            .context("cannot add the status listener to the event loop")?;
        self.status = Some(Status { listener, latest });
        Ok(local)
    }

    /// Waits at most `timeout` (`Some(ZERO)`: just looks) for readiness and
    /// appends the tokens that became ready to `ready`. The loop's own
    /// sources are served here; [`HOST_EVENTS`] is appended when host
    /// events are queued (and the wait is skipped if some already were).
    /// Interrupted waits return with nothing new.
    pub fn poll(&mut self, timeout: Duration, ready: &mut Vec<Token>) -> io::Result<()> {
        let timeout = if self.local.is_empty() {
            timeout
        } else {
            Duration::ZERO
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        let mut stdin = false;
        let mut status = false;
        let mut nets = Vec::new();
        for e in self.events.iter() {
            match e.token() {
                STDIN => stdin = true,
                STATUS => status = true,
                Token(t) if t <= TAP_BASE && t > TAP_BASE - 256 => {
                    nets.push((TAP_BASE - t) as Slot)
                }
                t => ready.push(t),
            }
        }
        for slot in nets {
            self.read_frames(slot);
        }
        if stdin {
            self.read_stdin_now();
        }
        if status {
            self.answer_status();
        }
        if !self.local.is_empty() && !ready.contains(&HOST_EVENTS) {
            ready.push(HOST_EVENTS);
        }
        Ok(())
    }

    /// Reads every frame queued on the backend of `slot` (epoll reports
    /// edges: what is left unread would not be reported again).
    fn read_frames(&mut self, slot: Slot) {
        let Some(i) = self.nets.iter().position(|n| n.slot == slot) else {
            return;
        };
        if self.buf.len() < ftvm_host::tap::MAX_FRAME {
            self.buf.resize(ftvm_host::tap::MAX_FRAME, 0);
        }
        loop {
            match self.nets[i].src.try_recv(&mut self.buf) {
                Ok(Some(n)) => self
                    .local
                    .push_back(HostEvent::Frame(slot, self.buf[..n].to_vec())),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!("network backend of slot {slot} stopped: {e}");
                    let net = self.nets.swap_remove(i);
                    let fd = net.src.raw_fd();
                    let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    return;
                }
            }
        }
    }

    /// Reads what stdin holds. The descriptor is left blocking (it is
    /// shared with the shell), so it is read only while poll(2) says that
    /// a read will not wait.
    fn read_stdin_now(&mut self) {
        let fd = libc::STDIN_FILENO;
        let mut buf = [0u8; STDIN_CHUNK];
        while self.stdin && readable_now(fd) {
            // SAFETY: reads at most `buf.len()` bytes into a valid, writable
            // buffer from the process's stdin.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast::<libc::c_void>(), buf.len()) };
            if n > 0 {
                self.local
                    .push_back(HostEvent::Console(buf[..n as usize].to_vec()));
                continue;
            }
            let e = io::Error::last_os_error();
            if n < 0 && e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            if n < 0 && e.kind() == io::ErrorKind::WouldBlock {
                return;
            }
            // The end of the input (or a broken one): the guest keeps
            // running, its console just gets no more bytes.
            self.stdin = false;
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
    }

    /// Answers every pending status request with the latest report. A line
    /// of JSON fits a fresh socket's send buffer, so the write never waits;
    /// a client that cannot take it gets nothing.
    fn answer_status(&mut self) {
        let Some(s) = self.status.as_mut() else {
            return;
        };
        loop {
            match s.listener.accept() {
                Ok((mut stream, _)) => {
                    let mut line = s.latest.lock().map(|l| l.clone()).unwrap_or_default();
                    line.push('\n');
                    match stream.write(line.as_bytes()) {
                        Ok(n) if n == line.len() => {}
                        Ok(n) => tracing::debug!("status client took {n} of {} bytes", line.len()),
                        Err(e) => tracing::debug!("status client: {e}"),
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the next edge retries.
                    tracing::warn!("status endpoint: accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// The next queued host event, if any: those the loop read itself
    /// first, then the host threads'.
    pub fn try_recv(&mut self) -> Option<HostEvent> {
        if let Some(ev) = self.local.pop_front() {
            return Some(ev);
        }
        match self.rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}

/// Whether a read of `fd` would return without waiting.
fn readable_now(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, zero timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}
