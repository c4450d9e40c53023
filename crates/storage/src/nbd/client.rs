//! A blocking NBD client for ftvm's own disk I/O against `ftvm storage` (or
//! any fixed-newstyle NBD server such as `qemu-nbd`). It negotiates with
//! NBD_OPT_GO (falling back to NBD_OPT_EXPORT_NAME), uses simple replies and
//! keeps one request in flight at a time behind a mutex, so one client can be
//! shared between threads. Its point is fault tolerance: when the connection
//! drops or stalls it reconnects with exponential backoff and re-sends the
//! request that had no reply. Re-sending is safe because READ, WRITE, TRIM
//! and FLUSH are idempotent at the block level, and a request only returns
//! success once the server has acknowledged it, which `ftvm storage` does
//! only after the data is durable. A storage server that goes away therefore
//! makes I/O wait and resume; nothing acknowledged is lost. With
//! [`NbdClientOptions::tls`] every connection upgrades with NBD_OPT_STARTTLS
//! as its first option and runs the rest of the handshake and all I/O inside
//! TLS; a server that does not agree, or whose certificate is not a storage
//! identity from our CA, is not used.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ftvm_tls::{ClientStream, ClientTls};
use tracing::{info, warn};

use super::proto::*;
use crate::error::NbdError;
use crate::transport::Transport;

/// Connection and retry policy of an [`NbdClient`].
#[derive(Debug, Clone)]
pub struct NbdClientOptions {
    /// Limit for one TCP connection attempt.
    pub connect_timeout: Duration,
    /// A reply (or handshake step) that takes longer than this counts as a
    /// lost connection: the client reconnects and re-sends.
    pub io_timeout: Duration,
    /// First pause between reconnection attempts; doubles up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest pause between reconnection attempts.
    pub backoff_max: Duration,
    /// Give up on a request after retrying this long; `None` retries for as
    /// long as it takes (I/O waits for the storage server to come back).
    pub retry_for: Option<Duration>,
    /// Upgrade every connection with NBD_OPT_STARTTLS, authenticating with
    /// this certificate and requiring a storage identity of the server;
    /// `None` speaks plain NBD.
    pub tls: Option<ClientTls>,
}

impl Default for NbdClientOptions {
    fn default() -> Self {
        NbdClientOptions {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            retry_for: None,
            tls: None,
        }
    }
}

/// What the handshake told us about the export.
#[derive(Debug, Clone, Copy)]
struct ExportInfo {
    size: u64,
    flags: u16,
    max_payload: u32,
}

struct Session {
    stream: Transport,
    info: ExportInfo,
}

struct Inner {
    session: Option<Session>,
    next_handle: u64,
    reconnects: u64,
}

/// A connection to one NBD export that survives server restarts.
pub struct NbdClient {
    addr: SocketAddr,
    export: String,
    opts: NbdClientOptions,
    info: ExportInfo,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for NbdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NbdClient")
            .field("addr", &self.addr)
            .field("export", &self.export)
            .field("size", &self.info.size)
            .field("flags", &self.info.flags)
            .finish()
    }
}

impl NbdClient {
    /// Connects to `export` on `addr` with the default options. The first
    /// connection is tried once: an unreachable server or unknown export is
    /// an error here, and only later failures are retried.
    pub fn connect(addr: SocketAddr, export: &str) -> Result<NbdClient, NbdError> {
        Self::connect_with(addr, export, NbdClientOptions::default())
    }

    /// Like [`connect`](Self::connect) with explicit options.
    pub fn connect_with(
        addr: SocketAddr,
        export: &str,
        opts: NbdClientOptions,
    ) -> Result<NbdClient, NbdError> {
        let session = open_session(addr, export, &opts)?;
        Ok(NbdClient {
            addr,
            export: export.to_string(),
            info: session.info,
            opts,
            inner: Mutex::new(Inner {
                session: Some(session),
                next_handle: 1,
                reconnects: 0,
            }),
        })
    }

    /// Size of the export in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// Whether the server exports it read-only.
    pub fn is_read_only(&self) -> bool {
        self.info.flags & FLAG_READ_ONLY != 0
    }

    /// The transmission flags the server sent.
    pub fn transmission_flags(&self) -> u16 {
        self.info.flags
    }

