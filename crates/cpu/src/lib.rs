//! ftvm-cpu: a deterministic RV64GC hart.
//!
//! This crate owns everything inside the processor: the integer and
//! floating-point register files, the CSRs, privilege levels and traps, the
//! Sv39/Sv48 MMU with its TLB, and the interpreter loop. It never reads a
//! clock, a file, a socket or a random source. The only ways in or out are the
//! [`Bus`] it is given (physical accesses outside RAM, and the current guest
//! time) and the interrupt-pending bits the board sets between runs. The hart
//! counts every step it takes; that count is the clock of record on which
//! every outside event is placed.

pub mod bus;
pub mod csr;
mod decode;
pub mod fpu;
mod hart;
mod jit;
mod mmu;
pub mod rvc;
pub mod trap;

pub use bus::{Bus, Ram};
pub use hart::{Exit, Hart, Privilege};
pub use jit::{default_engine, set_default_engine, Engine, JitStats};
pub use trap::{Exception, Interrupt};
