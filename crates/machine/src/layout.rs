//! The physical memory map of the board, compatible with QEMU's `virt`
//! machine so that the same firmware, kernel and device tree conventions
//! apply. Everything that places a device or a boot blob reads it from here.

/// SiFive test device: poweroff / reboot / pass-fail exit codes.
pub const TEST_BASE: u64 = 0x0010_0000;
pub const TEST_SIZE: u64 = 0x1000;
/// Goldfish real-time clock.
pub const RTC_BASE: u64 = 0x0010_1000;
pub const RTC_SIZE: u64 = 0x1000;
pub const RTC_IRQ: u32 = 11;
/// Core-local interruptor: msip, mtimecmp, mtime.
pub const CLINT_BASE: u64 = 0x0200_0000;
pub const CLINT_SIZE: u64 = 0x1_0000;
/// Platform-level interrupt controller.
pub const PLIC_BASE: u64 = 0x0c00_0000;
pub const PLIC_SIZE: u64 = 0x60_0000;
/// Number of interrupt sources the PLIC implements (ids 1..PLIC_SOURCES-1).
pub const PLIC_SOURCES: u32 = 96;
/// NS16550A UART.
pub const UART_BASE: u64 = 0x1000_0000;
pub const UART_SIZE: u64 = 0x100;
pub const UART_IRQ: u32 = 10;
/// virtio-mmio transport slots: slot i at VIRTIO_BASE + i * VIRTIO_STRIDE, PLIC line VIRTIO_IRQ_BASE + i.
pub const VIRTIO_BASE: u64 = 0x1000_1000;
pub const VIRTIO_STRIDE: u64 = 0x1000;
pub const VIRTIO_SLOTS: u32 = 8;
pub const VIRTIO_IRQ_BASE: u32 = 1;
/// RAM.
pub const RAM_BASE: u64 = 0x8000_0000;

/// Frequency of `mtime` / the `time` CSR (same as QEMU virt).
pub const TIMEBASE_HZ: u64 = 10_000_000;

/// Where OpenSBI `fw_jump` expects the next stage (FW_JUMP_ADDR).
pub const KERNEL_OFFSET: u64 = 0x20_0000;
