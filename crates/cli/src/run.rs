//! `ftvm run` and `ftvm record`: build a machine from the command line and
//! drive it in real time; `record` also writes every input to a log that
//! `ftvm replay` re-executes.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Args;
use ftvm_machine::Machine;
use ftvm_replay::Recorder;

use ftvm_node::console::ConsoleTarget;
use ftvm_node::devices::DriveSource;
use ftvm_node::driver::{self, Driver, Options};
use ftvm_node::machine_args::MachineArgs;
use ftvm_node::metrics::VmMetrics;

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub machine: MachineArgs,
    /// Where console output goes: stdio, null, or file:PATH.
    #[arg(long, value_name = "TARGET", default_value = "stdio")]
    pub console: ConsoleTarget,
    /// Do not read console input from stdin.
    #[arg(long)]
    pub no_input: bool,
    /// Stop after this many steps (instructions), exiting with status 0.
    #[arg(long, value_name = "N")]
    pub max_steps: Option<u64>,
    /// Print steps executed, wall time and MIPS on exit.
    #[arg(long)]
    pub stats: bool,
    /// Serve Prometheus metrics (OpenMetrics text at /metrics) on this
    /// address: instructions, exits, disk and network I/O.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<std::net::SocketAddr>,
    /// TLS to the NBD server of `--drive nbd://…` (needed only then): this
    /// host's certificate (e.g. DIR/host-NAME/client-cert.pem from `ftvm
    /// certs init DIR`), or --insecure.
    #[command(flatten)]
    pub tls: ftvm_node::tls_args::TlsArgs,
}

impl RunArgs {
    /// Loads the TLS options into the machine's NBD drives when it has any.
    fn load_tls(&mut self, command: &str) -> Result<()> {
        if self.machine.has_nbd() {
            self.machine.nbd_tls = self.tls.client(command, ftvm_tls::Role::Storage)?;
        }
        Ok(())
    }
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The log file to write.
    #[arg(long, value_name = "FILE")]
    pub log: PathBuf,
    /// Write a state digest every N steps (0: only at the end).
    #[arg(long, value_name = "N", default_value_t = 100_000_000)]
    pub digest_interval: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

fn print_stats(stats: bool, machine: &Machine, secs: f64) {
    if stats {
        eprintln!(
            "ftvm: {} steps in {:.3} s ({:.1} MIPS)",
            machine.icount(),
            secs,
            machine.icount() as f64 / secs / 1e6
        );
        let j = machine.hart.jit_stats();
        if machine.hart.engine() == ftvm_cpu::Engine::Jit {
            eprintln!(
                "ftvm: jit: {} blocks translated, {} steps translated ({:.1} %), {} entries, {} flushes",
                j.blocks,
                j.steps,
                100.0 * j.steps as f64 / machine.icount().max(1) as f64,
                j.entries,
                j.flushes
            );
        }
    }
}

fn options(args: &RunArgs, command: &str) -> Result<Options> {
    let (metrics, bound) = VmMetrics::start(None, None, args.metrics)?;
    if let Some(a) = bound {
        eprintln!("ftvm: {command}: metrics on http://{a}/metrics");
    }
    Ok(Options {
        console: args.console.clone(),
        read_input: !args.no_input,
        max_steps: args.max_steps,
        metrics,
    })
}

pub fn run(mut args: RunArgs) -> Result<u8> {
    args.load_tls("run")?;
    let (cfg, _, backends) = args.machine.build()?;
    let machine = Machine::new(&cfg).context("cannot build the machine")?;
    driver::install_signal_handlers();
    let mut d = Driver::new(machine, backends, options(&args, "run")?, None)?;
    let ended = d.run()?;
    let secs = d.elapsed().as_secs_f64();
    let machine = d.finish(ended.reason)?;
    print_stats(args.stats, &machine, secs);
    Ok(ended.exit_code)
}

pub fn record(mut args: RecordArgs) -> Result<u8> {
    args.run.load_tls("record")?;
    let (cfg, paths, backends) = args.run.machine.build()?;
    let machine = Machine::new(&cfg).context("cannot build the machine")?;
    let created = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    // The disks' contents at the start identify the run too (replay itself
    // never reads them: every read is in the log). An NBD disk is not hashed
    // — reading a whole remote export at start is slow and its contents can
    // change under us anyway — so the header then does not identify it.
    let mut disks = Vec::new();
    for (i, d) in args.run.machine.drives.iter().enumerate() {
        let path = match &d.source {
            DriveSource::File(path) => path,
            DriveSource::Nbd { .. } => {
                eprintln!(
                    "ftvm: drive {} is not hashed: the log header does not identify its contents",
                    d.source
                );
                continue;
            }
        };
        if path
            .metadata()
            .map(|m| m.len() > (1 << 30))
            .unwrap_or(false)
        {
            eprintln!(
                "ftvm: hashing disk image {} for the log header...",
                path.display()
            );
        }
        disks.push(
            ftvm_replay::file_image_id(&format!("disk{i}"), path)
                .with_context(|| format!("cannot read disk image {}", path.display()))?,
        );
    }
    let header =
        ftvm_replay::log_header(&cfg, paths.as_pairs(), disks, args.digest_interval, created);
    let file = File::create(&args.log)
        .with_context(|| format!("cannot create log {}", args.log.display()))?;
    let recorder = Recorder::new(BufWriter::with_capacity(1 << 20, file), &header)
        .with_context(|| format!("cannot write log {}", args.log.display()))?;
    driver::install_signal_handlers();
    let mut d = Driver::new(
        machine,
        backends,
        options(&args.run, "record")?,
        Some(recorder),
    )?;
    let ended = d.run()?;
    let secs = d.elapsed().as_secs_f64();
    let machine = d.finish(ended.reason)?;
    print_stats(args.run.stats, &machine, secs);
    Ok(ended.exit_code)
}
