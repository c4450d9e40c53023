//! The NBD server side of one connection: the fixed-newstyle handshake
//! (EXPORT_NAME, INFO, GO, LIST, ABORT, STARTTLS; STRUCTURED_REPLY and every
//! other option answered NBD_REP_ERR_UNSUP) and the transmission phase with
//! simple replies (READ, WRITE, FLUSH, TRIM, WRITE_ZEROES, DISC). The FT
//! rule is that a write is acknowledged only once it is durable: every WRITE
//! and WRITE_ZEROES is followed by fdatasync before its reply leaves, FUA or
//! not. Requests a client pipelines are handled in order and their replies
//! sent together after one fdatasync (group commit), so the sync costs once
//! per burst rather than once per request. Anything that breaks the protocol
//! (bad magic, unknown client flags, absurd lengths, a frame cut short or
//! stalled) closes this connection with a log line naming the peer and the
//! reason; the rest of the server carries on. With TLS configured the
//! server is in the protocol's FORCEDTLS mode: before NBD_OPT_STARTTLS
//! every option but STARTTLS and ABORT is answered NBD_REP_ERR_TLS_REQD
//! and EXPORT_NAME closes the connection; after it, haggling continues
//! inside TLS and each export is opened (or listed) only for an identity
//! that `authz` allows. A client refused before TLS gets one log line when
//! it leaves, naming what it tried. With metrics configured, each connection
//! is counted open while it is served, each refusal logged (TLS, identity,
//! a client that does not speak NBD) is counted, and each transmission
//! request is counted by export and command when its reply is settled
//! (after the group commit's fdatasync, so a sync failure counts as the
//! error the client sees), with its payload bytes when it succeeded;
//! NBD_CMD_DISC counts as `other`, an oversized READ/WRITE as an error.

use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use ftvm_metrics::storage::{Channel, NbdCommand};
use ftvm_metrics::StorageMetrics;
use tracing::{debug, info, warn};

use super::export::{Catalog, Export};
use super::proto::*;
use crate::authz::{self, Peer};
use crate::conn::{Conn, ReadFail};
use crate::Shutdown;

/// At most this many options in one handshake.
const MAX_OPTIONS: usize = 1024;
/// Replies held back for one group commit, at most.
const MAX_BATCH: usize = 64;
/// Reply bytes held back for one group commit, at most.
const MAX_BATCH_BYTES: usize = 32 * 1024 * 1024;

/// What every NBD connection thread needs to know.
#[derive(Debug)]
pub(crate) struct NbdSettings {
    pub catalog: Catalog,
    pub handshake_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub stall_timeout: Duration,
    /// TLS (FORCEDTLS mode), or `None` for plain NBD (`--insecure`).
    pub tls: Option<ftvm_tls::ServerTls>,
    /// Where to count connections, refusals and requests.
    pub metrics: Option<StorageMetrics>,
}

/// How a connection ended.
enum End {
    /// The client ended it the way the protocol allows.
    Clean(String),
    /// The client broke the protocol or vanished; logged as a warning.
    Bad(String),
    /// The client was refused (no TLS, a failed TLS handshake, an identity
    /// not allowed, not an NBD client); logged as a warning and counted.
    Refused(String),
    /// The server is shutting down.
    Shutdown,
}

impl From<ReadFail> for End {
    fn from(f: ReadFail) -> End {
        match f {
            ReadFail::Closed => End::Clean("client closed the connection".into()),
            ReadFail::Shutdown => End::Shutdown,
            other => End::Bad(other.to_string()),
        }
    }
}

