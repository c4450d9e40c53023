//! Server-side connection plumbing shared by the NBD and arbiter servers: a
//! buffered reader over a blocking `TcpStream` whose socket read timeout is a
//! short poll interval, so that a connection thread notices server shutdown,
//! tells a clean close at a frame boundary from a peer vanishing mid-frame,
//! and closes peers that stall inside a frame or idle too long. Waiting for
//! the first byte of a frame may take as long as the idle limit allows; once
//! a frame has started, every further byte must arrive within the stall
//! limit of the previous one. The stream may be plain TCP or TLS
//! ([`Transport`]); [`Conn::start_tls`] upgrades it in place, handing the
//! bytes already read ahead to the TLS session so none is lost.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ftvm_tls::{Identity, ServerStream, ServerTls, TlsError};

use crate::transport::Transport;
use crate::Shutdown;

/// How often a blocked read wakes up to look at the shutdown flag.
pub(crate) const POLL: Duration = Duration::from_millis(100);

const BUF_SIZE: usize = 64 * 1024;

/// Why a read did not deliver the bytes asked for.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The peer closed the connection cleanly between frames.
    Closed,
    /// The peer closed the connection inside a frame.
    Truncated { got: usize, want: usize },
    /// Nothing arrived within the idle limit while waiting for a frame.
    Idle(Duration),
    /// A frame started but the rest did not follow within the stall limit.
    Stalled { got: usize, want: usize },
    /// The server is shutting down.
    Shutdown,
    /// The peer sent TLS data that does not decrypt or breaks the protocol.
    Tls(String),
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ReadFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFail::Closed => write!(f, "peer closed the connection"),
            ReadFail::Truncated { got, want } => write!(
                f,
                "peer closed the connection in the middle of a frame ({got} of {want} bytes)"
            ),
            ReadFail::Idle(d) => write!(f, "nothing received for {:.1} s", d.as_secs_f64()),
            ReadFail::Stalled { got, want } => {
                write!(f, "truncated frame: stalled after {got} of {want} bytes")
            }
            ReadFail::Shutdown => write!(f, "server shutting down"),
            ReadFail::Tls(e) => write!(f, "bad TLS data: {e}"),
            ReadFail::Io(e) => write!(f, "socket error: {e}"),
        }
    }
}

/// A server-side connection: buffered frame reads, unbuffered writes.
pub(crate) struct Conn {
    stream: Transport,
    peer: SocketAddr,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    shutdown: Shutdown,
    stall: Duration,
}

