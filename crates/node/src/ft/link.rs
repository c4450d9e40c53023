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
//!
//! With TLS the connection arrives handshaken and its peer checked
//! ([`super::secure`]: the dial thread, or a handshake thread per accepted
//! connection, does that before anything reaches the loop), and the link
//! drives the rustls connection on the same non-blocking socket: what the
//! socket delivers is fed to `read_tls`/`process_new_packets` and the
//! plaintext taken from `reader()`; what the core sends goes from the
//! output buffer into `writer()` (at most rustls's 64 KiB buffer at a time,
//! so the output buffer stays the one place bytes wait) and out with
//! `write_tls` at once, in the same call — an Ack is not held back. A
//! record that does not decrypt or a TLS alert ends the connection like
//! garbage in a frame does.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::thread;
use std::time::Duration;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use ftvm_ft::wire::WireDecoder;
use ftvm_ft::Frame;
use ftvm_tls::rustls;
use ftvm_tls::Identity;
use mio::{Interest, Registry, Token};

use super::secure::{FtTls, MAX_HANDSHAKES};
use crate::events::{EventSender, FtEvent, HostEvent, LinkStream};

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
    /// The TLS connection over `stream`, handshake done; `None` for plain
    /// TCP (`--insecure`).
    tls: Option<Box<rustls::Connection>>,
    /// The verified peer (TLS only).
    peer_id: Option<Identity>,
}

impl Current {
    /// Bytes not on the socket yet: the output buffer, plus one for TLS
    /// records rustls still holds (so that 0 means all went out).
    fn queued(&self) -> usize {
        let records = self.tls.as_ref().is_some_and(|t| t.wants_write());
        self.out.len() - self.out_pos + usize::from(records)
    }

