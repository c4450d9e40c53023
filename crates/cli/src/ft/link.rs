//! The logging connection of an FT pair, as the drivers see it: one TCP
//! stream at a time, numbered, with a reader thread that decodes frames
//! (`WireDecoder`) and a writer thread that sends what the core asked for,
//! so that a slow or frozen peer never blocks the machine loop. Both report
//! to the driver's event channel; events of a connection that has since
//! been replaced carry its old number and are ignored. The primary dials
//! (one attempt at a time, in a thread, with a short connect timeout); the
//! backup accepts on a listener thread. Nothing here interprets frames:
//! that is the protocol core's job.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use ftvm_ft::wire::WireDecoder;
use ftvm_ft::Frame;

use crate::events::{FtEvent, HostEvent};

/// Limit for one dial attempt.
const DIAL_TIMEOUT: Duration = Duration::from_millis(300);

struct Current {
    id: u64,
    stream: TcpStream,
    out: Sender<Vec<u8>>,
    writer: thread::JoinHandle<()>,
    /// Bytes handed to the writer thread and not yet written. While it is
    /// zero, `send` writes on the caller's thread without blocking (one
    /// thread hop less on every acknowledgement's round trip); otherwise
    /// it queues behind them, so the byte order is kept.
    queued: Arc<AtomicUsize>,
}

