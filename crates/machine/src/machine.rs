//! The whole machine — hart, RAM and board — as one deterministic state
//! machine. `Machine::run` advances it to a step limit; `Machine::apply`
//! feeds it an [`Input`] at the step where it stands. Nothing else changes
//! it. The driver that owns the host clock and the terminal decides when to
//! read them and passes what it read in as inputs.

use ftvm_cpu::{Exit, Hart, Ram};
use thiserror::Error;

use crate::board::Board;
use crate::clock::GuestClock;
use crate::devices::sifive_test::Finisher;
use crate::devices::virtio::DeviceConfig;
use crate::fdt::{self, FdtConfig, MmuType};
use crate::input::{Input, Output};
use crate::layout::{RAM_BASE, TIMEBASE_HZ, VIRTIO_SLOTS};
use crate::loader::{self, LoadError};
use crate::migrate::DirtyPages;
use crate::state::DigestCache;

/// Everything that defines the machine at power-on. Two machines built from
/// equal configs are identical.
#[derive(Clone, Debug)]
pub struct MachineConfig {
    /// RAM size in bytes (a multiple of 1 MiB).
    pub ram_size: u64,
    /// Firmware loaded at the start of RAM (OpenSBI `fw_jump.bin`), or `None`
    /// to run the kernel directly in M-mode from its ELF entry point.
    pub bios: Option<Vec<u8>>,
    pub kernel: Vec<u8>,
    pub initrd: Option<Vec<u8>>,
    pub bootargs: String,
    /// Seed for the kernel's RNG, passed in the device tree.
    pub rng_seed: [u8; 32],
    /// Wall-clock time at power-on (ns since the Unix epoch), for the RTC.
    pub boot_wallclock_ns: u64,
    /// Nominal steps per guest tick when interpolating time between inputs.
    pub steps_per_tick: u64,
    /// How far (ticks) interpolated time may run past the last time input.
    pub max_ahead_ticks: u64,
    pub mmu: MmuType,
    /// virtio devices, plugged into slots 0, 1, 2, ... in this order.
    pub virtio: Vec<DeviceConfig>,
}

/// Everything in a [`MachineConfig`] except the image bytes: what a log
/// header or a backup needs to rebuild the same machine from the same images.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MachineSpec {
    pub ram_size: u64,
    pub has_bios: bool,
    pub has_initrd: bool,
    pub bootargs: String,
    pub rng_seed: [u8; 32],
    pub boot_wallclock_ns: u64,
    pub steps_per_tick: u64,
    pub max_ahead_ticks: u64,
    pub mmu: MmuType,
    pub virtio: Vec<DeviceConfig>,
}

impl MachineConfig {
    /// The image-free part of this config.
    pub fn spec(&self) -> MachineSpec {
        MachineSpec {
            ram_size: self.ram_size,
            has_bios: self.bios.is_some(),
            has_initrd: self.initrd.is_some(),
            bootargs: self.bootargs.clone(),
            rng_seed: self.rng_seed,
            boot_wallclock_ns: self.boot_wallclock_ns,
            steps_per_tick: self.steps_per_tick,
            max_ahead_ticks: self.max_ahead_ticks,
            mmu: self.mmu,
            virtio: self.virtio.clone(),
        }
    }

    /// Rebuilds a config from a spec and the images it names.
    pub fn from_spec(
        spec: &MachineSpec,
        bios: Option<Vec<u8>>,
        kernel: Vec<u8>,
        initrd: Option<Vec<u8>>,
    ) -> Self {
        MachineConfig {
            ram_size: spec.ram_size,
            bios,
            kernel,
            initrd,
            bootargs: spec.bootargs.clone(),
            rng_seed: spec.rng_seed,
            boot_wallclock_ns: spec.boot_wallclock_ns,
            steps_per_tick: spec.steps_per_tick,
            max_ahead_ticks: spec.max_ahead_ticks,
            mmu: spec.mmu,
            virtio: spec.virtio.clone(),
        }
    }

