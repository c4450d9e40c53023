//! ftvm-tls: mutual TLS 1.3 for the channels between ftvm processes. It
//! owns the identity scheme (a certificate names its holder's role — host,
//! storage or operator — and a host's VMs, as `urn:ftvm:…` URIs;
//! [`identity`]), loading `--tls-cert`/`--tls-key`/`--tls-ca` into rustls
//! server and client configurations that always authenticate both ends
//! ([`config`]), blocking streams that survive the socket read timeouts the
//! servers poll with ([`stream`]), and the lab CA behind `ftvm certs init`
//! ([`lab`]). It knows nothing about NBD or the arbiter: those decide what
//! an identity may do (see `ftvm-storage`'s `authz`). `docs/security.md`
//! describes the whole scheme.

pub mod config;
pub mod identity;
pub mod lab;
pub mod stream;

pub use config::{ClientTls, ServerTls, TlsFiles};
pub use identity::{Identity, IdentityError, Role};
pub use stream::{ClientStream, ServerStream, TlsStream};

/// The rustls this crate is built with, for callers that drive a
/// connection themselves ([`TlsStream::into_parts`]).
pub use rustls;

use std::path::PathBuf;

/// What loading TLS material or running a handshake can fail with.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file cannot be read or used.
    #[error("{path}: {why}")]
    File { path: PathBuf, why: String },
    /// This process's own certificate carries no usable ftvm identity.
    #[error("{path}: not an ftvm certificate: {source}")]
    OwnIdentity {
        path: PathBuf,
        source: IdentityError,
    },
    /// The files do not make a working configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// A lab CA plan is not acceptable.
    #[error("{0}")]
    Plan(String),
    /// The TLS protocol failed (bad certificate, wrong role, garbage, a
    /// record that does not decrypt).
    #[error("TLS: {}", describe(.0))]
    Tls(rustls::Error),
    /// The socket failed.
    #[error("TLS: socket: {0}")]
    Io(std::io::Error),
    /// The handshake did not finish in time.
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    /// The caller asked the handshake to stop (server shutdown).
    #[error("TLS handshake abandoned: shutting down")]
    Stopped,
    /// The peer closed the connection during the handshake.
    #[error("peer closed the connection during the TLS handshake")]
    HandshakeEof,
    /// The verified peer's certificate has no usable ftvm identity.
    #[error("peer certificate: {0}")]
    PeerIdentity(IdentityError),
}

/// A rustls error as a sentence: rustls prints the errors a verifier
/// returns with `Debug`; ours have a `Display` worth showing.
pub fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(rustls::CertificateError::Other(o)) => {
            format!("invalid peer certificate: {}", o.0)
        }
        other => other.to_string(),
    }
}
