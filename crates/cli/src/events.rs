//! Events from the host side that the driver turns into machine inputs:
//! console bytes typed by the user and frames read from TAP devices. The
//! threads that read them only forward bytes; the driver decides at which
//! step each becomes an input.

use ftvm_machine::Slot;

#[derive(Debug)]
pub enum HostEvent {
    Console(Vec<u8>),
    Frame(Slot, Vec<u8>),
}
