//! Events from the host side that the drivers turn into machine inputs or
//! protocol events: console bytes typed by the user, frames read from TAP
//! devices, completions from the disk worker and, for an FT pair, what the
//! logging connection and the arbiter report. The threads that produce them
//! only forward what they read, through an [`EventSender`] that also wakes
//! the driver's readiness loop ([`crate::reactor`]); the logging connection
//! itself is read on the driver's own thread and reports the same events
//! without any thread hop. The driver decides at which step each becomes an
//! input.

use std::net::TcpStream;
use std::sync::mpsc::{SendError, Sender};
use std::sync::Arc;

use ftvm_ft::{ArbiterResult, Frame};
use ftvm_machine::{Input, Slot};
use ftvm_tls::rustls;
use ftvm_tls::Identity;

#[derive(Debug)]
pub enum HostEvent {
    Console(Vec<u8>),
    Frame(Slot, Vec<u8>),
    /// A backend finished a request (a block completion).
    Completion(Input),
    /// Something happened on the FT logging channel or at the arbiter.
    Ft(FtEvent),
}

/// What the logging channel and the arbiter report. Connections are
/// numbered; events of a connection the driver has replaced are ignored.
#[derive(Debug)]
pub enum FtEvent {
    /// A logging connection was established (dialled or accepted; with
    /// TLS, handshaken and its peer checked).
    Connected { conn: u64, stream: LinkStream },
    /// A new backup connected to the `--join-listen` address.
    Joiner { conn: u64, stream: LinkStream },
    /// A dial attempt failed.
    DialFailed { error: String },
    /// A complete frame arrived.
    Frame { conn: u64, frame: Frame },
    /// The connection ended: closed by the peer, broken, or refused because
    /// of what it carried.
    Closed { conn: u64, error: Option<String> },
    /// The arbiter's answer to a test-and-set.
    Arbiter(ArbiterResult, String),
    /// A following backup's machine, built off the loop.
    MachineBuilt(crate::ft::backup::MachineBuilt),
}

/// A logging or join connection as it reaches a driver: plain TCP
/// (`--insecure`), or a TLS connection whose handshake has completed and
/// whose peer has been checked to be a host of this VM
/// ([`crate::ft::secure`]). Connections that fail the handshake or the
/// check never become one.
pub enum LinkStream {
    Plain(TcpStream),
    Tls {
        sock: TcpStream,
        conn: Box<rustls::Connection>,
        peer: Identity,
    },
}

impl LinkStream {
    /// The socket.
    pub fn socket(&self) -> &TcpStream {
        match self {
            LinkStream::Plain(s) => s,
            LinkStream::Tls { sock, .. } => sock,
        }
    }

    /// The peer's address, for log lines.
    pub fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.socket().peer_addr()
    }
}

impl std::fmt::Debug for LinkStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkStream::Plain(s) => f.debug_tuple("Plain").field(&s.peer_addr().ok()).finish(),
            LinkStream::Tls { sock, peer, .. } => f
                .debug_struct("Tls")
                .field("addr", &sock.peer_addr().ok())
                .field("peer", peer)
                .finish(),
        }
    }
}

/// The sending end of a driver's event channel: every event sent also
/// wakes the driver's readiness loop, so a thread that forwards host input
/// (a TAP reader, the disk worker, the console, the arbiter client) never
/// waits for the loop's next timeout.
#[derive(Clone)]
pub struct EventSender {
    tx: Sender<HostEvent>,
    waker: Arc<mio::Waker>,
}

impl EventSender {
    pub fn new(tx: Sender<HostEvent>, waker: Arc<mio::Waker>) -> EventSender {
        EventSender { tx, waker }
    }

    /// Queues `ev` and wakes the loop; fails when the driver is gone.
    pub fn send(&self, ev: HostEvent) -> Result<(), SendError<HostEvent>> {
        self.tx.send(ev)?;
        // A failed wake (never expected from an eventfd) only delays the
        // event to the loop's next turn.
        let _ = self.waker.wake();
        Ok(())
    }
}
