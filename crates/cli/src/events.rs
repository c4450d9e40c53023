//! Events from the host side that the drivers turn into machine inputs or
//! protocol events: console bytes typed by the user, frames read from TAP
//! devices, completions from the disk worker and, for an FT pair, what the
//! logging connection and the arbiter report. The threads that produce them
//! only forward what they read; the driver decides at which step each
//! becomes an input.

use std::net::TcpStream;

use ftvm_ft::{ArbiterResult, Frame};
use ftvm_machine::{Input, Slot};

#[derive(Debug)]
pub enum HostEvent {
    Console(Vec<u8>),
    Frame(Slot, Vec<u8>),
    /// A backend finished a request (a block completion).
    Completion(Input),
    /// Something happened on the FT logging channel or at the arbiter.
    Ft(FtEvent),
}

/// What the logging-channel and arbiter threads report. Connections are
/// numbered; events of a connection the driver has replaced are ignored.
#[derive(Debug)]
pub enum FtEvent {
    /// A logging connection was established (dialled or accepted).
    Connected { conn: u64, stream: TcpStream },
    /// A new backup connected to the `--join-listen` address.
    Joiner { conn: u64, stream: TcpStream },
    /// A dial attempt failed.
    DialFailed { error: String },
    /// A complete frame arrived.
    Frame { conn: u64, frame: Frame },
    /// The connection ended: closed by the peer, broken, or refused because
    /// of what it carried.
    Closed { conn: u64, error: Option<String> },
    /// The arbiter's answer to a test-and-set.
    Arbiter(ArbiterResult, String),
}