/// Serves one accepted connection until it ends; never panics on input.
pub(crate) fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    settings: Arc<NbdSettings>,
    shutdown: Shutdown,
) {
    let _open = settings
        .metrics
        .as_ref()
        .map(|m| m.connection(Channel::Nbd));
    let mut conn = match Conn::new(stream, peer, shutdown, settings.stall_timeout) {
        Ok(c) => c,
        Err(e) => {
            warn!(%peer, "nbd: cannot set up connection: {e}");
            return;
        }
    };
    let end = match handshake(&mut conn, &settings) {
        Ok(Some(export)) => {
            info!(
                %peer,
                export = %export.name,
                size = export.size,
                read_only = export.read_only,
                "nbd: client entered transmission"
            );
            transmission(&mut conn, &export, &settings)
        }
        Ok(None) => End::Clean("client ended the handshake (NBD_OPT_ABORT)".into()),
        Err(end) => end,
    };
    match end {
        End::Clean(why) => debug!(%peer, "nbd: connection closed: {why}"),
        End::Bad(why) => warn!(%peer, "nbd: closing connection: {why}"),
        End::Refused(why) => {
            warn!(%peer, "nbd: closing connection: {why}");
            if let Some(m) = &settings.metrics {
                m.refused(Channel::Nbd);
            }
        }
        End::Shutdown => debug!(%peer, "nbd: connection closed for server shutdown"),
    }
    conn.close();
}

fn send(conn: &mut Conn, bytes: &[u8]) -> Result<(), End> {
    conn.write_all(bytes)
        .map_err(|e| End::Bad(format!("cannot send to client: {e}")))
}

fn transmission_flags(export: &Export) -> u16 {
    let mut f = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_CAN_MULTI_CONN;
    if export.read_only {
        f |= FLAG_READ_ONLY;
    } else {
        f |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES;
    }
    f
}

/// Runs option haggling. `Ok(Some)` enters transmission with that export,
/// `Ok(None)` is a soft disconnect (NBD_OPT_ABORT). A client that was
/// refused for want of TLS and then leaves ends as `End::Refused`, so its
/// refusal is logged (and counted) once, with what it asked for.
fn handshake(conn: &mut Conn, s: &NbdSettings) -> Result<Option<Export>, End> {
    let mut refused = None;
    let result = haggle(conn, s, &mut refused);
    match (refused, result) {
        (Some(first), Ok(None)) => Err(End::Refused(format!(
            "refused: client did not start TLS ({first} needs NBD_OPT_STARTTLS first), then ended the handshake"
        ))),
        (Some(first), Err(End::Clean(why))) => Err(End::Refused(format!(
            "refused: client did not start TLS ({first} needs NBD_OPT_STARTTLS first); {why}"
        ))),
        (_, other) => other,
    }
}

/// What happened to an option received before TLS started.
enum BeforeTls {
    /// Answered (refused); haggling continues.
    Answered,
    /// NBD_OPT_ABORT.
    Abort,
    /// TLS runs now, with this client.
    Started(ftvm_tls::Identity),
}

/// FORCEDTLS before the upgrade: STARTTLS upgrades, ABORT ends,
/// EXPORT_NAME (which cannot be refused) closes, everything else is
/// NBD_REP_ERR_TLS_REQD. `refused` keeps the first option refused so.
fn before_tls(
    conn: &mut Conn,
    tls: &ftvm_tls::ServerTls,
    s: &NbdSettings,
    option: u32,
    data: &[u8],
    refused: &mut Option<String>,
) -> Result<BeforeTls, End> {
    let mut out = Vec::new();
    match option {
        OPT_STARTTLS if !data.is_empty() => {
            option_reply(
                &mut out,
                option,
                REP_ERR_INVALID,
                b"NBD_OPT_STARTTLS takes no data",
            );
        }
        OPT_STARTTLS => {
            option_reply(&mut out, option, REP_ACK, &[]);
            send(conn, &out)?;
            return match conn.start_tls(tls, s.handshake_timeout) {
                Ok(id) => {
                    debug!(peer = %conn.peer(), identity = %id, "nbd: TLS started");
                    Ok(BeforeTls::Started(id))
                }
                Err(ftvm_tls::TlsError::Stopped) => Err(End::Shutdown),
                Err(e) => Err(End::Refused(format!("refused: TLS handshake failed: {e}"))),
            };
        }
        OPT_ABORT => {
            option_reply(&mut out, option, REP_ACK, &[]);
            let _ = conn.write_all(&out);
            return Ok(BeforeTls::Abort);
        }
        OPT_EXPORT_NAME => {
            return Err(End::Refused(
                "refused: NBD_OPT_EXPORT_NAME without TLS (this server requires NBD_OPT_STARTTLS first)"
                    .into(),
            ));
        }
        _ => {
            refused.get_or_insert_with(|| format!("NBD_OPT_{}", option_name(option)));
            option_reply(
                &mut out,
                option,
                REP_ERR_TLS_REQD,
                b"this server requires TLS: send NBD_OPT_STARTTLS first",
            );
        }
    }
    send(conn, &out)?;
    Ok(BeforeTls::Answered)
}

