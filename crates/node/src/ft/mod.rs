//! `ftvm primary` and `ftvm backup`: the drivers that wire the sans-I/O
//! protocol cores of `ftvm-ft` to a real machine, a TCP logging connection,
//! the arbiter of `ftvm storage`, the host clock and the guest's devices.
//!
//! - [`primary`]: runs the guest with real I/O, turns every input into a log
//!   entry, holds every output (console bytes, transmitted frames, disk
//!   requests) until the backup acknowledged the entry that follows it, and
//!   obeys the core's throttling. The same loop, without a core, runs a
//!   backup that went live.
//! - [`backup`]: takes the machine description from the primary's Hello,
//!   re-executes the log entry by entry, checks the primary's output hashes
//!   and digests, and on failover drains the log, asks the arbiter and, if
//!   it won, attaches the real network and disk and carries on live.
//! - [`link`], [`arbiter`], [`status`]: the logging connection on the
//!   driver's event loop, test-and-set requests, and the status endpoint.
//! - [`secure`]: TLS on the logging and join channels, and who may be a
//!   peer (a host of this VM).
//! - [`test_fault`]: the hidden `--test-fault STEP:KIND` (a fault at an
//!   exact guest instruction, for fault campaigns).
//!
//! The log entries are the record/replay codec's records (`ftvm-replay`):
//! inputs, an `Outputs` marker after every quantum that produced outputs
//! (the entry those outputs depend on), and periodic state digests.

pub mod arbiter;
pub mod backup;
pub mod join;
pub mod link;
pub mod primary;
pub mod secure;
pub mod status;
pub mod test_fault;

use std::net::SocketAddr;
use std::time::Instant;

use clap::Args;
use ftvm_ft::Config;
use ftvm_machine::layout::TIMEBASE_HZ;

/// Exit status of a process the protocol halted (it lost the arbiter, could
/// not reach it, or was told to stop): its partner (or nobody) runs the VM.
pub const EXIT_HALTED: u8 = 4;
/// Exit status of a backup whose re-execution diverged from the primary.
pub const EXIT_DIVERGED: u8 = 3;

/// Steps per turn of an FT driver's loop: the most a turn runs before the
/// host clock is read again and the core sees progress. Turns end sooner
/// when the guest produces outputs or host input arrives.
pub const FT_QUANTUM: u64 = 200_000;
/// Steps between two looks at the event loop while a guest runs or
/// replays (some tens of microseconds): bounds how long an acknowledgement
/// (primary), a log entry to acknowledge (backup) or a host event waits for
/// the machine, at the cost of one `epoll_wait` per slice.
pub const SLICE: u64 = 4_000;

/// Options both sides of a pair share.
#[derive(Args, Debug, Clone)]
pub struct FtArgs {
    /// Name of the VM; both sides and the arbiter use it.
    #[arg(long, default_value = "vm0")]
    pub vm: String,
    /// Generation of this pair. Raise it for every new pair of the same VM:
    /// processes of an older generation can never win the arbiter.
    #[arg(long, default_value_t = 1)]
    pub generation: u64,
    /// The arbiter: HOST:PORT of `ftvm storage --arbiter-listen`, or an etcd
    /// cluster as etcd://HOST:PORT[,HOST:PORT...]/PREFIX (plain HTTP; give
    /// several members so a dead one does not matter).
    #[arg(long, value_name = "HOST:PORT|etcd://...")]
    pub arbiter: arbiter::ArbiterAddr,
    /// Serve status reports (JSON) on this address; read them with `ftvm status`.
    #[arg(long, value_name = "HOST:PORT")]
    pub status: Option<SocketAddr>,
    /// Serve Prometheus metrics (OpenMetrics text at /metrics) on this
    /// address: the guest, its devices and the FT protocol (role, phase,
    /// lag, held outputs, the logging channel, failovers, joins).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Heartbeat interval on the logging channel.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    pub heartbeat_ms: u64,
    /// Silence after which the peer is declared dead (at least two
    /// heartbeats). Shorter means faster failover and more false ones when
    /// a host stalls; a false failover is safe (the arbiter lets one side
    /// on, the other halts) but leaves the VM unprotected until a backup
    /// joins.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub failure_timeout_ms: u64,
    /// Execution lag above which the primary slows itself down.
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub lag_target_ms: u64,
    /// Primary: how long to wait for the backup to first connect before
    /// asking the arbiter to run alone.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub startup_timeout_ms: u64,
    /// Halt if the arbiter has not answered a failover this long.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub arbiter_deadline_ms: u64,
    /// Accept new backups (`ftvm backup --join`) on this address whenever
    /// this process runs the guest without one (re-protection).
    #[arg(long, value_name = "HOST:PORT")]
    pub join_listen: Option<SocketAddr>,
    /// Non-shared disks: each side's `--drive file=` is its own copy (they
    /// must start identical). The backup performs the guest's disk writes
    /// on its copy and serves reads from it, so reads are not shipped in
    /// the log; a joining backup receives the disk with the memory. Both
    /// sides must agree (the handshake checks it).
    #[arg(long)]
    pub local_disks: bool,
    /// TLS for every channel: the logging and join channels, NBD and the
    /// arbiter. The certificate is this host's (`ftvm certs init`:
    /// host-NAME/server-cert.pem, listing this VM).
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    /// What `tls` loaded ([`FtArgs::load_tls`]); `None` with `--insecure`.
    #[arg(skip)]
    pub secure: Option<secure::FtTls>,
}

