//! Error types of the storage crate. [`StorageError`] is what starting or
//! running the server can fail with (bad configuration, a port that cannot be
//! bound, a storage directory already served by another process, a damaged
//! arbiter state file); [`NbdError`] and [`ArbiterError`] are what the two
//! client libraries report. Each message says what went wrong and, where
//! there is one, what the user can do about it. Faults of a single network
//! peer never become a `StorageError`: the server logs them, closes that
//! connection and carries on.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Failure to start or run the storage server.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage directory does not exist or is not a directory.
    #[error("storage directory {dir} does not exist or is not a directory (create it and put the <name>.img disk images in it)")]
    NoDirectory { dir: PathBuf },
    /// The configuration is inconsistent.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot listen for {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    /// Another server (in this or another process) already serves the directory.
    #[error("storage directory {dir} is already served by another ftvm storage server (lock {lock} is held); stop it first")]
    AlreadyServed { dir: PathBuf, lock: PathBuf },
    /// The arbiter state file exists but cannot be trusted. The server refuses
    /// to start rather than forget who won which generation.
    #[error("arbiter state file {path} is corrupt ({reason}); refusing to start: repair or restore it from a backup (deleting it forgets every recorded win and could allow a split brain)")]
    CorruptState { path: PathBuf, reason: String },
    /// A file system operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// A server thread could not be started.
    #[error("cannot start a server thread: {0}")]
    Thread(io::Error),
}

/// Failure of an [`NbdClient`](crate::NbdClient) operation.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    /// The server could not be reached or the connection failed, and the
    /// retry policy gave up (or this was the first connection attempt).
    #[error("NBD server {addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    /// The server broke the protocol during the handshake or transmission.
    #[error("NBD server {addr}: protocol violation: {detail}")]
    Protocol { addr: SocketAddr, detail: String },
    /// The server has no export of that name.
    #[error("NBD server {addr} has no export named {export:?}: {message}")]
    NoSuchExport {
        addr: SocketAddr,
        export: String,
        message: String,
    },
    /// The server refused the handshake for another reason.
    #[error("NBD server {addr} refused export {export:?}: {message}")]
    Refused {
        addr: SocketAddr,
        export: String,
        message: String,
    },
    /// The client wants TLS and the server does not offer it.
    #[error("NBD server {addr} does not offer TLS (NBD_OPT_STARTTLS refused: {message})")]
    NoTls { addr: SocketAddr, message: String },
    /// The TLS handshake failed (certificate refused on either side, wrong
    /// role, not TLS at all).
    #[error("NBD server {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: ftvm_tls::TlsError,
    },
    /// After a reconnection the export no longer has the size it had.
    #[error("NBD export {export:?} changed size from {was} to {now} bytes while reconnecting")]
    SizeChanged { export: String, was: u64, now: u64 },
    /// The server answered the request with an error.
    #[error("NBD {command} at offset {offset} length {length}: server error {errno} ({})", crate::nbd::proto::errno_name(*.errno))]
    Server {
        command: &'static str,
        offset: u64,
        length: u64,
        errno: u32,
    },
    /// The request is invalid before it is sent (out of range, read-only export).
    #[error("NBD {command}: {detail}")]
    Invalid {
        command: &'static str,
        detail: String,
    },
    /// The retry policy's time limit passed while the server was unreachable.
    #[error("NBD server {addr} unreachable for {secs:.1} s, giving up: {last}")]
    GaveUp {
        addr: SocketAddr,
        secs: f64,
        last: String,
    },
}

/// Failure of an [`ArbiterClient`](crate::ArbiterClient) call. None of these
/// is ever a win: a caller that gets an error must not go live.
#[derive(Debug, thiserror::Error)]
pub enum ArbiterError {
    /// No answer within the caller's time limit.
    #[error("arbiter {addr}: no answer within {ms} ms ({last})")]
    Timeout {
        addr: SocketAddr,
        ms: u128,
        last: String,
    },
    /// The arbiter could not be reached (and there is no time left to retry).
    #[error("arbiter {addr} unreachable: {source}")]
    Unreachable { addr: SocketAddr, source: io::Error },
    /// The arbiter answered with an error frame.
    #[error("arbiter {addr} refused the request: {message} (code {code})")]
    Refused {
        addr: SocketAddr,
        code: u16,
        message: String,
    },
    /// The arbiter's answer was malformed or did not fit the request.
    #[error("arbiter {addr}: protocol violation: {detail}")]
    Protocol { addr: SocketAddr, detail: String },
    /// The request cannot be encoded (empty or oversized names).
    #[error("invalid arbiter request: {0}")]
    Invalid(String),
    /// The TLS handshake with the arbiter failed (no time is left to retry).
    #[error("arbiter {addr}: {source}")]
    Tls {
        addr: SocketAddr,
        source: ftvm_tls::TlsError,
    },
}