fn haggle(
    conn: &mut Conn,
    s: &NbdSettings,
    refused: &mut Option<String>,
) -> Result<Option<Export>, End> {
    let mut who = Peer::Unauthenticated;
    let mut hello = Vec::with_capacity(18);
    hello.extend_from_slice(&NBDMAGIC.to_be_bytes());
    hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
    hello.extend_from_slice(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes());
    send(conn, &hello)?;

    let timeout = Some(s.handshake_timeout);
    let in_handshake = |f: ReadFail| match f {
        ReadFail::Idle(_) => End::Bad(format!("handshake timed out: {f}")),
        other => End::from(other),
    };
    let mut cflags = [0u8; 4];
    conn.read_frame_start(&mut cflags, timeout)
        .map_err(in_handshake)?;
    let cflags = u32::from_be_bytes(cflags);
    if cflags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
        return Err(End::Refused(format!(
            "unknown client flags 0x{cflags:08x} (not an NBD client?)"
        )));
    }
    let no_zeroes = cflags & FLAG_C_NO_ZEROES != 0;

    for _ in 0..MAX_OPTIONS {
        let mut head = [0u8; 16];
        conn.read_frame_start(&mut head, timeout)
            .map_err(in_handshake)?;
        let magic = be64(&head[0..8]);
        if magic != IHAVEOPT {
            return Err(End::Refused(format!(
                "bad option magic 0x{magic:016x}, expected IHAVEOPT"
            )));
        }
        let option = be32(&head[8..12]);
        let len = be32(&head[12..16]);
        if len > MAX_OPTION_DATA {
            return Err(End::Bad(format!(
                "option {} ({option}) carries {len} bytes, more than the {MAX_OPTION_DATA}-byte limit",
                option_name(option)
            )));
        }
        let mut data = vec![0u8; len as usize];
        conn.read_frame_rest(&mut data)?;
        debug!(peer = %conn.peer(), "nbd: option {} ({option}), {len} bytes", option_name(option));
        if let Some(tls) = s.tls.as_ref().filter(|_| !conn.is_tls()) {
            match before_tls(conn, tls, s, option, &data, refused)? {
                BeforeTls::Answered => continue,
                BeforeTls::Abort => return Ok(None),
                BeforeTls::Started(id) => {
                    *refused = None;
                    who = Peer::Verified(id);
                    continue;
                }
            }
        }

        let mut out = Vec::new();
        match option {
            OPT_EXPORT_NAME => {
                let requested = String::from_utf8(data)
                    .map_err(|_| End::Bad("NBD_OPT_EXPORT_NAME name is not UTF-8".into()))?;
                let Some((name, path)) = s.catalog.resolve(&requested) else {
                    // The protocol leaves no way to refuse but to hang up.
                    return Err(End::Bad(format!(
                        "NBD_OPT_EXPORT_NAME for unknown export {requested:?}"
                    )));
                };
                authz::may_open_export(&who, &name)
                    .map_err(|why| End::Refused(format!("refused: {why}")))?;
                let export = s.catalog.open(&name, &path).map_err(|e| {
                    End::Bad(format!(
                        "cannot open export {name:?} ({}): {e}",
                        path.display()
                    ))
                })?;
                out.extend_from_slice(&export.size.to_be_bytes());
                out.extend_from_slice(&transmission_flags(&export).to_be_bytes());
                if !no_zeroes {
                    out.extend_from_slice(&[0u8; 124]);
                }
                send(conn, &out)?;
                return Ok(Some(export));
            }
            OPT_ABORT => {
                option_reply(&mut out, option, REP_ACK, &[]);
                // The client may already be gone; that is fine.
                let _ = conn.write_all(&out);
                return Ok(None);
            }
            OPT_LIST => {
                if !data.is_empty() {
                    option_reply(
                        &mut out,
                        option,
                        REP_ERR_INVALID,
                        b"NBD_OPT_LIST takes no data",
                    );
                } else {
                    match s.catalog.list() {
                        Ok(names) => {
                            let visible = names
                                .into_iter()
                                .filter(|n| authz::may_open_export(&who, n).is_ok());
                            for name in visible {
                                let mut d = Vec::with_capacity(4 + name.len());
                                d.extend_from_slice(&(name.len() as u32).to_be_bytes());
                                d.extend_from_slice(name.as_bytes());
                                option_reply(&mut out, option, REP_SERVER, &d);
                            }
                            option_reply(&mut out, option, REP_ACK, &[]);
                        }
                        Err(e) => {
                            warn!("nbd: cannot list {}: {e}", s.catalog.dir.display());
                            let msg = format!("cannot list exports: {e}");
                            option_reply(&mut out, option, REP_ERR_POLICY, msg.as_bytes());
                        }
                    }
                }
            }
            OPT_INFO | OPT_GO => {
                let export = info_or_go(&mut out, option, &data, s, &who, conn.peer());
                send(conn, &out)?;
                if option == OPT_GO {
                    if let Some(export) = export {
                        return Ok(Some(export));
                    }
                }
                continue;
            }
            OPT_STRUCTURED_REPLY => {
                if data.is_empty() {
                    option_reply(
                        &mut out,
                        option,
                        REP_ERR_UNSUP,
                        b"structured replies are not supported; this server sends simple replies",
                    );
                } else {
                    option_reply(
                        &mut out,
                        option,
                        REP_ERR_INVALID,
                        b"NBD_OPT_STRUCTURED_REPLY takes no data",
                    );
                }
            }
            OPT_STARTTLS if conn.is_tls() => {
                option_reply(
                    &mut out,
                    option,
                    REP_ERR_INVALID,
                    b"TLS is already negotiated",
                );
            }
            OPT_STARTTLS => {
                option_reply(
                    &mut out,
                    option,
                    REP_ERR_UNSUP,
                    b"TLS is not configured on this server",
                );
            }
            _ => {
                let msg = format!("option {option} is not supported");
                option_reply(&mut out, option, REP_ERR_UNSUP, msg.as_bytes());
            }
        }
        send(conn, &out)?;
    }
    Err(End::Bad(format!(
        "more than {MAX_OPTIONS} options without entering transmission"
    )))
}