    /// A config with default timing: interpolation at 120 MIPS (about what
    /// the interpreter does on Linux), at most 2 ms ahead of the last host
    /// time reading.
    pub fn new(ram_size: u64, kernel: Vec<u8>) -> Self {
        MachineConfig {
            ram_size,
            bios: None,
            kernel,
            initrd: None,
            bootargs: String::new(),
            rng_seed: [0; 32],
            boot_wallclock_ns: 0,
            steps_per_tick: 120_000_000 / TIMEBASE_HZ,
            max_ahead_ticks: TIMEBASE_HZ / 500,
            mmu: MmuType::Sv48,
            virtio: Vec::new(),
        }
    }
}

#[derive(Debug, Error)]
pub enum BuildError {
    #[error("memory size {0} bytes is not a non-zero multiple of 1 MiB")]
    BadRamSize(u64),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("{} virtio devices requested; the board has {VIRTIO_SLOTS} slots", .0)]
    TooManyDevices(usize),
    #[error("disk in virtio slot {slot}: size {size} bytes is not a non-zero multiple of 512")]
    BadDiskSize { slot: usize, size: u64 },
    #[error("device tree: {0}")]
    Fdt(#[from] fdt::FdtError),
}

/// Why [`Machine::run`] stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// Reached the step limit.
    Limit,
    /// The hart waits for an interrupt; nothing will happen without an input.
    /// `wake_at` is the guest time at which a device would wake it, if any.
    Idle { wake_at: Option<u64> },
    /// The guest wrote the test device: poweroff, pass/fail or reset.
    Finished(Finisher),
}

pub struct Machine {
    pub hart: Hart,
    pub ram: Ram,
    pub board: Board,
    /// Derived: cached RAM chunk hashes for [`Machine::digest`].
    pub(crate) digest_cache: DigestCache,
    /// Derived: pages written but not yet seen by the digest or the
    /// migration dirty log (see [`Machine::collect_dirty`]).
    pub(crate) dirty: DirtyPages,
}

impl Machine {
    pub fn new(cfg: &MachineConfig) -> Result<Machine, BuildError> {
        if cfg.ram_size == 0 || !cfg.ram_size.is_multiple_of(1 << 20) {
            return Err(BuildError::BadRamSize(cfg.ram_size));
        }
        if cfg.virtio.len() > VIRTIO_SLOTS as usize {
            return Err(BuildError::TooManyDevices(cfg.virtio.len()));
        }
        for (slot, d) in cfg.virtio.iter().enumerate() {
            if let DeviceConfig::Blk { capacity_bytes, .. } = d {
                if *capacity_bytes == 0 || !capacity_bytes.is_multiple_of(512) {
                    return Err(BuildError::BadDiskSize {
                        slot,
                        size: *capacity_bytes,
                    });
                }
            }
        }
        let mut ram = Ram::new(RAM_BASE, cfg.ram_size);
        let entry;
        let kernel_end;
        match &cfg.bios {
            Some(bios) => {
                let (e, fw) = if loader::is_elf(bios) {
                    loader::load_elf(&mut ram, "firmware", bios)?
                } else {
                    (
                        RAM_BASE,
                        loader::load_raw(&mut ram, "firmware", RAM_BASE, bios)?,
                    )
                };
                entry = e;
                let (_, k) = loader::load_kernel(&mut ram, &cfg.kernel)?;
                if k.start < fw.end && fw.start < k.end {
                    return Err(LoadError::Overlap {
                        what: "kernel",
                        other: "firmware",
                    }
                    .into());
                }
                kernel_end = k.end;
            }
            None => {
                let (e, k) = if loader::is_elf(&cfg.kernel) {
                    loader::load_elf(&mut ram, "kernel", &cfg.kernel)?
                } else {
                    (
                        RAM_BASE,
                        loader::load_raw(&mut ram, "kernel", RAM_BASE, &cfg.kernel)?,
                    )
                };
                entry = e;
                kernel_end = k.end;
            }
        }
        let initrd = match &cfg.initrd {
            Some(data) => {
                let addr = loader::initrd_address(cfg.ram_size, kernel_end, data.len() as u64);
                let p = loader::load_raw(&mut ram, "initrd", addr, data)?;
                Some((p.start, p.end))
            }
            None => None,
        };
        let dtb = fdt::build(&FdtConfig {
            ram_base: RAM_BASE,
            ram_size: cfg.ram_size,
            bootargs: cfg.bootargs.clone(),
            initrd,
            rng_seed: cfg.rng_seed,
            virtio_slots: (0..cfg.virtio.len() as u32).collect(),
            mmu_type: cfg.mmu,
        })?;
        let dtb_addr = loader::fdt_address(cfg.ram_size, dtb.len() as u64);
        if let Some((_, end)) = initrd {
            if end > dtb_addr {
                return Err(LoadError::Overlap {
                    what: "initrd",
                    other: "device tree",
                }
                .into());
            }
        }
        loader::load_raw(&mut ram, "device tree", dtb_addr, &dtb)?;
        let hart = Hart::new(entry, dtb_addr);
        let clock = GuestClock::new(cfg.steps_per_tick, cfg.max_ahead_ticks);
        Ok(Machine::assemble(
            hart,
            ram,
            Board::new(clock, cfg.boot_wallclock_ns, &cfg.virtio),
        ))
    }