impl Current {
    /// Lets the writer send what is queued (at most `timeout`), then closes.
    fn finish(self, timeout: Duration) {
        drop(self.out);
        let deadline = std::time::Instant::now() + timeout;
        while !self.writer.is_finished() && std::time::Instant::now() < deadline {
            thread::sleep(Duration::from_millis(2));
        }
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The driver's handle on the logging connection.
pub struct Link {
    events: Sender<HostEvent>,
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
    /// Frames that could not be encoded (a bug, never expected).
    pub encode_errors: u64,
}

impl Link {
    pub fn new(events: Sender<HostEvent>, me: &'static str) -> Link {
        Link {
            events,
            current: None,
            next_id: 1,
            dialing: false,
            me,
            handshaken: false,
            last_drop: None,
            encode_errors: 0,
        }
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

    pub fn is_connected(&self) -> bool {
        self.current.is_some()
    }

    pub fn is_dialing(&self) -> bool {
        self.dialing
    }

    /// Starts one dial attempt to `addr`; the result comes back as
    /// `Connected` or `DialFailed`.
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
    /// previous one, and starts its reader and writer threads.
    pub fn attach(&mut self, conn: u64, stream: TcpStream) -> Result<()> {
        self.close();
        stream.set_nodelay(true).ok();
        let reader = stream
            .try_clone()
            .context("cannot clone the logging socket")?;
        let writer = stream
            .try_clone()
            .context("cannot clone the logging socket")?;
        let (out, rx) = mpsc::channel::<Vec<u8>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let left = queued.clone();
        let tx = self.events.clone();
        thread::Builder::new()
            .name(format!("ft-read-{conn}"))
            .spawn(move || read_loop(conn, reader, tx))
            .context("cannot start the logging reader thread")?;
        let tx = self.events.clone();
        let writer = thread::Builder::new()
            .name(format!("ft-write-{conn}"))
            .spawn(move || {
                let mut w = writer;
                for bytes in rx {
                    if let Err(e) = w.write_all(&bytes) {
                        let _ = w.shutdown(Shutdown::Both);
                        let _ = tx.send(HostEvent::Ft(FtEvent::Closed {
                            conn,
                            error: Some(format!("cannot send on the logging connection: {e}")),
                        }));
                        return;
                    }
                    left.fetch_sub(bytes.len(), Ordering::AcqRel);
                }
            })
            .context("cannot start the logging writer thread")?;
        self.current = Some(Current {
            id: conn,
            stream,
            out,
            writer,
            queued,
        });
        Ok(())
    }

    /// Sends `frame`: written at once if the socket takes it without
    /// blocking and nothing is queued, else (the rest) queued for the
    /// writer thread. Dropped if there is no connection (the core re-sends
    /// what was not acknowledged).
    pub fn send(&mut self, frame: &Frame) {
        let Some(c) = &self.current else { return };
        match frame.to_bytes() {
            Ok(bytes) => {
                let mut done = 0;
                if c.queued.load(Ordering::Acquire) == 0 {
                    done = send_nonblocking(&c.stream, &bytes);
                }
                if done < bytes.len() {
                    c.queued.fetch_add(bytes.len() - done, Ordering::AcqRel);
                    let _ = c.out.send(bytes[done..].to_vec());
                }
            }
            Err(e) => {
                self.encode_errors += 1;
                tracing::error!("cannot encode a logging frame: {e}");
            }
        }
    }

    /// Bytes waiting for the writer thread.
    pub fn queued_bytes(&self) -> usize {
        self.current
            .as_ref()
            .map_or(0, |c| c.queued.load(Ordering::Acquire))
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

    /// Closes the connection in use, if any; its threads end on their own.
    pub fn close(&mut self) {
        self.handshaken = false;
        if let Some(c) = self.current.take() {
            let _ = c.stream.shutdown(Shutdown::Both);
        }
    }

    /// Closes the connection after the writer has sent everything queued
    /// (a Goodbye), waiting at most `timeout`.
    pub fn finish(&mut self, timeout: Duration) {
        if let Some(c) = self.current.take() {
            c.finish(timeout);
        }
    }

    /// Like [`finish`](Self::finish), without making the caller wait: for a
    /// connection refused while the guest runs (a join turned down).
    pub fn finish_in_background(&mut self, timeout: Duration) {
        if let Some(c) = self.current.take() {
            let spawned = thread::Builder::new()
                .name("ft-goodbye".into())
                .spawn(move || c.finish(timeout));
            if let Err(e) = spawned {
                tracing::warn!("cannot close a refused connection in the background: {e}");
            }
        }
    }

    /// Address of the peer of the connection in use.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.current
            .as_ref()
            .and_then(|c| c.stream.peer_addr().ok())
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.close();
    }
}

/// Writes what the socket takes right now, without blocking (MSG_DONTWAIT
/// affects this call only; the reader thread shares the descriptor in
/// blocking mode). Returns how many bytes went out; errors are left for the
/// writer thread to meet and report.
fn send_nonblocking(stream: &TcpStream, bytes: &[u8]) -> usize {
    use std::os::fd::AsRawFd;
    let mut done = 0;
    while done < bytes.len() {
        let rest = &bytes[done..];
        // SAFETY: the descriptor is open for the lifetime of `stream`, and
        // the pointer and length describe the live slice `rest`.
        let n = unsafe {
            libc::send(
                stream.as_raw_fd(),
                rest.as_ptr().cast(),
                rest.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n <= 0 {
            break;
        }
        done += n as usize;
    }
    done
}

fn read_loop(conn: u64, mut stream: TcpStream, tx: Sender<HostEvent>) {
    let mut dec = WireDecoder::new();
    let mut buf = vec![0u8; 256 << 10];
    let closed = |error: Option<String>| HostEvent::Ft(FtEvent::Closed { conn, error });
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => {
                let error = dec
                    .finish()
                    .err()
                    .map(|e| format!("the peer closed the connection mid-frame: {e}"));
                let _ = tx.send(closed(error));
                return;
            }
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.send(closed(Some(format!("logging connection broken: {e}"))));
                return;
            }
        };
        dec.push(&buf[..n]);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if tx
                        .send(HostEvent::Ft(FtEvent::Frame { conn, frame }))
                        .is_err()
                    {
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = stream.shutdown(Shutdown::Both);
                    let _ = tx.send(closed(Some(format!(
                        "refused garbage on the logging connection: {e}"
                    ))));
                    return;
                }
            }
        }
    }
}

/// Accepts logging connections on `listener` and reports each as
/// `Connected` with a number from `ids` (the driver decides whether to use
/// it; a refused stream is simply dropped).
/// With `joins`, connections are reported as `Joiner` (new backups asking
/// to join) instead.
pub fn start_listener(
    listener: TcpListener,
    tx: Sender<HostEvent>,
    first_id: u64,
    joins: bool,
) -> Result<()> {
    thread::Builder::new()
        .name("ft-listen".into())
        .spawn(move || {
            let mut id = first_id;
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => {
                        id += 1;
                        let ev = if joins {
                            FtEvent::Joiner { conn: id, stream }
                        } else {
                            FtEvent::Connected { conn: id, stream }
                        };
                        if tx.send(HostEvent::Ft(ev)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        tracing::warn!("logging listener: accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
        .context("cannot start the logging listener thread")?;
    Ok(())
}
