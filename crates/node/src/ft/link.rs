//! The logging connection of an FT pair, as the drivers see it: one TCP
//! stream at a time, numbered, non-blocking and registered with the
//! driver's readiness loop ([`crate::reactor`]) under its number. The
//! driver's own thread reads it (`WireDecoder`) as soon as the loop reports
//! it readable, and writes what the core asked for straight away; bytes the
//! socket does not take at once wait in an output buffer that the loop
//! flushes when the socket becomes writable, so a slow or frozen peer never
//! blocks the machine. What the connection produced (frames, its end) is
//! collected as [`FtEvent`]s for the driver, which ignores events of a
//! connection it has since replaced. The primary dials (one attempt at a
//! time, in a thread, with a short connect timeout: not on the hot path);
//! the backup accepts on a listener registered with the same loop. Nothing
//! here interprets frames: that is the protocol core's job.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use ftvm_ft::wire::WireDecoder;
use ftvm_ft::Frame;
use mio::{Interest, Registry, Token};

use crate::events::{EventSender, FtEvent, HostEvent};

/// Limit for one dial attempt.
const DIAL_TIMEOUT: Duration = Duration::from_millis(300);
/// Bytes read per `read` call.
const READ_CHUNK: usize = 256 << 10;

struct Current {
    id: u64,
    stream: mio::net::TcpStream,
    peer: Option<SocketAddr>,
    dec: WireDecoder,
    /// Bytes the socket has not taken yet, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// The connection failed (reported once as `Closed`); nothing more is
    /// read or written on it.
    broken: bool,
}

impl Current {
    fn queued(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Writes what the socket takes now; `Err` when the connection broke.
    fn flush(&mut self) -> std::io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > (1 << 20) && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }

    /// Reads everything available, decoding frames into `events`.
    fn read(&mut self, buf: &mut [u8], events: &mut Vec<FtEvent>) {
        let conn = self.id;
        loop {
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    let error = self
                        .dec
                        .finish()
                        .err()
                        .map(|e| format!("the peer closed the connection mid-frame: {e}"));
                    self.broken = true;
                    events.push(FtEvent::Closed { conn, error });
                    return;
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.broken = true;
                    events.push(FtEvent::Closed {
                        conn,
                        error: Some(format!("logging connection broken: {e}")),
                    });
                    return;
                }
            };
            self.dec.push(&buf[..n]);
            loop {
                match self.dec.next_frame() {
                    Ok(Some(frame)) => events.push(FtEvent::Frame { conn, frame }),
                    Ok(None) => break,
                    Err(e) => {
                        let _ = self.stream.shutdown(Shutdown::Both);
                        self.broken = true;
                        events.push(FtEvent::Closed {
                            conn,
                            error: Some(format!("refused garbage on the logging connection: {e}")),
                        });
                        return;
                    }
                }
            }
        }
    }
}

/// The driver's handle on the logging connection.
pub struct Link {
    events: EventSender,
    registry: Registry,
    current: Option<Current>,
    next_id: u64,
    dialing: bool,
    /// "primary" or "backup": who this side is, in log lines.
    me: &'static str,
    /// The handshake on the current connection completed.
    handshaken: bool,
    /// The last reason a connection was dropped (printed once, so a peer
    /// that keeps being refused does not flood the log).
    last_drop: Option<String>,
    /// What the connection produced and the driver has not collected.
    produced: Vec<FtEvent>,
    buf: Vec<u8>,
    /// Frames that could not be encoded (a bug, never expected).
    pub encode_errors: u64,
}

impl Link {
    pub fn new(events: EventSender, registry: &Registry, me: &'static str) -> Result<Link> {
        Ok(Link {
            events,
            registry: registry
                .try_clone()
                .context("cannot share the event loop with the logging link")?,
            current: None,
            next_id: 1,
            dialing: false,
            me,
            handshaken: false,
            last_drop: None,
            produced: Vec::new(),
            buf: Vec::new(),
            encode_errors: 0,
        })
    }

    /// A fresh connection number (for a stream the listener accepted).
    pub fn next_conn_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Whether `conn` is the connection in use.
    pub fn is_current(&self, conn: u64) -> bool {
        self.current.as_ref().is_some_and(|c| c.id == conn)
    }

