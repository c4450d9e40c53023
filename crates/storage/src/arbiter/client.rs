//! The arbiter client used by the FT primary and backup. Each call has a
//! deadline; within it the client (re)connects and re-sends as often as it
//! needs to, which is safe because every request is idempotent: a repeated
//! test-and-set by the same claimant is answered `Won` again, never recorded
//! twice, and a repeated ADVANCE is accepted while nobody has claimed the new
//! generation. When the deadline passes the call fails — a timeout or an
//! unreachable arbiter is an error and never a win, so a caller that cannot
//! reach the arbiter does not go live. With TLS ([`ArbiterClient::with_tls`])
//! each connection is TLS from its first byte; a certificate refused by
//! either side ends the call at once with [`ArbiterError::Tls`] (retrying
//! cannot fix it), while a handshake cut short counts as a lost connection.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ftvm_tls::{ClientStream, ClientTls, TlsError};

use super::wire::*;
use crate::error::ArbiterError;
use crate::transport::Transport;

/// Default limit for [`ArbiterClient::connect`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client for the arbiter protocol; cheap to share between threads.
#[derive(Debug)]
pub struct ArbiterClient {
    addr: SocketAddr,
    tls: Option<ClientTls>,
    conn: Mutex<Option<Transport>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_tls() {
            "Transport(TLS)"
        } else {
            "Transport(plain)"
        })
    }
}

enum Attempt {
    /// Could not connect.
    Connect(io::Error),
    /// Connected, but the exchange failed.
    Exchange(String),
    /// The TLS handshake was refused: retrying will not help.
    Tls(TlsError),
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
        Self::connect_with(addr, timeout, None)
    }

    /// Connects now within `timeout`, over TLS if `tls` is given.
    pub fn connect_with(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<ClientTls>,
    ) -> Result<ArbiterClient, ArbiterError> {
        let stream = match open(addr, timeout.max(Duration::from_millis(1)), tls.as_ref()) {
            Ok(s) => s,
            Err(Attempt::Tls(source)) => return Err(ArbiterError::Tls { addr, source }),
            Err(Attempt::Connect(source)) => {
                return Err(ArbiterError::Unreachable { addr, source })
            }
            Err(Attempt::Exchange(e)) => {
                return Err(ArbiterError::Unreachable {
                    addr,
                    source: io::Error::other(e),
                })
            }
        };
        Ok(ArbiterClient {
            addr,
            tls,
            conn: Mutex::new(Some(stream)),
        })
    }

    /// A client that connects on first use.
    pub fn new(addr: SocketAddr) -> ArbiterClient {
        ArbiterClient {
            addr,
            tls: None,
            conn: Mutex::new(None),
        }
    }

    /// The same client speaking TLS with `tls` (for clients made with
    /// [`new`](Self::new), before their first call).
    pub fn with_tls(mut self, tls: ClientTls) -> ArbiterClient {
        self.tls = Some(tls);
        self
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

    fn lock(&self) -> MutexGuard<'_, Option<Transport>> {
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
                    Err(Attempt::Tls(source)) => {
                        return Err(ArbiterError::Tls {
                            addr: self.addr,
                            source,
                        })
                    }
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
                    Some(Attempt::Tls(source)) => ArbiterError::Tls {
                        addr: self.addr,
                        source,
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
        conn: &mut Option<Transport>,
        frame: &[u8],
        remaining: Duration,
    ) -> Result<Reply, Attempt> {
        if conn.is_none() {
            *conn = Some(open(self.addr, remaining, self.tls.as_ref())?);
        }
        let Some(stream) = conn.as_mut() else {
            return Err(Attempt::Exchange("no connection".into()));
        };
        let result = exchange(stream, frame, remaining);
        if result.is_err() {
            // The stream's position in the reply sequence is unknown now.
            *conn = None;
        }
        result
    }
}

/// Connects, and with `tls` runs the handshake, within `timeout`.
fn open(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> Result<Transport, Attempt> {
    let started = std::time::Instant::now();
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(Attempt::Connect)?;
    s.set_nodelay(true).map_err(Attempt::Connect)?;
    let Some(tls) = tls else {
        return Ok(Transport::Plain(s));
    };
    let t = Some(timeout.max(Duration::from_millis(1)));
    s.set_read_timeout(t)
        .and_then(|()| s.set_write_timeout(t))
        .map_err(Attempt::Connect)?;
    match ClientStream::connect(tls, s, started + timeout) {
        Ok((s, _server)) => Ok(Transport::TlsClient(Box::new(s))),
        Err(e @ (TlsError::Tls(_) | TlsError::PeerIdentity(_))) => Err(Attempt::Tls(e)),
        Err(e) => Err(Attempt::Exchange(e.to_string())),
    }
}

/// A failed read: a TLS alert from the server (it refused our
/// certificate, which TLS 1.3 reports only after the client's side of the
/// handshake is done) is final; anything else is a lost connection.
fn read_failed(e: io::Error) -> Attempt {
    let tls = e.kind() == io::ErrorKind::InvalidData
        && e.get_ref().is_some_and(|inner| inner.is::<TlsError>());
    if tls {
        if let Some(Ok(t)) = e.into_inner().map(|b| b.downcast::<TlsError>()) {
            return Attempt::Tls(*t);
        }
        return Attempt::Exchange("reading reply: TLS failure".into());
    }
    Attempt::Exchange(format!("reading reply: {e}"))
}

fn exchange(stream: &mut Transport, frame: &[u8], remaining: Duration) -> Result<Reply, Attempt> {
    let t = Some(remaining.max(Duration::from_millis(1)));
    stream
        .set_timeouts(t)
        .map_err(|e| Attempt::Exchange(format!("configuring socket: {e}")))?;
    stream
        .write_all(frame)
        .and_then(|()| stream.flush())
        .map_err(|e| Attempt::Exchange(format!("sending request: {e}")))?;
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(read_failed)?;
    let (kind, len) =
        parse_header(&header, MAX_REPLY_BODY).map_err(|e| Attempt::Exchange(e.to_string()))?;
    let mut rest = vec![0u8; len as usize + CRC_LEN];
    stream.read_exact(&mut rest).map_err(read_failed)?;
    let body = check_crc(&header, &rest).map_err(|e| Attempt::Exchange(e.to_string()))?;
    Reply::decode(kind, body).map_err(|e| Attempt::Exchange(e.to_string()))
}