/// Answers NBD_OPT_INFO / NBD_OPT_GO into `out`; returns the opened export on success.
fn info_or_go(
    out: &mut Vec<u8>,
    option: u32,
    data: &[u8],
    s: &NbdSettings,
    who: &Peer,
    peer: SocketAddr,
) -> Option<Export> {
    let invalid = |out: &mut Vec<u8>, msg: &str| {
        option_reply(out, option, REP_ERR_INVALID, msg.as_bytes());
        None
    };
    if data.len() < 6 {
        return invalid(out, "option data shorter than 6 bytes");
    }
    let name_len = be32(&data[0..4]) as usize;
    if name_len > data.len() - 6 {
        return invalid(out, "export name length runs past the option data");
    }
    let name_bytes = &data[4..4 + name_len];
    let nreq = be16(&data[4 + name_len..6 + name_len]) as usize;
    if data.len() != 6 + name_len + 2 * nreq {
        return invalid(
            out,
            "information request count does not match the option length",
        );
    }
    let requests: Vec<u16> = (0..nreq)
        .map(|i| be16(&data[6 + name_len + 2 * i..]))
        .collect();
    let Ok(requested) = std::str::from_utf8(name_bytes) else {
        return invalid(out, "export name is not UTF-8");
    };
    let Some((name, path)) = s.catalog.resolve(requested) else {
        let msg = if requested.is_empty() {
            "no default export is configured".to_string()
        } else {
            format!("no export named {requested:?}")
        };
        option_reply(out, option, REP_ERR_UNKNOWN, msg.as_bytes());
        return None;
    };
    if let Err(why) = authz::may_open_export(who, &name) {
        warn!(%peer, "nbd: refused: {why}");
        if let Some(m) = &s.metrics {
            m.refused(Channel::Nbd);
        }
        option_reply(out, option, REP_ERR_POLICY, why.as_bytes());
        return None;
    }
    let export = match s.catalog.open(&name, &path) {
        Ok(e) => e,
        Err(e) => {
            warn!("nbd: cannot open export {name:?} ({}): {e}", path.display());
            let msg = format!("cannot open export {name:?}: {e}");
            option_reply(out, option, REP_ERR_POLICY, msg.as_bytes());
            return None;
        }
    };
    let mut info = Vec::with_capacity(12);
    info.extend_from_slice(&INFO_EXPORT.to_be_bytes());
    info.extend_from_slice(&export.size.to_be_bytes());
    info.extend_from_slice(&transmission_flags(&export).to_be_bytes());
    option_reply(out, option, REP_INFO, &info);
    if requests.contains(&INFO_NAME) {
        let mut info = Vec::with_capacity(2 + name.len());
        info.extend_from_slice(&INFO_NAME.to_be_bytes());
        info.extend_from_slice(name.as_bytes());
        option_reply(out, option, REP_INFO, &info);
    }
    // Block size constraints are sent whether asked for or not (allowed);
    // they are the protocol's defaults made explicit.
    let mut info = Vec::with_capacity(14);
    info.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    info.extend_from_slice(&1u32.to_be_bytes());
    info.extend_from_slice(&PREFERRED_BLOCK.to_be_bytes());
    info.extend_from_slice(&MAX_PAYLOAD.to_be_bytes());
    option_reply(out, option, REP_INFO, &info);
    option_reply(out, option, REP_ACK, &[]);
    Some(export)
}