impl FtArgs {
    /// Loads the TLS files (or accepts `--insecure`, with its warning) into
    /// `secure`; `command` names the command in messages.
    pub fn load_tls(&mut self, command: &str) -> anyhow::Result<()> {
        self.secure = match self.tls.files(command)? {
            Some(files) => Some(secure::FtTls::load(&files, &self.vm)?),
            None => None,
        };
        Ok(())
    }

    /// The client setup for `ftvm storage` (NBD disks and the arbiter).
    pub fn storage_tls(&self) -> Option<ftvm_tls::ClientTls> {
        self.secure.as_ref().map(|s| s.storage().clone())
    }
}

impl FtArgs {
    /// The identity both sides must share: the machine's, and the disk mode.
    pub fn identity(&self, cfg: &ftvm_machine::MachineConfig) -> [u8; 32] {
        let mut id = ftvm_replay::pair_identity(cfg);
        if self.local_disks {
            // A different identity, so a pair whose sides disagree is refused.
            for (i, b) in id.iter_mut().enumerate() {
                *b ^= b"ftvm local disks, not shared ..."[i];
            }
        }
        id
    }
}

/// What a process running the guest needs to form a new pair with a
/// joining backup.
#[derive(Clone, Debug)]
pub struct FtSettings {
    pub ft: FtArgs,
    /// `pair_identity` of the machine.
    pub identity: [u8; 32],
    /// The log header the primary sends in its Hello.
    pub log_header: Vec<u8>,
    pub digest_interval: u64,
    /// The generation of the pair this process belongs to now.
    pub generation: u64,
    /// With `--local-disks`: the image file of each drive, by virtio slot,
    /// which a joining backup receives a copy of.
    pub local_drives: Vec<(u8, std::path::PathBuf)>,
}

/// The image files of `drives` by slot (drives take the first slots), for
/// `FtSettings::local_drives`; empty unless `--local-disks`.
pub fn local_drives(
    ft: &FtArgs,
    drives: &[crate::devices::DriveSpec],
) -> Vec<(u8, std::path::PathBuf)> {
    if !ft.local_disks {
        return Vec::new();
    }
    drives
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.source {
            crate::devices::DriveSource::File(p) => Some((i as u8, p.clone())),
            crate::devices::DriveSource::Nbd { .. } => None,
        })
        .collect()
}

impl FtArgs {
    pub fn config(&self, machine_hash: [u8; 32]) -> Config {
        let mut c = Config::new(self.vm.clone(), self.generation, machine_hash);
        c.heartbeat_interval_ms = self.heartbeat_ms;
        c.failure_timeout_ms = self.failure_timeout_ms;
        c.handshake_timeout_ms = c.handshake_timeout_ms.min(self.failure_timeout_ms);
        c.lag_target_ms = self.lag_target_ms;
        c.startup_timeout_ms = self.startup_timeout_ms.max(self.failure_timeout_ms);
        c.arbiter_deadline_ms = self.arbiter_deadline_ms;
        c
    }
}

/// Milliseconds and guest ticks since a process-local origin.
#[derive(Clone, Copy)]
pub struct Clock {
    start: Instant,
    /// Guest ticks at `start` (a backup that went live continues the
    /// primary's guest time from where the log left it).
    base_ticks: u64,
}

impl Clock {
    pub fn new(base_ticks: u64) -> Clock {
        Clock {
            start: Instant::now(),
            base_ticks,
        }
    }

    /// The instant this clock counts from.
    pub fn start(&self) -> Instant {
        self.start
    }

    pub fn ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// How long to sleep until `deadline_ms` (a core's next timeout), at
    /// most `cap`.
    pub fn until(&self, deadline_ms: Option<u64>, cap: std::time::Duration) -> std::time::Duration {
        match deadline_ms {
            Some(t) => std::time::Duration::from_millis(t.saturating_sub(self.ms())).min(cap),
            None => cap,
        }
    }

    pub fn ticks(&self) -> u64 {
        self.base_ticks
            + (self.start.elapsed().as_nanos() * TIMEBASE_HZ as u128 / 1_000_000_000) as u64
    }
}
