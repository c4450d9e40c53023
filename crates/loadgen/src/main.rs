//! ftvm-loadgen: the client that end-to-end failover tests and benchmarks run
//! against redis inside the guest. `write` drives one long-lived connection
//! and records which writes were acknowledged and how long the service
//! stalled; `verify` checks afterwards that every acknowledged write is still
//! there; `ping` waits for the server to come up. Blocking sockets and one
//! thread, no async runtime, and a hand-written minimal RESP codec.
//!
//! Exit status: 0 success; 1 `write` could not start, `verify` found missing
//! or wrong keys, or `ping` got no PONG in time; 2 the connection failed
//! during `write` (closed, reset, reply timeout, bad reply) or `verify` could
//! not complete; 64 bad command line.

mod conn;
mod keys;
mod ping;
mod resp;
mod stats;
mod verify;
mod write;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ftvm-loadgen",
    version,
    about = "Redis load generator for ftvm failover tests and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// SET prefix:0, prefix:1, ... over one connection that is never re-established.
    Write(WriteArgs),
    /// GET every acknowledged key of a write run and check its value.
    Verify(VerifyArgs),
    /// Wait until the server answers PING with PONG.
    Ping(PingArgs),
}

#[derive(clap::Args)]
struct WriteArgs {
    /// Redis server, host:port.
    #[arg(long)]
    addr: String,
    /// Keys are PREFIX:0, PREFIX:1, ...
    #[arg(long)]
    prefix: String,
    /// Stop after this many acknowledged writes.
    #[arg(long)]
    count: Option<u64>,
    /// Stop after this many seconds (fractions allowed).
    #[arg(long, value_parser = parse_seconds)]
    duration: Option<Duration>,
    /// Requests outstanding at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=65536))]
    pipeline: u32,
    /// Bytes per value.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=64 * 1024 * 1024))]
    value_size: u32,
    /// Append each acknowledged index to this file (truncated at start).
    #[arg(long)]
    acked_file: Option<PathBuf>,
    /// Write the JSON report here instead of to stdout.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Stop once this file exists.
    #[arg(long)]
    until_file: Option<PathBuf>,
    /// Write index,sent_us,acked_us of every acknowledged write here (CSV).
    #[arg(long)]
    ops_file: Option<PathBuf>,
    /// Longest wait for one reply before the run fails.
    #[arg(long, default_value_t = 30_000)]
    op_timeout_ms: u64,
    /// Longest wait for the connection to be established.
    #[arg(long, default_value_t = 5_000)]
    connect_timeout_ms: u64,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// Redis server, host:port.
    #[arg(long)]
    addr: String,
    /// The prefix the write run used.
    #[arg(long)]
    prefix: String,
    /// The acked file the write run produced.
    #[arg(long)]
    acked_file: PathBuf,
    /// The value size the write run used.
    #[arg(long, default_value_t = 64)]
    value_size: u32,
    /// GETs per pipelined batch.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Longest wait for one reply.
    #[arg(long, default_value_t = 30_000)]
    op_timeout_ms: u64,
    /// Longest wait for the connection to be established.
    #[arg(long, default_value_t = 5_000)]
    connect_timeout_ms: u64,
}

#[derive(clap::Args)]
struct PingArgs {
    /// Redis server, host:port.
    #[arg(long)]
    addr: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let secs: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?} is not a valid duration"))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(64)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Write(args) => write_command(args),
        Command::Verify(args) => verify_command(args),
        Command::Ping(args) => ping_command(args),
    }
}

fn write_command(args: WriteArgs) -> ExitCode {
    let opts = write::WriteOptions {
        addr: args.addr,
        prefix: args.prefix,
        count: args.count,
        duration: args.duration,
        pipeline: args.pipeline as usize,
        value_size: args.value_size as usize,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        acked_file: args.acked_file,
        report: args.report,
        until_file: args.until_file,
        ops_file: args.ops_file,
    };
    write::install_signal_handlers();
    let result = write::run(&opts).and_then(|report| {
        emit_json(&report, opts.report.as_ref())?;
        Ok(report)
    });
    match result {
        Ok(report) => {
            eprintln!(
                "ftvm-loadgen: stopped ({}): {} acked in {:.1}s ({:.0} ops/s), max gap {:.1} ms{}",
                report.stop_reason.name(),
                report.ops_acked,
                report.duration_s,
                report.throughput_ops_s,
                report.max_gap_ms.unwrap_or(0.0),
                report
                    .error
                    .as_ref()
                    .map_or(String::new(), |e| format!(", error: {e}")),
            );
            if report.failure.is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("ftvm-loadgen: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn verify_command(args: VerifyArgs) -> ExitCode {
    let opts = verify::VerifyOptions {
        addr: args.addr,
        prefix: args.prefix,
        acked_file: args.acked_file,
        value_size: args.value_size as usize,
        batch: args.batch as usize,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
    };
    match verify::run(&opts).and_then(|report| {
        emit_json(&report, None)?;
        Ok(report)
    }) {
        Ok(report) if report.ok() => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ftvm-loadgen: verify: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn ping_command(args: PingArgs) -> ExitCode {
    match ping::run(&args.addr, Duration::from_millis(args.timeout_ms)) {
        Ok(attempts) => {
            eprintln!(
                "ftvm-loadgen: {} answered PONG (attempt {attempts})",
                args.addr
            );
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("ftvm-loadgen: no PONG from {}: {problem}", args.addr);
            ExitCode::from(1)
        }
    }
}

/// Prints `value` as one line of JSON to stdout, or writes it to `path`
/// (through a temporary file and a rename, so a reader never sees half).
fn emit_json<T: serde::Serialize>(value: &T, path: Option<&PathBuf>) -> Result<()> {
    let text = serde_json::to_string(value).context("cannot encode the report")?;
    match path {
        None => {
            println!("{text}");
            Ok(())
        }
        Some(path) => {
            let mut tmp = path.clone().into_os_string();
            tmp.push(".tmp");
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, format!("{text}\n"))
                .and_then(|()| std::fs::rename(&tmp, path))
                .with_context(|| format!("cannot write report {}", path.display()))
        }
    }
}
