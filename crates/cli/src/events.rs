//! Events from the host side that the driver turns into machine inputs:
//! console bytes typed by the user, frames read from TAP devices and
//! completions from the disk worker. The threads that produce them only
//! forward bytes; the driver decides at which step each becomes an input.

use ftvm_machine::{Input, Slot};

#[derive(Debug)]
pub enum HostEvent {
    Console(Vec<u8>),
    Frame(Slot, Vec<u8>),
    /// A backend finished a request (a block completion).
    Completion(Input),
}
