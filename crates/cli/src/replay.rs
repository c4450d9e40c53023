//! `ftvm replay`: re-executes a recorded log with no host I/O at all — no
//! TAP, no disk, no clock; disk reads, frames and time come from the log —
//! checks every digest and output hash, and on a mismatch reports the step
//! range in which the executions parted and what differs. It can also save a
//! snapshot at a given step, or start from one.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use ftvm_log::SliceReader;
use ftvm_machine::{Machine, MachineConfig, Output};
use ftvm_replay::{recorded_config, ReplayError, Replayer};

use ftvm_node::console::{Console, ConsoleTarget};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// The log written by `ftvm record`.
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// Firmware to use instead of the path recorded in the log (its hash must match).
    #[arg(long, value_name = "PATH")]
    pub bios: Option<PathBuf>,
    /// Kernel to use instead of the path recorded in the log (its hash must match).
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initrd to use instead of the path recorded in the log (its hash must match).
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Where the replayed console output goes: stdio, null, or file:PATH.
    #[arg(long, value_name = "TARGET", default_value = "stdio")]
    pub console: ConsoleTarget,
    /// Start from this snapshot instead of booting (entries before its step are skipped).
    #[arg(long, value_name = "FILE")]
    pub restore: Option<PathBuf>,
    /// Save a snapshot when the replay reaches this step (needs --snapshot-out).
    #[arg(long, value_name = "STEP", requires = "snapshot_out")]
    pub snapshot_at: Option<u64>,
    /// Where --snapshot-at writes the snapshot.
    #[arg(long, value_name = "FILE", requires = "snapshot_at")]
    pub snapshot_out: Option<PathBuf>,
    /// Test switch: apply one time input that is not in the log at this
    /// step, to check that the next digest catches it.
    #[arg(long, value_name = "STEP", hide = true)]
    pub inject_unlogged_time_at: Option<u64>,
    /// Print steps, inputs, digests and replay speed at the end.
    #[arg(long)]
    pub stats: bool,
    /// CPU engine for the replay: interp or jit (either replays a log
    /// recorded with either).
    #[arg(
        long,
        value_name = "interp|jit",
        env = "FTVM_CPU",
        default_value = "jit"
    )]
    pub cpu: ftvm_cpu::Engine,
}

/// Exit status when the replay diverges from the recording.
pub const EXIT_DIVERGED: u8 = 3;
/// Exit status when the log was cut short (the recorder was killed or its
/// host crashed) and the replay reached its last complete entry with every
/// check up to there passed.
pub const EXIT_CUT_SHORT: u8 = 5;

fn load_image(
    role: &str,
    recorded: &[(String, String)],
    over: &Option<PathBuf>,
) -> Result<Option<Vec<u8>>> {
    let path = match over {
        Some(p) => p.clone(),
        None => match recorded.iter().find(|(r, _)| r == role) {
            Some((_, p)) => PathBuf::from(p),
            None => return Ok(None),
        },
    };
    let data = std::fs::read(&path).with_context(|| {
        format!(
            "cannot read the {role} image {} named in the log (pass --{} to use another copy)",
            path.display(),
            match role {
                "firmware" => "bios",
                r => r,
            }
        )
    })?;
    Ok(Some(data))
}