    /// The loop token of the connection in use.
    pub fn token(&self) -> Option<Token> {
        self.current.as_ref().map(|c| Token(c.id as usize))
    }

    pub fn is_connected(&self) -> bool {
        self.current.is_some()
    }

    pub fn is_dialing(&self) -> bool {
        self.dialing
    }

    /// Starts one dial attempt to `addr`; the result comes back as
    /// `Connected` or `DialFailed` on the event channel.
    pub fn dial(&mut self, addr: SocketAddr) {
        if self.dialing {
            return;
        }
        self.dialing = true;
        let id = self.next_conn_id();
        let tx = self.events.clone();
        let spawned = thread::Builder::new()
            .name("ft-dial".into())
            .spawn(move || {
                let ev = match TcpStream::connect_timeout(&addr, DIAL_TIMEOUT) {
                    Ok(stream) => FtEvent::Connected { conn: id, stream },
                    Err(e) => FtEvent::DialFailed {
                        error: format!("cannot reach the backup at {addr}: {e}"),
                    },
                };
                let _ = tx.send(HostEvent::Ft(ev));
            });
        if spawned.is_err() {
            self.dialing = false;
        }
    }

    /// A dial attempt ended (with either result).
    pub fn dial_done(&mut self) {
        self.dialing = false;
    }

    /// Makes `stream` the connection in use, replacing (and closing) any
    /// previous one, and registers it with the loop. Whatever already
    /// arrived on it is read at once.
    pub fn attach(&mut self, conn: u64, stream: TcpStream) -> Result<()> {
        self.close();
        stream.set_nodelay(true).ok();
        stream
            .set_nonblocking(true)
            .context("cannot make the logging socket non-blocking")?;
        let peer = stream.peer_addr().ok();
        let mut stream = mio::net::TcpStream::from_std(stream);
        self.registry
            .register(
                &mut stream,
                Token(conn as usize),
                Interest::READABLE | Interest::WRITABLE,
            )
            .context("cannot add the logging socket to the event loop")?;
        self.current = Some(Current {
            id: conn,
            stream,
            peer,
            dec: WireDecoder::new(),
            out: Vec::new(),
            out_pos: 0,
            broken: false,
        });
        self.ready();
        Ok(())
    }

    /// The loop reported the connection ready: read what arrived, write
    /// what waits.
    pub fn ready(&mut self) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if c.broken {
            return;
        }
        if self.buf.len() < READ_CHUNK {
            self.buf.resize(READ_CHUNK, 0);
        }
        c.read(&mut self.buf, &mut self.produced);
        if !c.broken {
            if let Err(e) = c.flush() {
                c.broken = true;
                self.produced.push(FtEvent::Closed {
                    conn: c.id,
                    error: Some(format!("cannot send on the logging connection: {e}")),
                });
            }
        }
    }

    /// Moves what the connection produced into `out`.
    pub fn collect(&mut self, out: &mut Vec<FtEvent>) {
        out.append(&mut self.produced);
    }

    /// Sends `frame`: written at once as far as the socket takes it, the
    /// rest buffered for the loop to flush. Dropped if there is no
    /// connection (the core re-sends what was not acknowledged).
    pub fn send(&mut self, frame: &Frame) {
        self.send_with(frame, |_| {});
    }

    /// Like [`send`](Self::send), letting `damage` change the encoded frame
    /// before it goes out (`--test-fault STEP:corrupt`).
    pub fn send_with(&mut self, frame: &Frame, damage: impl FnOnce(&mut [u8])) {
        let Some(c) = self.current.as_mut() else {
            return;
        };
        if c.broken {
            return;
        }
        let was_empty = c.queued() == 0;
        let start = c.out.len();
        if let Err(e) = frame.encode(&mut c.out) {
            self.encode_errors += 1;
            tracing::error!("cannot encode a logging frame: {e}");
            return;
        }
        damage(&mut c.out[start..]);
        if !was_empty {
            // Behind bytes the socket did not take: the writable edge
            // flushes them in order.
            return;
        }
        if let Err(e) = c.flush() {
            c.broken = true;
            self.produced.push(FtEvent::Closed {
                conn: c.id,
                error: Some(format!("cannot send on the logging connection: {e}")),
            });
        }
    }

    /// Bytes waiting for the socket.
    pub fn queued_bytes(&self) -> usize {
        self.current.as_ref().map_or(0, Current::queued)
    }

    /// Whether the current connection completed its handshake.
    pub fn is_handshaken(&self) -> bool {
        self.handshaken
    }

    /// Notes that the core reports the connection handshaken (`connected`);
    /// says so once per connection.
    pub fn note_handshake(&mut self, connected: bool) {
        if connected && !self.handshaken {
            self.handshaken = true;
            self.last_drop = None;
            let peer = self.peer().map(|a| a.to_string()).unwrap_or_default();
            let other = if self.me == "primary" {
                "backup"
            } else {
                "primary"
            };
            eprintln!("ftvm: {}: paired with the {other} at {peer}", self.me);
        }
    }

    /// Closes the connection because of `why`, printed unless it is the
    /// same reason as last time.
    pub fn drop_with(&mut self, why: String) {
        if self.last_drop.as_deref() != Some(why.as_str()) {
            eprintln!("ftvm: {}: {why}", self.me);
        }
        self.last_drop = Some(why);
        self.close();
    }

    fn take(&mut self) -> Option<Current> {
        self.handshaken = false;
        let mut c = self.current.take()?;
        let _ = self.registry.deregister(&mut c.stream);
        Some(c)
    }

    /// Closes the connection in use, if any.
    pub fn close(&mut self) {
        if let Some(c) = self.take() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Closes the connection after what is buffered (a Goodbye) went out,
    /// waiting at most `timeout`.
    pub fn finish(&mut self, timeout: Duration) {
        if let Some(c) = self.take() {
            finish_blocking(c, timeout);
        }
    }

    /// Like [`finish`](Self::finish), without making the caller wait: for a
    /// connection refused while the guest runs (a join turned down).
    pub fn finish_in_background(&mut self, timeout: Duration) {
        if let Some(c) = self.take() {
            let spawned = thread::Builder::new()
                .name("ft-goodbye".into())
                .spawn(move || finish_blocking(c, timeout));
            if let Err(e) = spawned {
                tracing::warn!("cannot close a refused connection in the background: {e}");
            }
        }
    }

    /// Address of the peer of the connection in use.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.current.as_ref().and_then(|c| c.peer)
    }
}

