//! ftvm-machine: the deterministic board around an `ftvm-cpu` hart — RAM,
//! CLINT, PLIC, NS16550A UART, Goldfish RTC, SiFive test device — laid out
//! like QEMU's `virt` machine, with a generated device tree, a loader for
//! firmware, kernel and initramfs, and the single input port through which
//! every outside value enters.

pub mod board;
pub mod clock;
pub mod devices;
pub mod fdt;
pub mod input;
pub mod layout;
pub mod loader;
mod machine;
mod migrate;
pub mod state;

pub use devices::sifive_test::Finisher;
pub use devices::virtio::DeviceConfig;
pub use fdt::MmuType;
pub use input::{BlkOp, Input, Output, Slot};
pub use machine::{BuildError, Machine, MachineConfig, MachineSpec, Stop};
pub use state::{SnapshotError, StateDigest};