pub fn replay(args: ReplayArgs) -> Result<u8> {
    ftvm_cpu::set_default_engine(args.cpu);
    let bytes = std::fs::read(&args.log)
        .with_context(|| format!("cannot read log {}", args.log.display()))?;
    let (header, reader) = SliceReader::new(&bytes)
        .with_context(|| format!("{} is not a usable ftvm log", args.log.display()))?;
    let rc = recorded_config(&header)?;
    let machine = match &args.restore {
        Some(snap) => {
            let f = File::open(snap)
                .with_context(|| format!("cannot open snapshot {}", snap.display()))?;
            let m = Machine::load_snapshot(BufReader::new(f))
                .with_context(|| format!("cannot restore snapshot {}", snap.display()))?;
            if m.ram.size() != rc.spec.ram_size {
                bail!(
                    "snapshot {} has {} MiB of RAM but the log's machine has {} MiB",
                    snap.display(),
                    m.ram.size() >> 20,
                    rc.spec.ram_size >> 20
                );
            }
            m
        }
        None => {
            let bios = load_image("firmware", &rc.image_paths, &args.bios)?;
            let kernel = load_image("kernel", &rc.image_paths, &args.kernel)?
                .ok_or_else(|| anyhow!("the log names no kernel image"))?;
            let initrd = load_image("initrd", &rc.image_paths, &args.initrd)?;
            let cfg = MachineConfig::from_spec(&rc.spec, bios, kernel, initrd);
            // Disk images are identified in the header but not needed here.
            let disks = header
                .images
                .iter()
                .filter(|i| i.role.starts_with("disk"))
                .cloned()
                .collect();
            let expected = ftvm_replay::log_header(
                &cfg,
                rc.image_paths.clone(),
                disks,
                header.digest_interval,
                header.created_unix_ms,
            );
            if let Err(m) = header.check_compatible(&expected) {
                bail!(
                    "{} was recorded with a different machine or images: {m}",
                    args.log.display()
                );
            }
            Machine::new(&cfg).context("cannot build the recorded machine")?
        }
    };
    let mut rp = Replayer::new(machine, reader);
    if args.restore.is_some() {
        let skipped = rp.skip_to_machine()?;
        eprintln!(
            "ftvm: restored at step {}; skipped {skipped} earlier log entries",
            rp.machine().icount()
        );
    }
    if let Some(s) = args.inject_unlogged_time_at {
        rp.inject_unlogged_time_at(s);
    }
    let mut console = Console::open(&args.console, None)?;
    let mut console_err = None;
    let mut on_output = |o: &Output| {
        if let Output::Console(b) = o {
            if let Err(e) = console.write(b) {
                console_err.get_or_insert(e);
            }
        }
    };
    let start = Instant::now();
    let mut snapshot = args.snapshot_at.zip(args.snapshot_out.clone());
    let result = loop {
        if let Some((at, path)) = &snapshot {
            match rp.next_entry_step() {
                Ok(Some(next)) if next >= *at => {
                    if let Err(e) = rp.advance_to(*at, &mut on_output) {
                        break Err(e);
                    }
                    let f = File::create(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut w = BufWriter::new(f);
                    rp.machine()
                        .save_snapshot(&mut w)
                        .context("cannot save the snapshot")?;
                    w.flush().context("cannot save the snapshot")?;
                    eprintln!("ftvm: saved snapshot at step {at} to {}", path.display());
                    snapshot = None;
                }
                Ok(_) => {}
                Err(e) => break Err(e),
            }
        }
        match rp.step(&mut on_output) {
            Ok(Some(outcome)) => break Ok(outcome),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    if let Some(e) = console_err {
        return Err(e);
    }
    let secs = start.elapsed().as_secs_f64();
    match result {
        Ok(outcome) => {
            if args.stats {
                eprintln!(
                    "ftvm: replayed {} steps in {:.3} s ({:.1} MIPS): {} inputs, {} digests verified, end: {:?}",
                    outcome.icount,
                    secs,
                    outcome.icount as f64 / secs / 1e6,
                    outcome.inputs,
                    outcome.digests,
                    outcome.end
                );
            } else {
                eprintln!(
                    "ftvm: replay matched the recording: {} steps, {} digests verified",
                    outcome.icount, outcome.digests
                );
            }
            Ok(0)
        }
        Err(ReplayError::Diverged(d)) => {
            eprintln!("ftvm: {d}");
            Ok(EXIT_DIVERGED)
        }
        Err(ReplayError::CutShort(c)) => {
            eprintln!("ftvm: {c}");
            if let Some((at, _)) = snapshot {
                eprintln!(
                    "ftvm: no snapshot written: --snapshot-at {at} lies past the end of the log"
                );
            }
            if args.stats {
                eprintln!(
                    "ftvm: replayed {} steps in {:.3} s ({:.1} MIPS)",
                    c.at,
                    secs,
                    c.at as f64 / secs / 1e6
                );
            }
            Ok(EXIT_CUT_SHORT)
        }
        Err(e) => Err(e).context("replay failed"),
    }
}
