//! `ftvm run`: builds a machine from files on the command line (or the
//! default guest image) and drives it in real time. This driver is the only
//! place that reads the host clock and the terminal; it passes what it reads
//! to the machine as inputs at step boundaries of its choosing, one quantum
//! of steps per turn of the loop.

use std::path::{Path, PathBuf};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Args;
use ftvm_machine::layout::TIMEBASE_HZ;
use ftvm_machine::{Finisher, Input, Machine, MachineConfig, MmuType, Output, Stop};

use crate::console::{self, Console, ConsoleTarget, Filtered};
use crate::guest;

/// Steps executed per turn of the host loop (about 4 ms at 120 MIPS); the
/// host clock is read once per turn, which bounds how far guest time can
/// trail real time.
const QUANTUM: u64 = 500_000;
/// Longest the driver sleeps while the guest idles, so input stays responsive.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Firmware: a path to OpenSBI fw_jump.bin (or an ELF), or "none" to
    /// run --kernel directly in M-mode (bare-metal programs). Default: the
    /// guest image's fw_jump.bin.
    #[arg(long, value_name = "PATH|none")]
    bios: Option<String>,
    /// Kernel: a RISC-V Linux Image, or an ELF. Default: the guest image's Image.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initial ramdisk. Default: the guest image's initramfs when the kernel is the default one.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "ARGS", default_value = "console=ttyS0")]
    append: String,
    /// Guest RAM: a number of MiB, or a size with K/M/G suffix.
    #[arg(long, short = 'm', value_name = "SIZE", default_value = "256M")]
    memory: String,
    /// Where console output goes: stdio, null, or file:PATH.
    #[arg(long, value_name = "TARGET", default_value = "stdio")]
    console: ConsoleTarget,
    /// Do not read console input from stdin.
    #[arg(long)]
    no_input: bool,
    /// Paging mode advertised in the device tree.
    #[arg(long, value_parser = ["sv39", "sv48"], default_value = "sv48")]
    mmu: String,
    /// Stop after this many steps (instructions), exiting with status 0.
    #[arg(long, value_name = "N")]
    max_steps: Option<u64>,
    /// Print steps executed, wall time and MIPS on exit.
    #[arg(long)]
    stats: bool,
}

fn read_file(what: &str, path: &Path) -> Result<Vec<u8>> {
    let data =
        std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if data.is_empty() {
        bail!("{what} {} is empty", path.display());
    }
    Ok(data)
}

fn host_random_seed() -> Result<[u8; 32]> {
    use std::io::Read;
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("cannot read /dev/urandom for the guest RNG seed")?;
    Ok(seed)
}

fn build_config(args: &RunArgs) -> Result<MachineConfig> {
    let ram_size = console::parse_size(&args.memory)?;
    let bare = args.bios.as_deref() == Some("none");
    let default_dir = || guest::default_dir();
    let (kernel_path, default_kernel) = match &args.kernel {
        Some(k) => (k.clone(), false),
        None => {
            if bare {
                bail!("--bios none needs --kernel PROGRAM.elf");
            }
            (default_dir()?.join("Image"), true)
        }
    };
    let kernel = read_file("kernel", &kernel_path)?;
    let bios = if bare {
        None
    } else {
        let p = match &args.bios {
            Some(p) => PathBuf::from(p),
            None => default_dir()?.join("fw_jump.bin"),
        };
        Some(read_file("firmware", &p)?)
    };
    let initrd = match &args.initrd {
        Some(p) => Some(read_file("initrd", p)?),
        None if default_kernel => {
            Some(read_file("initrd", &default_dir()?.join("initrd.cpio.gz"))?)
        }
        None => None,
    };
    let mut cfg = MachineConfig::new(ram_size, kernel);
    cfg.bios = bios;
    cfg.initrd = initrd;
    cfg.bootargs = args.append.clone();
    cfg.rng_seed = host_random_seed()?;
    cfg.boot_wallclock_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    cfg.mmu = if args.mmu == "sv39" {
        MmuType::Sv39
    } else {
        MmuType::Sv48
    };
    Ok(cfg)
}

fn host_ticks(start: Instant) -> u64 {
    (start.elapsed().as_nanos() * TIMEBASE_HZ as u128 / 1_000_000_000) as u64
}

pub fn run(args: RunArgs) -> Result<u8> {
    let cfg = build_config(&args)?;
    let mut machine = Machine::new(&cfg).context("cannot build the machine")?;
    let mut console = Console::open(&args.console, !args.no_input)?;
    let start = Instant::now();
    let mut pending: Vec<Vec<u8>> = Vec::new();
    let code = loop {
        machine.apply(&Input::Time(host_ticks(start)));
        if let Some(rx) = console.receiver() {
            while let Ok(bytes) = rx.try_recv() {
                pending.push(bytes);
            }
        }
        let mut quit = false;
        for bytes in pending.drain(..) {
            match console.filter(bytes) {
                Filtered::Bytes(b) if !b.is_empty() => machine.apply(&Input::ConsoleRx(b)),
                Filtered::Bytes(_) => {}
                Filtered::Quit => quit = true,
            }
        }
        if quit {
            eprint!("\r\nftvm: quit from the console\r\n");
            break 0;
        }
        let mut limit = machine.icount() + QUANTUM;
        if let Some(max) = args.max_steps {
            if machine.icount() >= max {
                break 0;
            }
            limit = limit.min(max);
        }
        let stop = machine.run(limit);
        for out in machine.take_outputs() {
            match out {
                Output::Console(bytes) => console.write(&bytes)?,
                other => tracing::warn!("no backend for output {other:?}"),
            }
        }
        match stop {
            Stop::Limit => {}
            Stop::Idle { wake_at } => {
                let wait = match wake_at {
                    Some(t) => {
                        let target =
                            Duration::from_nanos(t.saturating_mul(1_000_000_000 / TIMEBASE_HZ));
                        target.saturating_sub(start.elapsed()).min(MAX_IDLE_WAIT)
                    }
                    None => MAX_IDLE_WAIT,
                };
                match console.receiver() {
                    Some(rx) => match rx.recv_timeout(wait) {
                        Ok(bytes) => pending.push(bytes),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wait),
                    },
                    None => std::thread::sleep(wait),
                }
            }
            Stop::Finished(Finisher::Pass) => break 0,
            Stop::Finished(Finisher::Fail(code)) => break (code as u8).max(1),
            Stop::Finished(Finisher::Reset) => {
                eprint!("\r\nftvm: the guest requested a reset; exiting\r\n");
                break 0;
            }
        }
    };
    drop(console);
    if args.stats {
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "ftvm: {} steps in {:.3} s ({:.1} MIPS)",
            machine.icount(),
            secs,
            machine.icount() as f64 / secs / 1e6
        );
    }
    Ok(code)
}