/// A held reply as the metrics see it.
struct Tally {
    command: NbdCommand,
    /// Payload bytes moved if it succeeds.
    bytes: u64,
    errno: u32,
    /// Whether it claims durability (EIO if the fdatasync fails).
    durable: bool,
}

/// Replies waiting for the next group commit.
#[derive(Default)]
struct Batch<'m> {
    out: Vec<u8>,
    /// Offsets in `out` of replies that claim durability: turned into EIO if
    /// the fdatasync before sending fails.
    durable: Vec<usize>,
    needs_sync: bool,
    count: usize,
    /// Where the held replies are counted at commit; `None`: not counted,
    /// and `tally` stays empty.
    metrics: Option<&'m StorageMetrics>,
    tally: Vec<Tally>,
}

/// The metrics' name for an NBD command.
fn metric_command(command: u16) -> NbdCommand {
    match command {
        CMD_READ => NbdCommand::Read,
        CMD_WRITE => NbdCommand::Write,
        CMD_FLUSH => NbdCommand::Flush,
        CMD_TRIM => NbdCommand::Trim,
        CMD_WRITE_ZEROES => NbdCommand::WriteZeroes,
        _ => NbdCommand::Other,
    }
}

impl Batch<'_> {
    /// Notes a held reply to `command` for the metrics.
    fn note(&mut self, command: u16, bytes: u64, errno: u32, durable: bool) {
        if self.metrics.is_some() {
            self.tally.push(Tally {
                command: metric_command(command),
                bytes,
                errno,
                durable,
            });
        }
    }

    fn reply(&mut self, command: u16, errno: u32, handle: u64) {
        self.note(command, 0, errno, false);
        self.out.extend_from_slice(&simple_reply(errno, handle));
        self.count += 1;
    }

    /// A successful READ reply whose payload (`bytes`) is already in `out`.
    fn read_reply(&mut self, bytes: u64) {
        self.note(CMD_READ, bytes, 0, false);
        self.count += 1;
    }

    /// A successful reply that claims durability; `bytes` of payload written.
    fn durable_reply(&mut self, command: u16, bytes: u64, handle: u64) {
        self.note(command, bytes, 0, true);
        self.durable.push(self.out.len());
        self.needs_sync = true;
        self.out.extend_from_slice(&simple_reply(0, handle));
        self.count += 1;
    }

    /// Counts a request that gets no reply (DISC, or one that ends the
    /// connection).
    fn unanswered(&self, export: &Export, command: u16, ok: bool) {
        if let Some(m) = self.metrics {
            m.nbd(&export.name, metric_command(command), 0, ok);
        }
    }

    fn commit(&mut self, conn: &mut Conn, export: &Export) -> Result<(), End> {
        let mut synced = true;
        if self.needs_sync {
            if let Err(e) = export.sync() {
                synced = false;
                warn!(
                    peer = %conn.peer(),
                    export = %export.name,
                    "nbd: fdatasync failed, {} acknowledgements become EIO: {e}",
                    self.durable.len()
                );
                for &at in &self.durable {
                    self.out[at + 4..at + 8].copy_from_slice(&EIO.to_be_bytes());
                }
            }
        }
        if let Some(m) = self.metrics {
            for t in self.tally.drain(..) {
                let ok = t.errno == 0 && (synced || !t.durable);
                m.nbd(&export.name, t.command, if ok { t.bytes } else { 0 }, ok);
            }
        }
        let result = if self.out.is_empty() {
            Ok(())
        } else {
            send(conn, &self.out)
        };
        self.out.clear();
        self.durable.clear();
        self.needs_sync = false;
        self.count = 0;
        result
    }
}