/// Sends what is buffered (at most `timeout`), then closes.
fn finish_blocking(c: Current, timeout: Duration) {
    let stream: TcpStream = c.stream.into();
    if c.broken {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    }
    let mut w = &stream;
    let rest = &c.out[c.out_pos..];
    if !rest.is_empty()
        && stream.set_nonblocking(false).is_ok()
        && stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .is_ok()
    {
        let _ = w.write_all(rest);
    }
    let _ = stream.shutdown(Shutdown::Both);
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// A listener registered with the loop under `token`; [`accept`](Self::accept)
/// takes every pending connection when the loop reports it ready.
pub struct Listener {
    inner: mio::net::TcpListener,
    next_id: u64,
    joins: bool,
}

impl Listener {
    /// Connections are numbered from `first_id + 1` on; with `joins` they
    /// are reported as `Joiner` (new backups asking to join), else as
    /// `Connected`.
    pub fn new(
        listener: std::net::TcpListener,
        registry: &Registry,
        token: Token,
        first_id: u64,
        joins: bool,
    ) -> Result<Listener> {
        listener
            .set_nonblocking(true)
            .context("cannot make the listener non-blocking")?;
        let mut inner = mio::net::TcpListener::from_std(listener);
        registry
            .register(&mut inner, token, Interest::READABLE)
            .context("cannot add the listener to the event loop")?;
        Ok(Listener {
            inner,
            next_id: first_id,
            joins,
        })
    }

    /// Accepts what is pending, as events.
    pub fn accept(&mut self, out: &mut Vec<FtEvent>) {
        loop {
            match self.inner.accept() {
                Ok((stream, _)) => {
                    self.next_id += 1;
                    let conn = self.next_id;
                    let stream: TcpStream = stream.into();
                    // Accepted sockets of a non-blocking listener are
                    // non-blocking; `Link::attach` sets what it needs.
                    out.push(if self.joins {
                        FtEvent::Joiner { conn, stream }
                    } else {
                        FtEvent::Connected { conn, stream }
                    });
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors and the like: the next readiness
                    // edge tries again.
                    tracing::warn!("logging listener: accept failed: {e}");
                    return;
                }
            }
        }
    }
}