impl Conn {
    /// Prepares an accepted stream: blocking, no Nagle, poll-length read
    /// timeout, `stall` as the write timeout and the in-frame stall limit.
    pub(crate) fn new(
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: Shutdown,
        stall: Duration,
    ) -> io::Result<Conn> {
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        // A peer whose host died without a FIN is dropped after about 25 s.
        crate::sys::set_keepalive(&stream, 10, 5, 3)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(stall.max(POLL)))?;
        Ok(Conn {
            stream: Transport::Plain(stream),
            peer,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            shutdown,
            stall: stall.max(POLL),
        })
    }

    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Upgrades the connection to TLS as its server: the bytes read ahead
    /// so far are the start of the client's handshake. The handshake must
    /// end within `limit`, and stops early for server shutdown. Returns the
    /// client's verified identity; on failure the connection is unusable.
    pub(crate) fn start_tls(
        &mut self,
        tls: &ServerTls,
        limit: Duration,
    ) -> Result<Identity, TlsError> {
        let Transport::Plain(sock) = std::mem::replace(&mut self.stream, Transport::Gone) else {
            return Err(TlsError::Config("TLS is already running".into()));
        };
        let prefix = self.buf[self.start..self.end].to_vec();
        self.start = 0;
        self.end = 0;
        let shutdown = self.shutdown.clone();
        let stop = move || shutdown.is_triggered();
        let (s, id) = ServerStream::accept(tls, sock, &prefix, Instant::now() + limit, &stop)?;
        self.stream = Transport::TlsServer(Box::new(s));
        Ok(id)
    }

    /// Waits (up to `idle`) until at least `n` bytes are buffered and
    /// returns them without consuming them (fewer if the peer closed).
    pub(crate) fn peek(&mut self, n: usize, idle: Duration) -> Result<&[u8], ReadFail> {
        let n = n.min(self.buf.len());
        if self.end - self.start < n && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let begun = Instant::now();
        while self.end - self.start < n {
            match self.stream.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(k) => self.end += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shutdown.is_triggered() {
                        return Err(ReadFail::Shutdown);
                    }
                    if begun.elapsed() >= idle {
                        return Err(ReadFail::Idle(idle));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
        Ok(&self.buf[self.start..self.end])
    }

    /// Reads and drops what the peer has sent, until a read times out or
    /// the peer closes (at most 64 KiB): closing a socket with unread data
    /// resets the connection, which can destroy a last answer in flight.
    pub(crate) fn drain(&mut self) {
        self.start = 0;
        self.end = 0;
        let mut total = 0;
        while total < BUF_SIZE {
            match self.stream.read(&mut self.buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }

    /// Whether the connection runs TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Bytes already received and not yet consumed.
    pub(crate) fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Reads the first `out.len()` bytes of a new frame, waiting up to `idle`
    /// (forever if `None`) for the first byte.
    pub(crate) fn read_frame_start(
        &mut self,
        out: &mut [u8],
        idle: Option<Duration>,
    ) -> Result<(), ReadFail> {
        self.read_inner(out, true, idle)
    }

    /// Reads the next `out.len()` bytes of a frame already started.
    pub(crate) fn read_frame_rest(&mut self, out: &mut [u8]) -> Result<(), ReadFail> {
        self.read_inner(out, false, None)
    }

    fn read_inner(
        &mut self,
        out: &mut [u8],
        frame_start: bool,
        idle: Option<Duration>,
    ) -> Result<(), ReadFail> {
        let want = out.len();
        let mut got = 0usize;
        let begun = Instant::now();
        let mut last_progress = begun;
        while got < want {
            if self.start < self.end {
                let n = (self.end - self.start).min(want - got);
                out[got..got + n].copy_from_slice(&self.buf[self.start..self.start + n]);
                self.start += n;
                got += n;
                last_progress = Instant::now();
                continue;
            }
            // Large remainders go straight into the caller's buffer.
            let direct = want - got >= self.buf.len();
            let result = if direct {
                self.stream.read(&mut out[got..])
            } else {
                self.start = 0;
                self.end = 0;
                self.stream.read(&mut self.buf)
            };
            let result = match result {
                // TLS reports a TCP close without close_notify this way;
                // for framing it is a close like any other.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            };
            match result {
                Ok(0) => {
                    return Err(if got == 0 && frame_start {
                        ReadFail::Closed
                    } else {
                        ReadFail::Truncated { got, want }
                    })
                }
                Ok(n) => {
                    if direct {
                        got += n;
                    } else {
                        self.end = n;
                    }
                    last_progress = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shutdown.is_triggered() {
                        return Err(ReadFail::Shutdown);
                    }
                    if got == 0 && frame_start {
                        if let Some(limit) = idle {
                            if begun.elapsed() >= limit {
                                return Err(ReadFail::Idle(limit));
                            }
                        }
                    } else if last_progress.elapsed() >= self.stall {
                        return Err(ReadFail::Stalled { got, want });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData && self.stream.is_tls() => {
                    return Err(ReadFail::Tls(e.to_string()))
                }
                Err(e) => return Err(ReadFail::Io(e)),
            }
        }
        Ok(())
    }

    /// Writes all of `bytes` (bounded by the write timeout).
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Closes both directions (after a TLS close_notify); errors are
    /// irrelevant at this point.
    pub(crate) fn close(&mut self) {
        self.stream.close();
    }
}