fn io_errno(e: &std::io::Error) -> u32 {
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ENOSPC,
        Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::EROFS) => EPERM,
        _ => EIO,
    }
}

fn in_range(export: &Export, offset: u64, len: u64) -> bool {
    offset
        .checked_add(len)
        .is_some_and(|end| end <= export.size)
}

fn transmission(conn: &mut Conn, export: &Export, s: &NbdSettings) -> End {
    let mut batch = Batch {
        metrics: s.metrics.as_ref(),
        ..Batch::default()
    };
    let end = transmission_loop(conn, export, s, &mut batch);
    // Whatever was processed gets its answer, even when the peer misbehaved next.
    if batch.count > 0 {
        let _ = batch.commit(conn, export);
    }
    end
}

fn transmission_loop(conn: &mut Conn, export: &Export, s: &NbdSettings, batch: &mut Batch) -> End {
    let peer = conn.peer();
    loop {
        // Send held replies unless another full request is already waiting.
        if batch.count > 0 && conn.buffered() < REQUEST_LEN {
            if let Err(end) = batch.commit(conn, export) {
                return end;
            }
        }
        let mut head = [0u8; REQUEST_LEN];
        if let Err(f) = conn.read_frame_start(&mut head, s.idle_timeout) {
            return match f {
                ReadFail::Closed => {
                    End::Clean("client closed the connection without NBD_CMD_DISC".into())
                }
                other => other.into(),
            };
        }
        let req = match Request::decode(&head) {
            Ok(r) => r,
            Err(magic) => {
                return End::Bad(format!(
                    "bad request magic 0x{magic:08x}, expected 0x{REQUEST_MAGIC:08x}"
                ))
            }
        };
        let len = u64::from(req.length);
        let name = command_name(req.command);
        match req.command {
            CMD_READ | CMD_WRITE if req.length > MAX_PAYLOAD => {
                batch.unanswered(export, req.command, false);
                return End::Bad(format!(
                    "{name} of {} bytes exceeds the {MAX_PAYLOAD}-byte limit",
                    req.length
                ));
            }
            CMD_READ => {
                // Unknown flags and reads past the end are both EINVAL.
                let errno = if req.flags & !CMD_FLAG_FUA != 0 || !in_range(export, req.offset, len)
                {
                    EINVAL
                } else {
                    0
                };
                if errno != 0 {
                    debug!(%peer, "nbd: READ off={} len={len} flags={:#x}: {}", req.offset, req.flags, errno_name(errno));
                    batch.reply(CMD_READ, errno, req.handle);
                } else {
                    let start = batch.out.len();
                    batch.out.extend_from_slice(&simple_reply(0, req.handle));
                    batch
                        .out
                        .resize(start + SIMPLE_REPLY_LEN + req.length as usize, 0);
                    match export.read_at(&mut batch.out[start + SIMPLE_REPLY_LEN..], req.offset) {
                        Ok(()) => batch.read_reply(len),
                        Err(e) => {
                            warn!(%peer, export = %export.name, "nbd: READ off={} len={len}: {e}", req.offset);
                            batch.out.truncate(start);
                            batch.reply(CMD_READ, EIO, req.handle);
                        }
                    }
                }
            }
            CMD_WRITE => {
                let mut data = vec![0u8; req.length as usize];
                if let Err(f) = conn.read_frame_rest(&mut data) {
                    return match f {
                        ReadFail::Shutdown => End::Shutdown,
                        other => End::Bad(format!("WRITE payload: {other}")),
                    };
                }
                let errno = if req.flags & !CMD_FLAG_FUA != 0 {
                    EINVAL
                } else if export.read_only {
                    EPERM
                } else if !in_range(export, req.offset, len) {
                    ENOSPC
                } else {
                    match export.write_at(&data, req.offset) {
                        Ok(()) => 0,
                        Err(e) => {
                            warn!(%peer, export = %export.name, "nbd: WRITE off={} len={len}: {e}", req.offset);
                            io_errno(&e)
                        }
                    }
                };
                if errno == 0 {
                    batch.durable_reply(CMD_WRITE, len, req.handle);
                } else {
                    debug!(%peer, "nbd: WRITE off={} len={len}: {}", req.offset, errno_name(errno));
                    batch.reply(CMD_WRITE, errno, req.handle);
                }
            }
            CMD_DISC => {
                batch.unanswered(export, CMD_DISC, true);
                return End::Clean("client disconnected (NBD_CMD_DISC)".into());
            }
            CMD_FLUSH => {
                if req.flags & !CMD_FLAG_FUA != 0 || req.offset != 0 || req.length != 0 {
                    batch.reply(CMD_FLUSH, EINVAL, req.handle);
                } else {
                    batch.durable_reply(CMD_FLUSH, 0, req.handle);
                }
            }
            CMD_TRIM | CMD_WRITE_ZEROES => {
                let allowed = if req.command == CMD_TRIM {
                    CMD_FLAG_FUA
                } else {
                    CMD_FLAG_FUA | CMD_FLAG_NO_HOLE
                };
                let errno = if req.flags & !allowed != 0 {
                    EINVAL
                } else if export.read_only {
                    EPERM
                } else if !in_range(export, req.offset, len) {
                    if req.command == CMD_TRIM {
                        EINVAL
                    } else {
                        ENOSPC
                    }
                } else if len == 0 {
                    0
                } else {
                    let r = if req.command == CMD_TRIM {
                        export.trim(req.offset, len)
                    } else {
                        export.write_zeroes(req.offset, len, req.flags & CMD_FLAG_NO_HOLE == 0)
                    };
                    match r {
                        Ok(()) => 0,
                        Err(e) => {
                            warn!(%peer, export = %export.name, "nbd: {name} off={} len={len}: {e}", req.offset);
                            io_errno(&e)
                        }
                    }
                };
                // WRITE_ZEROES writes data, so it is durable before its reply
                // like WRITE; TRIM only when the client asks with FUA.
                let durable = req.command == CMD_WRITE_ZEROES || req.flags & CMD_FLAG_FUA != 0;
                if errno == 0 && durable {
                    batch.durable_reply(req.command, 0, req.handle);
                } else {
                    batch.reply(req.command, errno, req.handle);
                }
            }
            other => {
                debug!(%peer, "nbd: unsupported command {other} ({})", command_name(other));
                batch.reply(other, EINVAL, req.handle);
            }
        }
        if batch.count >= MAX_BATCH || batch.out.len() >= MAX_BATCH_BYTES {
            if let Err(end) = batch.commit(conn, export) {
                return end;
            }
        }
    }
}