    /// A machine from its parts, with all derived state cold.
    pub(crate) fn assemble(hart: Hart, ram: Ram, board: Board) -> Machine {
        Machine {
            hart,
            ram,
            board,
            digest_cache: DigestCache::default(),
            dirty: DirtyPages::default(),
        }
    }

    /// Steps taken so far: the clock of record.
    pub fn icount(&self) -> u64 {
        self.hart.icount
    }

    /// Guest time (ticks) now.
    pub fn guest_time(&self) -> u64 {
        self.board.clock.now(self.hart.icount)
    }

    /// Applies an input at the current step.
    pub fn apply(&mut self, input: &Input) {
        match input {
            Input::Time(t) => self.board.clock.sync(self.hart.icount, *t),
            Input::ConsoleRx(bytes) => self.board.uart.push_input(bytes),
            Input::NetRx { slot, .. }
            | Input::BlkDone { slot, .. }
            | Input::RngData { slot, .. } => self.board.apply_virtio(*slot, input, &mut self.ram),
        }
        self.sync_irqs();
    }

    fn sync_irqs(&mut self) {
        let (msip, mtip, meip, seip) = self.board.irq_lines(self.hart.icount);
        self.hart.set_irq_lines(msip, mtip, meip, seip);
    }

    /// Runs until step `limit`, an idle hart, or a finisher write.
    pub fn run(&mut self, limit: u64) -> Stop {
        self.run_inner(limit, false)
    }

    /// Like [`run`](Self::run), but also stops (with `Stop::Limit`) right
    /// after a device access that produced an output, so that a driver
    /// holding outputs (the FT primary) can hand them on without waiting
    /// for the rest of the run. Where it stops depends only on the guest's
    /// own execution, so it changes nothing a replay could see.
    pub fn run_until_output(&mut self, limit: u64) -> Stop {
        self.run_inner(limit, true)
    }

    fn run_inner(&mut self, limit: u64, stop_on_output: bool) -> Stop {
        loop {
            self.sync_irqs();
            let icount = self.hart.icount;
            let lim = match self.board.next_deadline(icount) {
                Some(d) if d < limit => d.max(icount + 1),
                _ => limit,
            };
            if icount >= limit {
                return Stop::Limit;
            }
            match self.hart.run(&mut self.ram, &mut self.board, lim) {
                Exit::Device => {
                    self.board.process_virtio(&mut self.ram);
                    if let Some(f) = self.board.finisher.take() {
                        return Stop::Finished(f);
                    }
                    if stop_on_output && !self.board.outputs.is_empty() {
                        // The state `run` would return with at this step:
                        // `irq_lines` updates device state (RTC, PLIC), so
                        // skipping it would leave a state that a replay
                        // stopping here by its step limit never has.
                        self.sync_irqs();
                        return Stop::Limit;
                    }
                }
                Exit::Limit => {}
                Exit::Wfi => {
                    return Stop::Idle {
                        wake_at: self.board.next_wakeup_time(),
                    }
                }
            }
        }
    }

    /// Whether outputs wait to be taken.
    pub fn has_outputs(&self) -> bool {
        !self.board.outputs.is_empty()
    }

    /// Takes the outputs produced since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.board.outputs)
    }
}
