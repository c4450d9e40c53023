//! The arbiter client used by the FT primary and backup. Each call has a
//! deadline; within it the client (re)connects and re-sends as often as it
//! needs to, which is safe because every request is idempotent: a repeated
//! test-and-set by the same claimant is answered `Won` again, never recorded
//! twice, and a repeated ADVANCE is accepted while nobody has claimed the new
//! generation. When the deadline passes the call fails — a timeout or an
//! unreachable arbiter is an error and never a win, so a caller that cannot
//! reach the arbiter does not go live.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::wire::*;
use crate::error::ArbiterError;

/// Default limit for [`ArbiterClient::connect`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the arbiter protocol; cheap to share between threads.
#[derive(Debug)]
pub struct ArbiterClient {
    addr: SocketAddr,
    conn: Mutex<Option<TcpStream>>,
}

enum Attempt {
    /// Could not connect.
    Connect(io::Error),
    /// Connected, but the exchange failed.
    Exchange(String),
}

impl ArbiterClient {
    /// Connects now (within 5 s); fails if the arbiter is unreachable.
    pub fn connect(addr: SocketAddr) -> Result<ArbiterClient, ArbiterError> {
        Self::connect_timeout(addr, DEFAULT_CONNECT_TIMEOUT)
    }

    /// Connects now within `timeout`.
    pub fn connect_timeout(
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<ArbiterClient, ArbiterError> {
        let stream = open(addr, timeout.max(Duration::from_millis(1)))
            .map_err(|source| ArbiterError::Unreachable { addr, source })?;
        Ok(ArbiterClient {
            addr,
            conn: Mutex::new(Some(stream)),
        })
    }

    /// A client that connects on first use.
    pub fn new(addr: SocketAddr) -> ArbiterClient {
        ArbiterClient {
            addr,
            conn: Mutex::new(None),
        }
    }

    /// The arbiter's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Claims `generation` of `vm` for `claimant`. Only `Ok(Outcome::Won)`
    /// allows the caller to act alone; an error means "do not go live".
    pub fn test_and_set(
        &self,
        vm: &str,
        generation: u64,
        claimant: &str,
        timeout: Duration,
    ) -> Result<Outcome, ArbiterError> {
        check_name("vm", vm).map_err(ArbiterError::Invalid)?;
        check_name("claimant", claimant).map_err(ArbiterError::Invalid)?;
        let req = Request::TestAndSet {
            vm: vm.to_string(),
            generation,
            claimant: claimant.to_string(),
        };
        match self.call(&req, timeout)? {
            Reply::Won { generation: g } if g == generation => Ok(Outcome::Won { generation }),
            Reply::Lost { generation, holder } => Ok(Outcome::Lost { holder, generation }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The arbiter's view of `vm`.
    pub fn query(&self, vm: &str, timeout: Duration) -> Result<VmStatus, ArbiterError> {
        check_name("vm", vm).map_err(ArbiterError::Invalid)?;
        match self.call(&Request::Query { vm: vm.to_string() }, timeout)? {
            Reply::Status(s) => Ok(s),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Every win recorded for `vm`, oldest first.
    pub fn history(&self, vm: &str, timeout: Duration) -> Result<Vec<Win>, ArbiterError> {
        check_name("vm", vm).map_err(ArbiterError::Invalid)?;
        match self.call(&Request::History { vm: vm.to_string() }, timeout)? {
            Reply::History(w) => Ok(w),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Starts generation `generation` of `vm` with no holder (a new pair is
    /// formed); every claim for an older generation loses from now on.
    pub fn advance(
        &self,
        vm: &str,
        generation: u64,
        timeout: Duration,
    ) -> Result<u64, ArbiterError> {
        check_name("vm", vm).map_err(ArbiterError::Invalid)?;
        let req = Request::Advance {
            vm: vm.to_string(),
            generation,
        };
        match self.call(&req, timeout)? {
            Reply::Advanced { generation: g } if g == generation => Ok(g),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, reply: &Reply) -> ArbiterError {
        ArbiterError::Protocol {
            addr: self.addr,
            detail: format!("reply does not answer the request: {reply:?}"),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<TcpStream>> {
        match self.conn.lock() {
            Ok(g) => g,
            Err(p) => {
                let mut g = p.into_inner();
                *g = None;
                g
            }
        }
    }

    /// One request/reply within `timeout`, reconnecting and retrying as needed.
    fn call(&self, req: &Request, timeout: Duration) -> Result<Reply, ArbiterError> {
        let frame = req.encode();
        let deadline = Instant::now() + timeout;
        let mut conn = self.lock();
        let mut pause = Duration::from_millis(20);
        let mut ever_connected = false;
        let mut last: Option<Attempt> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !remaining.is_zero() {
                match self.attempt(&mut conn, &frame, remaining) {
                    Ok(Reply::Error { code, message }) => {
                        return Err(ArbiterError::Refused {
                            addr: self.addr,
                            code,
                            message,
                        })
                    }
                    Ok(reply) => return Ok(reply),
                    Err(f) => {
                        if let Attempt::Exchange(_) = &f {
                            ever_connected = true;
                        }
                        last = Some(f);
                    }
                }
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let timeout_ms = timeout.as_millis();
                return Err(match last {
                    Some(Attempt::Connect(source)) if !ever_connected => {
                        ArbiterError::Unreachable {
                            addr: self.addr,
                            source,
                        }
                    }
                    Some(Attempt::Connect(e)) => ArbiterError::Timeout {
                        addr: self.addr,
                        ms: timeout_ms,
                        last: e.to_string(),
                    },
                    Some(Attempt::Exchange(e)) => ArbiterError::Timeout {
                        addr: self.addr,
                        ms: timeout_ms,
                        last: e,
                    },
                    None => ArbiterError::Timeout {
                        addr: self.addr,
                        ms: timeout_ms,
                        last: "no time to try".into(),
                    },
                });
            }
            std::thread::sleep(pause.min(remaining));
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    fn attempt(
        &self,
        conn: &mut Option<TcpStream>,
        frame: &[u8],
        remaining: Duration,
    ) -> Result<Reply, Attempt> {
        if conn.is_none() {
            *conn = Some(open(self.addr, remaining).map_err(Attempt::Connect)?);
        }
        let Some(stream) = conn.as_mut() else {
            return Err(Attempt::Exchange("no connection".into()));
        };
        let result = exchange(stream, frame, remaining);
        if result.is_err() {
            // The stream's position in the reply sequence is unknown now.
            *conn = None;
        }
        result.map_err(Attempt::Exchange)
    }
}

fn open(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nodelay(true)?;
    Ok(s)
}

fn exchange(stream: &mut TcpStream, frame: &[u8], remaining: Duration) -> Result<Reply, String> {
    let t = Some(remaining.max(Duration::from_millis(1)));
    stream
        .set_write_timeout(t)
        .and_then(|()| stream.set_read_timeout(t))
        .map_err(|e| format!("configuring socket: {e}"))?;
    stream
        .write_all(frame)
        .map_err(|e| format!("sending request: {e}"))?;
    let mut header = [0u8; HEADER_LEN];
    stream
        .read_exact(&mut header)
        .map_err(|e| format!("reading reply: {e}"))?;
    let (kind, len) = parse_header(&header, MAX_REPLY_BODY).map_err(|e| e.to_string())?;
    let mut rest = vec![0u8; len as usize + CRC_LEN];
    stream
        .read_exact(&mut rest)
        .map_err(|e| format!("reading reply: {e}"))?;
    let body = check_crc(&header, &rest).map_err(|e| e.to_string())?;
    Reply::decode(kind, body).map_err(|e| e.to_string())
}
