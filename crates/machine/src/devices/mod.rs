//! Memory-mapped devices of the board. Each device is a plain state machine:
//! it owns its registers, answers reads and writes at offsets within its
//! window, and exposes its interrupt line as a level the board samples. No
//! device reads a clock, a file or a socket; anything from outside (console
//! input, the time) is handed to it by the board.

pub mod clint;
pub mod plic;
pub mod rtc;
pub mod sifive_test;
pub mod uart;
pub mod virtio;

/// A device window on the bus. `offset` is relative to the window base,
/// `size` is 1, 2, 4 or 8 bytes and the access is naturally aligned.
pub trait MmioDevice {
    fn read(&mut self, offset: u64, size: u8) -> u64;
    fn write(&mut self, offset: u64, size: u8, value: u64);
}
