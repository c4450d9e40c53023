//! The machine's one input port. Every value that comes from outside the
//! machine enters as an [`Input`], applied at the step count at which the
//! machine currently stands. A recorder stores `(icount, input)` pairs; a
//! replayer applies the same inputs at the same counts and so reproduces the
//! execution exactly. Values fixed at power-on (the wall-clock time the RTC
//! starts from, the device-tree RNG seed) are part of [`crate::MachineConfig`]
//! instead, so they are in the initial state that primary and backup share.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Input {
    /// A reading of the host clock, in guest ticks since power-on.
    Time(u64),
    /// Bytes received on the console UART.
    ConsoleRx(Vec<u8>),
}

/// What the machine produced that the outside world sees.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outputs {
    /// Bytes the guest wrote to the console UART.
    pub console: Vec<u8>,
}