    /// How many times the client has re-established its connection.
    pub fn reconnects(&self) -> u64 {
        self.lock().reconnects
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.check_range("READ", offset, buf.len() as u64)?;
        let chunk = self.info.max_payload as usize;
        let mut done = 0usize;
        while done < buf.len() {
            let n = (buf.len() - done).min(chunk);
            let off = offset + done as u64;
            self.transact(
                CMD_READ,
                0,
                off,
                n as u32,
                None,
                Some(&mut buf[done..done + n]),
            )?;
            done += n;
        }
        Ok(())
    }

    /// Writes `data` at `offset`; returns once the server acknowledged it
    /// (for `ftvm storage`: once it is durable). `fua` asks for durability
    /// explicitly, which matters for servers that cache writes.
    pub fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), NbdError> {
        self.check_writable("WRITE")?;
        self.check_range("WRITE", offset, data.len() as u64)?;
        let native_fua = self.info.flags & FLAG_SEND_FUA != 0;
        let flags = if fua && native_fua { CMD_FLAG_FUA } else { 0 };
        let chunk = self.info.max_payload as usize;
        let mut done = 0usize;
        while done < data.len() {
            let n = (data.len() - done).min(chunk);
            let off = offset + done as u64;
            self.transact(
                CMD_WRITE,
                flags,
                off,
                n as u32,
                Some(&data[done..done + n]),
                None,
            )?;
            done += n;
        }
        if fua && !native_fua {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every acknowledged write durable (NBD_CMD_FLUSH). A server that
    /// does not advertise flush writes through, so there is nothing to do.
    pub fn flush(&self) -> Result<(), NbdError> {
        if self.info.flags & FLAG_SEND_FLUSH == 0 {
            return Ok(());
        }
        self.transact(CMD_FLUSH, 0, 0, 0, None, None)
    }

    /// Tells the server `len` bytes at `offset` are no longer needed
    /// (NBD_CMD_TRIM). Advisory: a no-op if the server does not support it.
    pub fn trim(&self, offset: u64, len: u64) -> Result<(), NbdError> {
        self.check_writable("TRIM")?;
        self.check_range("TRIM", offset, len)?;
        if self.info.flags & FLAG_SEND_TRIM == 0 {
            return Ok(());
        }
        const CHUNK: u64 = 1 << 30;
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(CHUNK);
            self.transact(CMD_TRIM, 0, offset + done, n as u32, None, None)?;
            done += n;
        }
        Ok(())
    }

    /// Ends the session politely (NBD_CMD_DISC).
    pub fn disconnect(self) {
        // Drop does the work.
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the session
        // half-written in a way we rely on: a broken session is replaced.
        match self.inner.lock() {
            Ok(g) => g,
            Err(poisoned) => {
                let mut g = poisoned.into_inner();
                g.session = None;
                g
            }
        }
    }

    fn check_range(&self, command: &'static str, offset: u64, len: u64) -> Result<(), NbdError> {
        if offset
            .checked_add(len)
            .is_some_and(|end| end <= self.info.size)
        {
            Ok(())
        } else {
            Err(NbdError::Invalid {
                command,
                detail: format!(
                    "offset {offset} length {len} is outside the {}-byte export",
                    self.info.size
                ),
            })
        }
    }

    fn check_writable(&self, command: &'static str) -> Result<(), NbdError> {
        if self.is_read_only() {
            Err(NbdError::Invalid {
                command,
                detail: format!("export {:?} is read-only", self.export),
            })
        } else {
            Ok(())
        }
    }

    /// Sends one request and waits for its reply, reconnecting and re-sending
    /// until it is answered or the retry policy gives up. Once the first
    /// connection has succeeded, every failure to reconnect is treated as
    /// temporary (the export existed, so the storage server is restarting or
    /// unreachable) except a change of export size, which would make
    /// re-sending unsafe.
    fn transact(
        &self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: Option<&[u8]>,
        mut read_buf: Option<&mut [u8]>,
    ) -> Result<(), NbdError> {
        let mut inner = self.lock();
        let started = Instant::now();
        let mut delay = self.opts.backoff_initial;
        let mut last_report: Option<Instant> = None;
        loop {
            let failure = match self.ensure_session(&mut inner, started)? {
                Err(e) => e,
                Ok(()) => {
                    let handle = inner.next_handle;
                    inner.next_handle = inner.next_handle.wrapping_add(1);
                    let req = Request {
                        flags,
                        command,
                        handle,
                        offset,
                        length,
                    };
                    let result = match inner.session.as_mut() {
                        Some(s) => s.exchange(&req, payload, read_buf.as_deref_mut()),
                        None => Err("no session".to_string()),
                    };
                    match result {
                        Ok(0) => return Ok(()),
                        Ok(ESHUTDOWN) => {
                            inner.session = None;
                            "server is shutting down (ESHUTDOWN)".to_string()
                        }
                        Ok(errno) => {
                            return Err(NbdError::Server {
                                command: command_name(command),
                                offset,
                                length: u64::from(length),
                                errno,
                            })
                        }
                        Err(e) => {
                            inner.session = None;
                            warn!(
                                addr = %self.addr,
                                export = %self.export,
                                "nbd client: {} at {offset} lost its connection, will retry: {e}",
                                command_name(command)
                            );
                            e
                        }
                    }
                }
            };
            if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                if last_report.is_some() {
                    warn!(
                        addr = %self.addr,
                        export = %self.export,
                        "nbd client: still waiting for the server after {:.1} s: {failure}",
                        started.elapsed().as_secs_f64()
                    );
                }
                last_report = Some(Instant::now());
            }
            if let Some(limit) = self.opts.retry_for {
                if started.elapsed() >= limit {
                    return Err(NbdError::GaveUp {
                        addr: self.addr,
                        secs: started.elapsed().as_secs_f64(),
                        last: failure,
                    });
                }
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(self.opts.backoff_max);
        }
    }

    /// Makes sure there is a session. `Ok(Err(reason))` is a temporary
    /// failure to retry; `Err` ends the request.
    fn ensure_session(
        &self,
        inner: &mut Inner,
        started: Instant,
    ) -> Result<Result<(), String>, NbdError> {
        if inner.session.is_some() {
            return Ok(Ok(()));
        }
        match open_session(self.addr, &self.export, &self.opts) {
            Ok(s) if s.info.size != self.info.size => Err(NbdError::SizeChanged {
                export: self.export.clone(),
                was: self.info.size,
                now: s.info.size,
            }),
            Ok(s) => {
                inner.reconnects += 1;
                info!(
                    addr = %self.addr,
                    export = %self.export,
                    "nbd client: reconnected after {:.2} s",
                    started.elapsed().as_secs_f64()
                );
                inner.session = Some(s);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e.to_string())),
        }
    }
}