    /// Writes what the socket takes now; `Err` when the connection broke.
    fn flush(&mut self) -> std::io::Result<()> {
        match self.tls.as_mut() {
            None => {
                while self.out_pos < self.out.len() {
                    match self.stream.write(&self.out[self.out_pos..]) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => self.out_pos += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => 'out: loop {
                // Records first, so that plaintext only enters rustls
                // when the socket took everything before it.
                while tls.wants_write() {
                    match tls.write_tls(&mut self.stream) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break 'out,
                        Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                if self.out_pos == self.out.len() {
                    break;
                }
                let n = tls.writer().write(&self.out[self.out_pos..])?;
                if n == 0 {
                    break;
                }
                self.out_pos += n;
            },
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
    fn read(&mut self, buf: &mut [u8], plain: &mut Vec<u8>, events: &mut Vec<FtEvent>) {
        let conn = self.id;
        if self.tls.is_some() {
            // What rustls received with the handshake (or before a
            // buffer limit) is decrypted before the socket is read.
            if let Err(e) = self.decrypt(&[], plain) {
                self.fail(e, events);
                return;
            }
            if !self.decode(events) {
                return;
            }
        }
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
                    self.fail(format!("logging connection broken: {e}"), events);
                    return;
                }
            };
            if self.tls.is_some() {
                if let Err(e) = self.decrypt(&buf[..n], plain) {
                    self.fail(e, events);
                    return;
                }
            } else {
                self.dec.push(&buf[..n]);
            }
            if !self.decode(events) {
                return;
            }
        }
    }

    /// Feeds `data` (ciphertext from the socket) to rustls and the
    /// plaintext it yields to the decoder. `Err` is a TLS failure.
    fn decrypt(&mut self, data: &[u8], plain: &mut Vec<u8>) -> std::result::Result<(), String> {
        let Some(tls) = self.tls.as_mut() else {
            return Ok(());
        };
        if plain.len() < READ_CHUNK {
            plain.resize(READ_CHUNK, 0);
        }
        let mut rest = data;
        loop {
            if !rest.is_empty() {
                tls.read_tls(&mut rest)
                    .map_err(|e| format!("TLS: cannot take the received records: {e}"))?;
            }
            if let Err(e) = tls.process_new_packets() {
                // Tell the peer (best effort) before the connection ends.
                let _ = tls.write_tls(&mut self.stream);
                return Err(format!(
                    "refused what arrived on the logging connection: TLS: {}",
                    ftvm_tls::describe(&e)
                ));
            }
            loop {
                match tls.reader().read(plain) {
                    Ok(0) => {
                        // close_notify: the socket's end follows.
                        break;
                    }
                    Ok(k) => self.dec.push(&plain[..k]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) => return Err(format!("TLS: {e}")),
                }
            }
            if rest.is_empty() {
                return Ok(());
            }
        }
    }

    /// Decodes the frames the decoder holds; false when the connection was
    /// refused for garbage.
    fn decode(&mut self, events: &mut Vec<FtEvent>) -> bool {
        let conn = self.id;
        loop {
            match self.dec.next_frame() {
                Ok(Some(frame)) => events.push(FtEvent::Frame { conn, frame }),
                Ok(None) => return true,
                Err(e) => {
                    let _ = self.stream.shutdown(Shutdown::Both);
                    self.broken = true;
                    events.push(FtEvent::Closed {
                        conn,
                        error: Some(format!("refused garbage on the logging connection: {e}")),
                    });
                    return false;
                }
            }
        }
    }

    fn fail(&mut self, error: String, events: &mut Vec<FtEvent>) {
        self.broken = true;
        events.push(FtEvent::Closed {
            conn: self.id,
            error: Some(error),
        });
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
    /// Decrypted bytes on their way to the decoder (TLS only).
    plain: Vec<u8>,
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
            plain: Vec::new(),
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
    /// `Connected` or `DialFailed` on the event channel. With `tls` the
    /// dial thread also runs the handshake and checks the backup's
    /// certificate, so only a checked connection comes back.
    pub fn dial(&mut self, addr: SocketAddr, tls: Option<&FtTls>) {
        if self.dialing {
            return;
        }
        self.dialing = true;
        let id = self.next_conn_id();
        let tx = self.events.clone();
        let tls = tls.cloned();
        let spawned = thread::Builder::new()
            .name("ft-dial".into())
            .spawn(move || {
                let ev = match TcpStream::connect_timeout(&addr, DIAL_TIMEOUT) {
                    Ok(stream) => match &tls {
                        None => FtEvent::Connected {
                            conn: id,
                            stream: LinkStream::Plain(stream),
                        },
                        Some(tls) => match tls.connect(stream) {
                            Ok(stream) => FtEvent::Connected { conn: id, stream },
                            Err(why) => FtEvent::DialFailed {
                                error: format!("refused the backup at {addr}: {why}"),
                            },
                        },
                    },
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
    pub fn attach(&mut self, conn: u64, stream: LinkStream) -> Result<()> {
        self.close();
        let (stream, tls, peer_id) = match stream {
            LinkStream::Plain(s) => (s, None, None),
            LinkStream::Tls { sock, conn, peer } => (sock, Some(conn), Some(peer)),
        };
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
            tls,
            peer_id,
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
        c.read(&mut self.buf, &mut self.plain, &mut self.produced);
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
            let peer = self.peer_name();
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

    /// The peer's address and, with TLS, its verified identity (log lines).
    pub fn peer_name(&self) -> String {
        let Some(c) = self.current.as_ref() else {
            return String::new();
        };
        let addr = c.peer.map(|a| a.to_string()).unwrap_or_default();
        match &c.peer_id {
            Some(id) => format!("{addr} ({id}, TLS)"),
            None => addr,
        }
    }
}

/// Sends what is buffered (at most `timeout`), then closes (with TLS,
/// after a close_notify).
fn finish_blocking(mut c: Current, timeout: Duration) {
    if !c.broken {
        let deadline = std::time::Instant::now() + timeout.max(Duration::from_millis(1));
        let mut closing = false;
        loop {
            if c.flush().is_err() {
                break;
            }
            if c.queued() == 0 {
                match c.tls.as_mut() {
                    Some(tls) if !closing => {
                        tls.send_close_notify();
                        closing = true;
                        continue;
                    }
                    _ => break,
                }
            }
            if std::time::Instant::now() >= deadline {
                break;
            }
            // The socket is non-blocking: wait for it to drain a little.
            thread::sleep(Duration::from_millis(1));
        }
    }
    let _ = c.stream.shutdown(Shutdown::Both);
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// A listener registered with the loop under `token`; [`accept`](Self::accept)
/// takes every pending connection when the loop reports it ready. Without
/// TLS an accepted connection is an event at once; with TLS it goes to a
/// handshake thread, which sends the event only once the peer passed the
/// handshake and the rule ([`super::secure`]) and otherwise logs one line.
pub struct Listener {
    inner: mio::net::TcpListener,
    next_id: u64,
    joins: bool,
    tls: Option<FtTls>,
    events: EventSender,
    me: &'static str,
    /// Handshakes running now.
    busy: Arc<AtomicUsize>,
}

impl Listener {
    /// Connections are numbered from `first_id + 1` on; with `joins` they
    /// are reported as `Joiner` (new backups asking to join), else as
    /// `Connected`. `me` names this side in log lines.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        listener: std::net::TcpListener,
        registry: &Registry,
        token: Token,
        first_id: u64,
        joins: bool,
        tls: Option<FtTls>,
        events: EventSender,
        me: &'static str,
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
            tls,
            events,
            me,
            busy: Arc::new(AtomicUsize::new(0)),
        })
    }

    fn event(joins: bool, conn: u64, stream: LinkStream) -> FtEvent {
        if joins {
            FtEvent::Joiner { conn, stream }
        } else {
            FtEvent::Connected { conn, stream }
        }
    }

    /// Accepts what is pending, as events (without TLS) or handshakes.
    pub fn accept(&mut self, out: &mut Vec<FtEvent>) {
        loop {
            match self.inner.accept() {
                Ok((stream, addr)) => {
                    self.next_id += 1;
                    let conn = self.next_id;
                    let stream: TcpStream = stream.into();
                    // Accepted sockets of a non-blocking listener are
                    // non-blocking; `Link::attach` sets what it needs.
                    match &self.tls {
                        None => out.push(Self::event(self.joins, conn, LinkStream::Plain(stream))),
                        Some(tls) => self.handshake(tls.clone(), conn, stream, addr),
                    }
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

    /// Runs the handshake of an accepted connection on a thread of its own.
    fn handshake(&self, tls: FtTls, conn: u64, stream: TcpStream, addr: SocketAddr) {
        let port = if self.joins { "join" } else { "logging" };
        let me = self.me;
        if self.busy.load(Ordering::Relaxed) >= MAX_HANDSHAKES {
            eprintln!(
                "ftvm: {me}: refused a connection from {addr} on the {port} port: {MAX_HANDSHAKES} TLS handshakes already running"
            );
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        let busy = self.busy.clone();
        let tx = self.events.clone();
        let joins = self.joins;
        let spawned = thread::Builder::new()
            .name("ft-handshake".into())
            .spawn(move || {
                match tls.accept(stream) {
                    Ok(s) => {
                        let _ = tx.send(HostEvent::Ft(Self::event(joins, conn, s)));
                    }
                    Err(why) => {
                        eprintln!("ftvm: {me}: refused a connection from {addr} on the {port} port: {why}")
                    }
                }
                busy.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            self.busy.fetch_sub(1, Ordering::Relaxed);
            eprintln!("ftvm: {me}: refused a connection from {addr} on the {port} port: cannot start a handshake thread: {e}");
        }
    }
}
