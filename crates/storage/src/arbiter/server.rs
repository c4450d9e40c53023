//! The arbiter server side of one connection: read a frame, check it, apply
//! the request to the store under one lock (so test-and-set is atomic across
//! all connections), make any change durable, then answer. A frame with a
//! bad magic or CRC, or one cut short or stalled, closes the connection
//! without an answer; a wrong version, oversized or malformed frame gets an
//! error frame first; a request that is merely refused (an empty name, an
//! ADVANCE that does not advance) gets an error frame and the connection
//! stays open. With TLS configured the connection is TLS from its first
//! byte: a client without a valid certificate from the CA (or one that
//! replays another connection's handshake, or sends plain frames) fails
//! the handshake and is closed, and every request is checked against the
//! client's identity (`authz`) before it touches the store; a refusal is
//! one log line and an `E_DENIED` error frame, and nothing is written.
//! With metrics configured, each connection is counted open while it is
//! served, each refusal logged (a failed TLS handshake, a plain client of a
//! TLS arbiter, a request the identity may not make, a frame with a bad
//! magic) is counted, and each decoded request is counted by kind and by
//! what it was answered (won, lost, ok, or an error frame, denials
//! included).

use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ftvm_metrics::storage::{ArbiterRequest, ArbiterResult, Channel};
use ftvm_metrics::StorageMetrics;
use tracing::{debug, error, info, warn};

use super::store::Store;
use super::wire::*;
use crate::authz::{self, Peer};
use crate::conn::{Conn, ReadFail};
use crate::Shutdown;

pub(crate) struct ArbiterShared {
    pub store: Mutex<Store>,
    pub idle_timeout: Option<Duration>,
    pub stall_timeout: Duration,
    /// TLS for every connection, or `None` for plain TCP (`--insecure`).
    pub tls: Option<ftvm_tls::ServerTls>,
    /// Limit for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Where to count connections, refusals and requests.
    pub metrics: Option<StorageMetrics>,
}

impl ArbiterShared {
    fn refused(&self) {
        if let Some(m) = &self.metrics {
            m.refused(Channel::Arbiter);
        }
    }
}

/// The metrics' names for a request and its answer.
fn metric_labels(request: &Request, reply: &Reply) -> (ArbiterRequest, ArbiterResult) {
    let kind = match request {
        Request::TestAndSet { .. } => ArbiterRequest::TestAndSet,
        Request::Query { .. } => ArbiterRequest::Query,
        Request::History { .. } => ArbiterRequest::History,
        Request::Advance { .. } => ArbiterRequest::Advance,
    };
    let result = match reply {
        Reply::Won { .. } => ArbiterResult::Won,
        Reply::Lost { .. } => ArbiterResult::Lost,
        Reply::Error { .. } => ArbiterResult::Error,
        Reply::Status(_) | Reply::History(_) | Reply::Advanced { .. } => ArbiterResult::Ok,
    };
    (kind, result)
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Serves one accepted connection until it ends.
pub(crate) fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<ArbiterShared>,
    shutdown: Shutdown,
) {
    let _open = shared
        .metrics
        .as_ref()
        .map(|m| m.connection(Channel::Arbiter));
    let mut conn = match Conn::new(stream, peer, shutdown, shared.stall_timeout) {
        Ok(c) => c,
        Err(e) => {
            warn!(%peer, "arbiter: cannot set up connection: {e}");
            return;
        }
    };
    let who = match &shared.tls {
        None => Peer::Unauthenticated,
        Some(tls) => {
            if let Some(why) = plain_client(&mut conn, shared.handshake_timeout) {
                warn!(%peer, "arbiter: refused: {why}");
                shared.refused();
                conn.close();
                return;
            }
            match conn.start_tls(tls, shared.handshake_timeout) {
                Ok(id) => {
                    debug!(%peer, identity = %id, "arbiter: TLS client");
                    Peer::Verified(id)
                }
                Err(ftvm_tls::TlsError::Stopped) => {
                    conn.close();
                    return;
                }
                Err(e) => {
                    warn!(%peer, "arbiter: refused: TLS handshake failed: {e}");
                    shared.refused();
                    conn.close();
                    return;
                }
            }
        }
    };
    loop {
        match one_request(&mut conn, &shared, &who) {
            Ok(()) => {}
            Err(Some(why)) => {
                warn!(%peer, "arbiter: closing connection: {why}");
                break;
            }
            Err(None) => break,
        }
    }
    conn.close();
}

/// A client that sends a plain arbiter frame to a TLS arbiter gets one
/// plain error frame saying so — its client then stops at once instead of
/// retrying — and the connection is closed. Returns the log reason, or
/// `None` when the first bytes may be TLS (or nothing arrived).
fn plain_client(conn: &mut Conn, limit: Duration) -> Option<String> {
    let first = conn.peek(MAGIC.len(), limit).ok()?;
    if !first.starts_with(&MAGIC) {
        return None;
    }
    refuse(
        conn,
        E_DENIED,
        "this arbiter requires TLS: give the client --tls-cert, --tls-key and --tls-ca".into(),
    );
    conn.drain();
    Some("client sent a plain arbiter frame; this arbiter requires TLS".into())
}

fn refuse(conn: &mut Conn, code: u16, message: String) {
    let frame = Reply::Error { code, message }.encode();
    let _ = conn.write_all(&frame);
}

