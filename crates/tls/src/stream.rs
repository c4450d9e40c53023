//! A blocking TLS stream over a `TcpStream` that keeps working with socket
//! read and write timeouts, which ftvm's servers use as a poll interval
//! (wake up every 100 ms, look at the shutdown flag, read on). The rule that
//! makes this safe: ciphertext is only ever read from the socket into
//! rustls's own buffer, and plaintext only ever taken out of rustls, so a
//! timeout — even in the middle of a TLS record — leaves every byte received
//! so far inside the connection, and the next read carries on where the last
//! one stopped. A timeout surfaces as the socket's own `WouldBlock` /
//! `TimedOut` error, exactly as on a plain socket. Bytes a caller read from
//! the socket before deciding to start TLS (the NBD server's read-ahead
//! after `NBD_OPT_STARTTLS`) are handed in as a prefix and read first. The
//! handshake has its own deadline; a failed handshake or a record that does
//! not decrypt sends the TLS alert (best effort) and is an error.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::{Deref, DerefMut};
use std::time::Instant;

use rustls::{ClientConnection, ConnectionCommon, ServerConnection, SideData};

use crate::config::{peer_identity, ClientTls, ServerTls};
use crate::identity::{Identity, IdentityError};
use crate::TlsError;

/// One TLS connection and its socket.
pub struct TlsStream<C> {
    conn: C,
    sock: TcpStream,
}

/// A server's side of a TLS connection.
pub type ServerStream = TlsStream<ServerConnection>;
/// A client's side of a TLS connection.
pub type ClientStream = TlsStream<ClientConnection>;

impl<C> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("peer", &self.sock.peer_addr().ok())
            .finish()
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl ServerStream {
    /// Runs the server side of a handshake on `sock` until `deadline`,
    /// reading `prefix` (bytes already taken from the socket) first.
    /// Returns the stream and the client's verified identity.
    /// `stop` is asked between socket reads; when it says yes the
    /// handshake ends with [`TlsError::Stopped`] (server shutdown).
    pub fn accept(
        tls: &ServerTls,
        sock: TcpStream,
        prefix: &[u8],
        deadline: Instant,
        stop: &dyn Fn() -> bool,
    ) -> Result<(ServerStream, Identity), TlsError> {
        let mut conn = tls.new_connection()?;
        let mut rest = prefix;
        while !rest.is_empty() {
            conn.read_tls(&mut rest).map_err(TlsError::Io)?;
            conn.process_new_packets().map_err(TlsError::Tls)?;
        }
        let mut s = TlsStream { conn, sock };
        s.handshake(deadline, stop)?;
        let id = peer_identity(s.conn.peer_certificates()).map_err(TlsError::PeerIdentity)?;
        Ok((s, id))
    }
}

impl ClientStream {
    /// Runs the client side of a handshake on `sock` until `deadline`.
    /// The server's certificate chain and role are checked during the
    /// handshake; its identity is returned.
    pub fn connect(
        tls: &ClientTls,
        sock: TcpStream,
        deadline: Instant,
    ) -> Result<(ClientStream, Identity), TlsError> {
        let ip = sock.peer_addr().map_err(TlsError::Io)?.ip();
        let conn = tls.new_connection(ip)?;
        let mut s = TlsStream { conn, sock };
        s.handshake(deadline, &|| false)?;
        let id = peer_identity(s.conn.peer_certificates()).map_err(TlsError::PeerIdentity)?;
        Ok((s, id))
    }
}

impl<C, S> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// The underlying socket (for timeouts, addresses, shutdown).
    pub fn socket(&self) -> &TcpStream {
        &self.sock
    }

    /// The connection and its socket, for a caller that drives the
    /// connection itself from here on (the FT logging link: non-blocking,
    /// on its readiness loop). Whatever rustls already received stays in
    /// the connection.
    pub fn into_parts(self) -> (C, TcpStream) {
        (self.conn, self.sock)
    }

    /// The verified peer's identity.
    pub fn peer_identity(&self) -> Result<Identity, IdentityError> {
        peer_identity(self.conn.peer_certificates())
    }

    fn handshake(&mut self, deadline: Instant, stop: &dyn Fn() -> bool) -> Result<(), TlsError> {
        while self.conn.is_handshaking() {
            self.flush_tls().map_err(TlsError::Io)?;
            if !self.conn.is_handshaking() {
                break;
            }
            if Instant::now() >= deadline {
                return Err(TlsError::HandshakeTimeout);
            }
            if stop() {
                return Err(TlsError::Stopped);
            }
            match self.conn.read_tls(&mut self.sock) {
                Ok(0) => return Err(TlsError::HandshakeEof),
                Ok(_) => self.process()?,
                Err(e) if is_timeout(&e) || e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(TlsError::Io(e)),
            }
        }
        // The client's last flight (its Finished) may still be queued.
        self.flush_tls().map_err(TlsError::Io)?;
        Ok(())
    }

    /// Decrypts what was read; on a TLS error, tries to send the alert.
    fn process(&mut self) -> Result<(), TlsError> {
        match self.conn.process_new_packets() {
            Ok(_) => Ok(()),
            Err(e) => {
                let _ = self.flush_tls();
                Err(TlsError::Tls(e))
            }
        }
    }

    /// Writes every queued TLS record to the socket.
    fn flush_tls(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.sock.flush()
    }

    /// Sends close_notify and shuts the socket down; errors are irrelevant then.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls();
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
    }
}

impl<C, S> Read for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Returns plaintext already decrypted, else reads ciphertext from the
    /// socket. `Ok(0)` is the peer's close_notify; a TCP close without it is
    /// `UnexpectedEof`; a socket timeout is returned as it is, with any
    /// partial record kept for the next call.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let n = self.conn.read_tls(&mut self.sock)?;
            self.process()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            // Key updates and alerts may want an answer.
            self.flush_tls()?;
            if n == 0 {
                // The reader now reports the close (clean or not).
                return match self.conn.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed the TCP connection without a TLS close_notify",
                    )),
                    other => other,
                };
            }
        }
    }
}

impl<C, S> Write for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<S>>,
    S: SideData,
{
    /// Encrypts up to a buffer's worth of `buf` and writes it out; a write
    /// timeout leaves the records not yet sent queued for the next call.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let n = self.conn.writer().write(buf)?;
            self.flush_tls()?;
            if n > 0 {
                return Ok(n);
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.writer().flush()?;
        self.flush_tls()
    }
}
