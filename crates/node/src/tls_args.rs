//! The TLS options shared by every command that talks to another ftvm
//! process — `ftvm storage`, `ftvm arbiter`, `ftvm primary`/`backup`, and
//! `ftvm run` with NBD disks (`--tls-cert`, `--tls-key`, `--tls-ca`, or
//! `--insecure`) — and turning them into `ftvm-tls` configurations. A command must be given either all
//! three files or `--insecure`; plain TCP is never chosen silently, and
//! choosing it says so on stderr.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use ftvm_tls::{ClientTls, Role, ServerTls, TlsFiles};

#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// This process's certificate (PEM) from `ftvm certs init DIR`:
    /// DIR/storage/server-cert.pem for `ftvm storage`,
    /// DIR/host-NAME/server-cert.pem for a VM host (primary, backup, run),
    /// DIR/operator-NAME/client-cert.pem for `ftvm arbiter`.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The CA certificate every peer's certificate must chain to (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// Use plain TCP: no encryption, no authentication, anyone who can
    /// reach the port may act. Says so on stderr.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key", "tls_ca"])]
    pub insecure: bool,
}

impl TlsArgs {
    /// The files, `None` for `--insecure` (after the warning), or an error
    /// when neither was given.
    pub fn files(&self, command: &str) -> Result<Option<TlsFiles>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: ca.clone(),
            })),
            _ if self.insecure => {
                eprintln!(
                    "ftvm {command}: --insecure: plain TCP, no encryption and no authentication: anyone who can reach the ports can read and change what they carry (disks, the arbiter, an FT pair's log)"
                );
                Ok(None)
            }
            _ => bail!(
                "ftvm {command} needs --tls-cert, --tls-key and --tls-ca (make them with `ftvm certs init DIR`), or --insecure for plain TCP"
            ),
        }
    }

    /// The server configuration, or `None` for `--insecure`.
    pub fn server(&self, command: &str) -> Result<Option<ServerTls>> {
        let Some(files) = self.files(command)? else {
            return Ok(None);
        };
        let tls = ServerTls::load(&files).context("cannot load the TLS files")?;
        Ok(Some(tls))
    }

    /// The client configuration for talking to servers of `server_role`,
    /// or `None` for `--insecure`.
    pub fn client(&self, command: &str, server_role: Role) -> Result<Option<ClientTls>> {
        let Some(files) = self.files(command)? else {
            return Ok(None);
        };
        let tls = ClientTls::load(&files, server_role).context("cannot load the TLS files")?;
        Ok(Some(tls))
    }
}