/// Handles one request. `Err(Some(reason))` closes the connection with a
/// warning, `Err(None)` closes it quietly.
fn one_request(conn: &mut Conn, shared: &ArbiterShared, who: &Peer) -> Result<(), Option<String>> {
    let peer = conn.peer();
    let mut header = [0u8; HEADER_LEN];
    match conn.read_frame_start(&mut header, shared.idle_timeout) {
        Ok(()) => {}
        Err(ReadFail::Closed) => return Err(None),
        Err(ReadFail::Shutdown) => return Err(None),
        Err(ReadFail::Idle(d)) => {
            debug!(%peer, "arbiter: closing idle connection after {:.0} s", d.as_secs_f64());
            return Err(None);
        }
        Err(other) => return Err(Some(other.to_string())),
    }
    let (kind, len) = match parse_header(&header, MAX_REQUEST_BODY) {
        Ok(v) => v,
        Err(e @ FrameError::BadMagic(_)) => {
            shared.refused();
            return Err(Some(format!("{e} (garbage?)")));
        }
        Err(e) => {
            let code = if matches!(e, FrameError::BadVersion(_)) {
                E_VERSION
            } else {
                E_MALFORMED
            };
            refuse(conn, code, e.to_string());
            return Err(Some(e.to_string()));
        }
    };
    let mut rest = vec![0u8; len as usize + CRC_LEN];
    conn.read_frame_rest(&mut rest).map_err(|f| match f {
        ReadFail::Shutdown => None,
        other => Some(other.to_string()),
    })?;
    let body = check_crc(&header, &rest).map_err(|e| Some(e.to_string()))?;
    let request = match Request::decode(kind, body) {
        Ok(r) => r,
        Err(e) => {
            let code = if matches!(e, FrameError::UnknownType(_)) {
                E_UNKNOWN_TYPE
            } else {
                E_MALFORMED
            };
            refuse(conn, code, e.to_string());
            return Err(Some(e.to_string()));
        }
    };
    let reply = match authz::may_request(who, &request) {
        Ok(()) => handle(&request, shared, peer),
        Err(why) => {
            warn!(%peer, "arbiter: refused: {why}");
            shared.refused();
            Reply::Error {
                code: E_DENIED,
                message: why,
            }
        }
    };
    if let Some(m) = &shared.metrics {
        let (kind, result) = metric_labels(&request, &reply);
        m.arbiter(kind, result);
    }
    conn.write_all(&reply.encode())
        .map_err(|e| Some(format!("cannot send reply: {e}")))
}

fn handle(request: &Request, shared: &ArbiterShared, peer: SocketAddr) -> Reply {
    let vm = match request {
        Request::TestAndSet { vm, .. }
        | Request::Query { vm }
        | Request::Advance { vm, .. }
        | Request::History { vm } => vm,
    };
    if let Err(m) = check_name("vm", vm) {
        return Reply::Error {
            code: E_INVALID,
            message: m,
        };
    }
    // A panic elsewhere while holding the lock cannot leave the store half
    // updated (changes are applied to a copy), so a poisoned lock is usable.
    let mut store = match shared.store.lock() {
        Ok(s) => s,
        Err(p) => p.into_inner(),
    };
    match request {
        Request::TestAndSet {
            vm,
            generation,
            claimant,
        } => {
            if let Err(m) = check_name("claimant", claimant) {
                return Reply::Error {
                    code: E_INVALID,
                    message: m,
                };
            }
            let now = now_unix_ms();
            match store.apply(|s| s.test_and_set(vm, *generation, claimant, now)) {
                Ok(Outcome::Won { generation }) => {
                    info!(%peer, vm = %vm, generation, claimant = %claimant, "arbiter: test-and-set WON");
                    Reply::Won { generation }
                }
                Ok(Outcome::Lost {
                    holder,
                    generation: current,
                }) => {
                    info!(
                        %peer, vm = %vm, claimed = generation, claimant = %claimant,
                        current, holder = %holder, "arbiter: test-and-set lost"
                    );
                    Reply::Lost {
                        generation: current,
                        holder,
                    }
                }
                Err(e) => {
                    error!(vm = %vm, "arbiter: cannot persist state, answering an error: {e}");
                    Reply::Error {
                        code: E_STORAGE,
                        message: format!("cannot make the arbiter state durable: {e}"),
                    }
                }
            }
        }
        Request::Query { vm } => Reply::Status(store.state().status(vm)),
        Request::History { vm } => Reply::History(store.state().history(vm)),
        Request::Advance { vm, generation } => {
            let mut refused = None;
            let r = store.apply(|s| match s.advance(vm, *generation) {
                Ok(changed) => ((), changed),
                Err(current) => {
                    refused = Some(current);
                    ((), false)
                }
            });
            match (r, refused) {
                (Ok(()), None) => {
                    info!(%peer, vm = %vm, generation, "arbiter: generation advanced");
                    Reply::Advanced {
                        generation: *generation,
                    }
                }
                (Ok(()), Some(current)) => Reply::Error {
                    code: E_STALE,
                    message: format!(
                        "cannot advance {vm:?} to generation {generation}: it is already at {current}"
                    ),
                },
                (Err(e), _) => {
                    error!(vm = %vm, "arbiter: cannot persist state, answering an error: {e}");
                    Reply::Error {
                        code: E_STORAGE,
                        message: format!("cannot make the arbiter state durable: {e}"),
                    }
                }
            }
        }
    }
}
