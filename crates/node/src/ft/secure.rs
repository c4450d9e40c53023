//! TLS on the FT pair's own channels — the logging connection and the
//! join connection — and the rule on them: both ends show a certificate
//! of the lab CA naming a *host of this VM* (`urn:ftvm:host:…` with
//! `urn:ftvm:vm:VM`), checked by each side of the other (the primary
//! checks the backup it dials, the backup the primary that dials it, the
//! donor the joiner and the joiner the donor). This module owns loading
//! the host's files once ([`FtTls`]: a server configuration for the
//! backup's listener and the join listener, a client configuration for
//! dialling another host, one for `ftvm storage`'s NBD and arbiter) and
//! the handshakes.
//!
//! The handshake runs, blocking with a deadline, on a thread that is not
//! the machine's — the primary's existing dial thread, a thread per
//! accepted connection on the listeners (at most [`MAX_HANDSHAKES`] at
//! once), the joiner's main thread before it has a guest — and only a
//! connection whose handshake completed and whose peer passed the rule is
//! handed to the driver's loop, as a [`LinkStream`] that the link then
//! drives non-blocking ([`super::link`]). So the machine loop never spends
//! time on a handshake, the ECDSA/X25519 work included, and a refused peer
//! (no certificate, another CA, the wrong role or VM, a replayed or garbled
//! handshake, a slow one) never reaches the driver: it cannot replace the
//! pair's connection, nothing of it is logged as an entry, written to a
//! disk or sent to the arbiter. Its refusal is one log line naming its
//! address, its identity when it had a valid one, and the reason.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ftvm_tls::{ClientStream, ClientTls, Identity, Role, ServerStream, ServerTls, TlsFiles};

use crate::events::LinkStream;

/// Limit for one handshake on the logging or join channel.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);
/// Handshakes a listener runs at once; connections beyond are refused
/// at once (a flood of slow clients cannot pile up threads).
pub const MAX_HANDSHAKES: usize = 16;
/// The socket timeouts during a handshake: the poll interval of the
/// blocking handshake, which checks its deadline between reads.
const POLL: Duration = Duration::from_millis(100);

/// A host's TLS setup for one VM.
#[derive(Clone, Debug)]
pub struct FtTls {
    server: ServerTls,
    peer: ClientTls,
    storage: ClientTls,
    vm: String,
}

impl FtTls {
    /// Loads `files` for VM `vm`. The certificate must be a host
    /// certificate listing `vm`: a process may only run VMs its
    /// certificate names (its peers would refuse it anyway).
    pub fn load(files: &TlsFiles, vm: &str) -> Result<FtTls> {
        let server = ServerTls::load(files).context("cannot load the TLS files")?;
        let own = server.identity();
        if !own.is_host_of(vm) {
            bail!(
                "{}: this certificate is {own}, not a host of VM {vm:?}; give this host's certificate from `ftvm certs init DIR --hosts … --vms …` (host-NAME/server-cert.pem)",
                files.cert.display()
            );
        }
        let peer = ClientTls::load(files, Role::Host).context("cannot load the TLS files")?;
        let storage = ClientTls::load(files, Role::Storage).context("cannot load the TLS files")?;
        Ok(FtTls {
            server,
            peer,
            storage,
            vm: vm.to_string(),
        })
    }

    /// The client setup for `ftvm storage` (NBD and the arbiter).
    pub fn storage(&self) -> &ClientTls {
        &self.storage
    }

    /// This host's identity.
    pub fn identity(&self) -> &Identity {
        self.server.identity()
    }

    /// The rule: only a host of this VM is a peer.
    fn check(&self, id: &Identity) -> Result<(), String> {
        if id.is_host_of(&self.vm) {
            Ok(())
        } else {
            Err(format!(
                "{id} is not a host of VM {:?} (only a host of this VM may follow its log or join it)",
                self.vm
            ))
        }
    }

    /// The server side of a handshake on an accepted `sock` (blocking, at
    /// most [`HANDSHAKE_TIMEOUT`]); `Err` is why the peer is refused.
    pub fn accept(&self, sock: TcpStream) -> Result<LinkStream, String> {
        prepare(&sock)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let (mut s, id) = ServerStream::accept(&self.server, sock, &[], deadline, &|| false)
            .map_err(|e| e.to_string())?;
        if let Err(why) = self.check(&id) {
            s.close();
            return Err(why);
        }
        let (conn, sock) = s.into_parts();
        Ok(LinkStream::Tls {
            sock,
            conn: Box::new(conn.into()),
            peer: id,
        })
    }

    /// The client side of a handshake on a dialled `sock` (blocking, at
    /// most [`HANDSHAKE_TIMEOUT`]); `Err` is why the server is refused or
    /// refused us.
    pub fn connect(&self, sock: TcpStream) -> Result<LinkStream, String> {
        prepare(&sock)?;
        let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
        let (mut s, id) =
            ClientStream::connect(&self.peer, sock, deadline).map_err(|e| e.to_string())?;
        if let Err(why) = self.check(&id) {
            s.close();
            return Err(why);
        }
        let (conn, sock) = s.into_parts();
        Ok(LinkStream::Tls {
            sock,
            conn: Box::new(conn.into()),
            peer: id,
        })
    }
}

/// A blocking socket with the poll-interval timeouts the handshake needs.
fn prepare(sock: &TcpStream) -> Result<(), String> {
    sock.set_nonblocking(false)
        .and_then(|()| sock.set_read_timeout(Some(POLL)))
        .and_then(|()| sock.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
        .map_err(|e| format!("cannot set up the socket: {e}"))
}
