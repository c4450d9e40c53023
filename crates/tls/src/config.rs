//! TLS configurations from files: `--tls-cert` (this process's certificate
//! chain, PEM), `--tls-key` (its private key, PEM: PKCS#8, SEC1 or PKCS#1)
//! and `--tls-ca` (the CA certificates that every peer must chain to). Both
//! sides speak TLS 1.3 only, with the `ring` provider, and both always
//! authenticate: a server requires a client certificate from the CA
//! ([`ServerTls`]); a client checks the server's chain against the CA and
//! that the server's ftvm identity has the expected role ([`ClientTls`]) —
//! the identity URI, not a DNS name or an address, is what names an ftvm
//! peer, so a client does not match host names (standard tools such as
//! qemu and libnbd still do, so the lab CA puts DNS/IP names on server
//! certificates too). Session resumption and early data are off: every
//! connection runs a full handshake with both certificates, so every
//! connection's identity comes from a certificate checked just now.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::identity::{Identity, IdentityError, Role};
use crate::TlsError;

/// Where a process's certificate, key and CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
}

/// Everything loaded from a [`TlsFiles`].
struct Loaded {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    own: Identity,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_err = |e: rustls::pki_types::pem::Error| TlsError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(file_err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(file_err)?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            why: "no PEM CERTIFICATE in it".into(),
        });
    }
    Ok(certs)
}

impl TlsFiles {
    fn load(&self) -> Result<Loaded, TlsError> {
        let chain = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(|e| TlsError::File {
            path: self.key.clone(),
            why: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in read_certs(&self.ca)? {
            roots.add(ca).map_err(|e| TlsError::File {
                path: self.ca.clone(),
                why: format!("not a usable CA certificate: {e}"),
            })?;
        }
        let own = Identity::from_cert_der(&chain[0]).map_err(|e| TlsError::OwnIdentity {
            path: self.cert.clone(),
            source: e,
        })?;
        Ok(Loaded {
            chain,
            key,
            roots: Arc::new(roots),
            own,
        })
    }
}

/// A server's TLS setup: its certificate and the CA its clients must chain to.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
    own: Identity,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls").field("own", &self.own).finish()
    }
}

impl ServerTls {
    /// Loads the files; this process's certificate must carry an ftvm identity.
    pub fn load(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let l = files.load()?;
        let provider = provider();
        let verifier = WebPkiClientVerifier::builder_with_provider(l.roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(l.chain, l.key)
            .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        config.max_early_data_size = 0;
        Ok(ServerTls {
            config: Arc::new(config),
            own: l.own,
        })
    }

    /// This server's own identity.
    pub fn identity(&self) -> &Identity {
        &self.own
    }

    pub(crate) fn new_connection(&self) -> Result<rustls::ServerConnection, TlsError> {
        rustls::ServerConnection::new(self.config.clone()).map_err(TlsError::Tls)
    }
}

/// A client's TLS setup: its certificate, the CA the server must chain to,
/// and the role the server must have.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    own: Identity,
    server_role: Role,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("own", &self.own)
            .field("server_role", &self.server_role)
            .finish()
    }
}

impl ClientTls {
    /// Loads the files for connections to servers of `server_role` (for
    /// the NBD and arbiter clients: [`Role::Storage`]).
    pub fn load(files: &TlsFiles, server_role: Role) -> Result<ClientTls, TlsError> {
        let l = files.load()?;
        let provider = provider();
        let verifier = Arc::new(RoleVerifier {
            roots: l.roots,
            algorithms: provider.signature_verification_algorithms,
            role: server_role,
        });
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(l.chain, l.key)
            .map_err(|e| TlsError::Config(format!("{}: {e}", files.key.display())))?;
        config.resumption = Resumption::disabled();
        config.enable_early_data = false;
        Ok(ClientTls {
            config: Arc::new(config),
            own: l.own,
            server_role,
        })
    }

    /// This client's own identity.
    pub fn identity(&self) -> &Identity {
        &self.own
    }

    /// The role servers must have.
    pub fn server_role(&self) -> Role {
        self.server_role
    }

    pub(crate) fn new_connection(
        &self,
        server: std::net::IpAddr,
    ) -> Result<rustls::ClientConnection, TlsError> {
        // The name only goes into SNI-less TLS as a formality: an IP address
        // is never sent as SNI, and RoleVerifier ignores it.
        let name = ServerName::IpAddress(server.into());
        rustls::ClientConnection::new(self.config.clone(), name).map_err(TlsError::Tls)
    }
}

/// Verifies a server certificate the way `WebPkiServerVerifier` does (chain
/// to the CA, validity, the serverAuth purpose), except that instead of a
/// host name it requires the ftvm identity of the expected role.
#[derive(Debug)]
struct RoleVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
    role: Role,
}

impl ServerCertVerifier for RoleVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let id = Identity::from_cert_der(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if id.role() != self.role {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(WrongRole {
                    want: self.role,
                    got: id,
                }))),
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Only TLS 1.3 is enabled; a TLS 1.2 handshake never gets here.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server with a valid certificate of the wrong role.
#[derive(Debug)]
struct WrongRole {
    want: Role,
    got: Identity,
}

impl fmt::Display for WrongRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "server is {}, expected a {}", self.got, self.want)
    }
}

impl std::error::Error for WrongRole {}

/// The identity in a verified peer's certificate.
pub(crate) fn peer_identity(
    certs: Option<&[CertificateDer<'_>]>,
) -> Result<Identity, IdentityError> {
    match certs.and_then(|c| c.first()) {
        Some(c) => Identity::from_cert_der(c),
        None => Err(IdentityError::NoCertificate),
    }
}
