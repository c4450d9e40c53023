//! One blocking TCP connection to redis with a reply buffer. Reads use a short
//! socket timeout ([`POLL`]) so the caller's loop wakes up regularly — to
//! flush the acked-key file, print progress, notice a signal or a stop file,
//! and enforce its own per-reply deadline — without threads or an async
//! runtime. [`Conn::poll_reply`] returns a decoded reply, `None` when nothing
//! complete arrived within one poll, or a [`ConnError`] that ends the
//! connection's useful life: the peer closed it, the socket failed, or the
//! bytes stopped being RESP (after which replies cannot be matched to
//! requests any more). The connection is never re-established.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::resp::{self, Reply, RespError};

/// How long one read waits before giving control back to the caller.
pub const POLL: Duration = Duration::from_millis(50);

/// Why the connection is no longer usable.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("connection closed by the server")]
    Closed,
    #[error("connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(#[from] RespError),
}

/// Failure to open a connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {addr}: {cause}")]
    Resolve { addr: String, cause: io::Error },
    #[error("{addr} resolves to no address")]
    NoAddress { addr: String },
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: io::Error },
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Start of the unparsed bytes in `buf`.
    start: usize,
    /// What one read lands in before it is appended to `buf`.
    scratch: Box<[u8]>,
}

impl Conn {
    /// Connects to `addr` (host:port), giving up after `timeout`.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Conn, ConnectError> {
        let resolved: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|cause| ConnectError::Resolve {
                addr: addr.to_string(),
                cause,
            })?
            .collect();
        let mut last = None;
        for candidate in &resolved {
            match TcpStream::connect_timeout(candidate, timeout) {
                Ok(stream) => return Conn::from_stream(stream, timeout),
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(cause) => Err(ConnectError::Connect {
                addr: addr.to_string(),
                cause,
            }),
            None => Err(ConnectError::NoAddress {
                addr: addr.to_string(),
            }),
        }
    }

    fn from_stream(stream: TcpStream, write_timeout: Duration) -> Result<Conn, ConnectError> {
        let setup = |s: &TcpStream| -> io::Result<()> {
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(POLL))?;
            s.set_write_timeout(Some(write_timeout))
        };
        let addr = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        setup(&stream).map_err(|cause| ConnectError::Connect { addr, cause })?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            scratch: vec![0; 64 * 1024].into_boxed_slice(),
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.stream.local_addr().ok()
    }

    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.stream.peer_addr().ok()
    }

    /// Bounds how long a blocked write may take before it fails.
    pub fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_write_timeout(Some(timeout))
    }

    /// Sends `bytes` in full.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ConnError> {
        self.stream.write_all(bytes).map_err(ConnError::Io)
    }

    /// The next reply if one is complete, waiting at most one [`POLL`] for
    /// more bytes.
    pub fn poll_reply(&mut self) -> Result<Option<Reply>, ConnError> {
        if let Some(reply) = self.take_buffered()? {
            return Ok(Some(reply));
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let got = match self.stream.read(&mut self.scratch) {
            Ok(n) => n,
            Err(e) => {
                return match e.kind() {
                    io::ErrorKind::WouldBlock
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(ConnError::Io(e)),
                };
            }
        };
        if got == 0 {
            return Err(ConnError::Closed);
        }
        self.buf.extend_from_slice(&self.scratch[..got]);
        self.take_buffered()
    }

    /// Waits for the next reply until `deadline`; `Ok(None)` on timeout.
    pub fn reply_before(&mut self, deadline: Instant) -> Result<Option<Reply>, ConnError> {
        loop {
            if let Some(reply) = self.poll_reply()? {
                return Ok(Some(reply));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn take_buffered(&mut self) -> Result<Option<Reply>, ConnError> {
        match resp::parse(&self.buf[self.start..])? {
            Some((reply, used)) => {
                self.start += used;
                Ok(Some(reply))
            }
            None => Ok(None),
        }
    }
}