impl Drop for NbdClient {
    fn drop(&mut self) {
        let mut inner = self.lock();
        let handle = inner.next_handle;
        if let Some(s) = inner.session.as_mut() {
            let req = Request {
                flags: 0,
                command: CMD_DISC,
                handle,
                offset: 0,
                length: 0,
            };
            let _ = s.stream.write_all(&req.encode());
            let _ = s.stream.flush();
            s.stream.close();
        }
        inner.session = None;
    }
}

impl Session {
    /// One request/reply exchange. `Ok(errno)` is the server's answer;
    /// `Err` means the connection can no longer be trusted.
    fn exchange(
        &mut self,
        req: &Request,
        payload: Option<&[u8]>,
        read_buf: Option<&mut [u8]>,
    ) -> Result<u32, String> {
        let head = req.encode();
        match payload {
            Some(p) if p.len() <= 64 * 1024 => {
                let mut msg = Vec::with_capacity(head.len() + p.len());
                msg.extend_from_slice(&head);
                msg.extend_from_slice(p);
                self.stream.write_all(&msg)
            }
            Some(p) => self
                .stream
                .write_all(&head)
                .and_then(|()| self.stream.write_all(p)),
            None => self.stream.write_all(&head),
        }
        .and_then(|()| self.stream.flush())
        .map_err(|e| format!("sending request: {e}"))?;
        let mut reply = [0u8; SIMPLE_REPLY_LEN];
        self.stream
            .read_exact(&mut reply)
            .map_err(|e| format!("reading reply: {e}"))?;
        let magic = be32(&reply[0..4]);
        if magic != SIMPLE_REPLY_MAGIC {
            return Err(format!("bad reply magic 0x{magic:08x}"));
        }
        let errno = be32(&reply[4..8]);
        let handle = be64(&reply[8..16]);
        if handle != req.handle {
            return Err(format!(
                "reply for handle {handle}, expected {}",
                req.handle
            ));
        }
        if errno == 0 {
            if let Some(buf) = read_buf {
                self.stream
                    .read_exact(buf)
                    .map_err(|e| format!("reading data: {e}"))?;
            }
        }
        Ok(errno)
    }
}

