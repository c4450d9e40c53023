//! `ftvm`: the command line. Parses arguments, turns errors into one clear
//! line and an exit status, and hands each subcommand to its module.

mod arbiter_cmd;
mod certs_cmd;
mod dashboard_cmd;
mod demo;
mod replay;
mod run;
mod status_cmd;
mod storage_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ftvm_node::ft;
use ftvm_node::tls_args;

#[derive(Parser)]
#[command(
    name = "ftvm",
    version,
    about = "Fault-tolerant virtual machines: a deterministic RV64GC machine emulator",
    long_about = "ftvm runs a RISC-V (RV64GC) guest on a deterministic machine emulator whose \
                  instruction count is exact, the foundation for record/replay and \
                  primary/backup fault tolerance."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a guest. With no options, boots the image built by guest/build.sh.
    Run(run::RunArgs),
    /// Run like `run`, writing every input to a log for `ftvm replay`.
    Record(run::RecordArgs),
    /// Re-execute a recorded log without host I/O and check it matches
    /// (exit 0; 3 if it diverges; 5 if the log was cut short, replayed and
    /// matched up to its last complete entry).
    Replay(replay::ReplayArgs),
    /// Run the guest as the primary of a fault-tolerant pair: stream every
    /// input to the backup, release outputs once it has them.
    Primary(ft::primary::PrimaryArgs),
    /// Follow a primary by re-executing its log; take over when it dies.
    ///
    /// The machine options must describe the primary's machine (images,
    /// memory, devices, MACs): the handshake checks it. The kernel command
    /// line (--append is ignored), the RNG seed and the boot time come from
    /// the primary. TAP devices are attached at startup but not used until
    /// the backup goes live; drives are opened then (with --local-disks,
    /// the backup's own copies at startup).
    Backup(ft::backup::BackupArgs),
    /// A fault-tolerant redis on this machine: storage, primary and backup
    /// in network namespaces; kill the primary and watch the backup take over.
    Demo(demo::DemoArgs),
    /// Show the status of an `ftvm primary` or `ftvm backup` (its --status address).
    Status(status_cmd::StatusArgs),
    /// Serve disk images over NBD and the arbiter (the shared storage host).
    Storage(storage_cmd::StorageArgs),
    /// Query or advance the arbiter of a running `ftvm storage`.
    Arbiter(arbiter_cmd::ArbiterArgs),
    /// Make the CA, certificates and keys for TLS (`ftvm certs init DIR`).
    Certs(certs_cmd::CertsArgs),
    /// A live web page of FT pairs: roles, generation, lag, log bandwidth,
    /// hold time, MIPS, failovers and joins (polls their --status).
    Dashboard(dashboard_cmd::DashboardArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FTVM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Record(args) => run::record(args),
        Command::Replay(args) => replay::replay(args),
        Command::Primary(args) => ft::primary::primary(args),
        Command::Backup(args) => ft::backup::backup(args),
        Command::Status(args) => status_cmd::status(args),
        Command::Demo(args) => demo::demo(args),
        Command::Storage(args) => storage_cmd::storage(args),
        Command::Arbiter(args) => arbiter_cmd::arbiter(args),
        Command::Certs(args) => certs_cmd::certs(args),
        Command::Dashboard(args) => dashboard_cmd::dashboard(args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ftvm: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