fn io_err(addr: SocketAddr, what: &str, e: io::Error) -> NbdError {
    NbdError::Io {
        addr,
        source: io::Error::new(e.kind(), format!("{what}: {e}")),
    }
}

fn protocol(addr: SocketAddr, detail: impl Into<String>) -> NbdError {
    NbdError::Protocol {
        addr,
        detail: detail.into(),
    }
}

/// Connects and runs the fixed-newstyle handshake up to transmission.
fn open_session(
    addr: SocketAddr,
    export: &str,
    opts: &NbdClientOptions,
) -> Result<Session, NbdError> {
    let sock = TcpStream::connect_timeout(&addr, opts.connect_timeout)
        .map_err(|e| io_err(addr, "connecting", e))?;
    let setup = |s: &TcpStream| -> io::Result<()> {
        s.set_nodelay(true)?;
        crate::sys::set_keepalive(s, 10, 5, 3)?;
        s.set_read_timeout(Some(opts.io_timeout))?;
        s.set_write_timeout(Some(opts.io_timeout))
    };
    setup(&sock).map_err(|e| io_err(addr, "configuring socket", e))?;
    let mut stream = Transport::Plain(sock);
    let rd = |s: &mut Transport, buf: &mut [u8]| {
        s.read_exact(buf)
            .map_err(|e| io_err(addr, "reading handshake", e))
    };

    let mut hello = [0u8; 18];
    rd(&mut stream, &mut hello)?;
    if be64(&hello[0..8]) != NBDMAGIC {
        return Err(protocol(addr, "server did not send NBDMAGIC"));
    }
    if be64(&hello[8..16]) != IHAVEOPT {
        return Err(protocol(
            addr,
            "server does not speak newstyle negotiation (oldstyle server?)",
        ));
    }
    let hflags = be16(&hello[16..18]);
    if hflags & FLAG_FIXED_NEWSTYLE == 0 {
        return Err(protocol(
            addr,
            "server does not support fixed newstyle negotiation",
        ));
    }
    let no_zeroes = hflags & FLAG_NO_ZEROES != 0;
    let cflags = FLAG_C_FIXED_NEWSTYLE | if no_zeroes { FLAG_C_NO_ZEROES } else { 0 };
    let wr = |s: &mut Transport, b: &[u8]| {
        s.write_all(b)
            .and_then(|()| s.flush())
            .map_err(|e| io_err(addr, "sending handshake", e))
    };
    wr(&mut stream, &cflags.to_be_bytes())?;
    if let Some(tls) = &opts.tls {
        stream = start_tls(stream, tls, addr, opts.io_timeout)?;
    }
    wr(
        &mut stream,
        &option_request(OPT_GO, &go_data(export, &[INFO_BLOCK_SIZE])),
    )?;

    let mut size_flags: Option<(u64, u16)> = None;
    let mut max_payload = MAX_PAYLOAD;
    loop {
        let mut head = [0u8; 20];
        rd(&mut stream, &mut head)?;
        if be64(&head[0..8]) != OPT_REPLY_MAGIC {
            return Err(protocol(addr, "bad option reply magic"));
        }
        if be32(&head[8..12]) != OPT_GO {
            return Err(protocol(addr, "option reply for an option we did not send"));
        }
        let rep = be32(&head[12..16]);
        let len = be32(&head[16..20]);
        if len > MAX_OPTION_DATA {
            return Err(protocol(addr, format!("option reply of {len} bytes")));
        }
        let mut data = vec![0u8; len as usize];
        rd(&mut stream, &mut data)?;
        match rep {
            REP_INFO if data.len() >= 2 => match be16(&data[0..2]) {
                INFO_EXPORT if data.len() == 12 => {
                    size_flags = Some((be64(&data[2..10]), be16(&data[10..12])));
                }
                INFO_BLOCK_SIZE if data.len() == 14 => {
                    let max = be32(&data[10..14]);
                    if max > 0 {
                        max_payload = max.min(MAX_PAYLOAD);
                    }
                }
                INFO_EXPORT | INFO_BLOCK_SIZE => {
                    return Err(protocol(addr, "information reply of the wrong length"))
                }
                _ => {}
            },
            REP_INFO => return Err(protocol(addr, "information reply without a type")),
            REP_ACK => {
                let Some((size, flags)) = size_flags else {
                    return Err(protocol(
                        addr,
                        "NBD_OPT_GO succeeded without NBD_INFO_EXPORT",
                    ));
                };
                return finish(stream, size, flags, max_payload);
            }
            REP_ERR_UNSUP => {
                // Old server: fall back to NBD_OPT_EXPORT_NAME.
                wr(
                    &mut stream,
                    &option_request(OPT_EXPORT_NAME, export.as_bytes()),
                )?;
                let mut b = [0u8; 10];
                rd(&mut stream, &mut b).map_err(|e| match e {
                    NbdError::Io { source, .. }
                        if source.kind() == io::ErrorKind::UnexpectedEof =>
                    {
                        NbdError::NoSuchExport {
                            addr,
                            export: export.to_string(),
                            message: "server closed the connection on NBD_OPT_EXPORT_NAME".into(),
                        }
                    }
                    other => other,
                })?;
                if !no_zeroes {
                    let mut z = [0u8; 124];
                    rd(&mut stream, &mut z)?;
                }
                return finish(stream, be64(&b[0..8]), be16(&b[8..10]), max_payload);
            }
            REP_ERR_TLS_REQD => {
                return Err(NbdError::Refused {
                    addr,
                    export: export.to_string(),
                    message: format!(
                        "the server requires TLS (NBD_REP_ERR_TLS_REQD: {}); give this client --tls-cert/--tls-key/--tls-ca",
                        String::from_utf8_lossy(&data)
                    ),
                })
            }
            REP_ERR_UNKNOWN => {
                return Err(NbdError::NoSuchExport {
                    addr,
                    export: export.to_string(),
                    message: String::from_utf8_lossy(&data).into_owned(),
                })
            }
            rep if rep_is_error(rep) => {
                return Err(NbdError::Refused {
                    addr,
                    export: export.to_string(),
                    message: format!(
                        "option reply 0x{rep:08x}: {}",
                        String::from_utf8_lossy(&data)
                    ),
                })
            }
            rep => return Err(protocol(addr, format!("unexpected option reply {rep}"))),
        }
    }
}

/// Sends NBD_OPT_STARTTLS, expects NBD_REP_ACK and runs the TLS handshake.
fn start_tls(
    mut stream: Transport,
    tls: &ClientTls,
    addr: SocketAddr,
    limit: Duration,
) -> Result<Transport, NbdError> {
    stream
        .write_all(&option_request(OPT_STARTTLS, &[]))
        .and_then(|()| stream.flush())
        .map_err(|e| io_err(addr, "sending NBD_OPT_STARTTLS", e))?;
    let mut head = [0u8; 20];
    stream
        .read_exact(&mut head)
        .map_err(|e| io_err(addr, "reading the NBD_OPT_STARTTLS reply", e))?;
    if be64(&head[0..8]) != OPT_REPLY_MAGIC || be32(&head[8..12]) != OPT_STARTTLS {
        return Err(protocol(addr, "bad reply to NBD_OPT_STARTTLS"));
    }
    let rep = be32(&head[12..16]);
    let len = be32(&head[16..20]);
    if len > MAX_OPTION_DATA {
        return Err(protocol(addr, format!("option reply of {len} bytes")));
    }
    let mut data = vec![0u8; len as usize];
    stream
        .read_exact(&mut data)
        .map_err(|e| io_err(addr, "reading the NBD_OPT_STARTTLS reply", e))?;
    if rep != REP_ACK {
        // A client that wants TLS must not carry on without it.
        return Err(NbdError::NoTls {
            addr,
            message: format!("reply 0x{rep:08x}: {}", String::from_utf8_lossy(&data)),
        });
    }
    let Transport::Plain(sock) = stream else {
        return Err(protocol(addr, "TLS started twice"));
    };
    let (s, _server) = ClientStream::connect(tls, sock, Instant::now() + limit)
        .map_err(|source| NbdError::Tls { addr, source })?;
    Ok(Transport::TlsClient(Box::new(s)))
}

fn finish(stream: Transport, size: u64, flags: u16, max_payload: u32) -> Result<Session, NbdError> {
    Ok(Session {
        stream,
        info: ExportInfo {
            size,
            flags,
            max_payload: max_payload.max(512),
        },
    })
}
