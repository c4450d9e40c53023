//! The metric families of a VM process (`ftvm run`, `record`, `primary`,
//! `backup`): [`GuestMetrics`] (instructions retired, returns to the host
//! loop by cause), [`DeviceMetrics`] (disk and network I/O by device, as
//! served by the host backends) and [`FtMetrics`] (role, phase,
//! generation, lag, held outputs, the logging channel, failovers, joins and
//! digest checks). Names follow the Prometheus conventions: base units
//! (`_seconds`, `_bytes`), `_total` on counters (added by the encoder).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};
use std::sync::atomic::AtomicU64;

label_values! {
    /// Why the machine returned to the host loop.
    ExitCause {
        /// The step limit of the turn (a quantum, a digest point, a slice).
        Quantum => "quantum",
        /// The hart waits for an interrupt (WFI).
        Idle => "idle",
        /// A device access produced an output the driver must hand on.
        Output => "output",
        /// The guest wrote the test device (power off, reset, pass/fail).
        Finished => "finished",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabel {
    cause: ExitCause,
}

/// What the guest's CPU did.
#[derive(Clone, Debug, Default)]
pub struct GuestMetrics {
    instructions: Counter,
    /// The counters of the `ftvm_guest_exits` family, by `ExitCause as usize`.
    by_cause: Vec<Counter>,
}

impl GuestMetrics {
    pub fn register(r: &mut Registry) -> GuestMetrics {
        let mut m = GuestMetrics::default();
        r.register(
            "ftvm_guest_instructions",
            "Guest instructions retired (machine steps; on a following backup, replayed)",
            m.instructions.clone(),
        );
        let exits = Family::<CauseLabel, Counter>::default();
        r.register(
            "ftvm_guest_exits",
            "Returns of the machine to the host loop, by cause",
            exits.clone(),
        );
        for cause in [
            ExitCause::Quantum,
            ExitCause::Idle,
            ExitCause::Output,
            ExitCause::Finished,
        ] {
            m.by_cause
                .push(exits.get_or_create_owned(&CauseLabel { cause }));
        }
        m
    }

    /// The machine's instruction count now.
    pub fn icount(&self, icount: u64) {
        crate::advance(&self.instructions, icount);
    }

    pub fn exit(&self, cause: ExitCause) {
        if let Some(c) = self.by_cause.get(cause as usize) {
            c.inc();
        }
    }
}

label_values! {
    /// A disk operation.
    DiskOp {
        Read => "read",
        Write => "write",
        Flush => "flush",
        Discard => "discard",
    }
}

label_values! {
    /// A direction of traffic.
    Direction {
        /// Into this process (received frames; on the logging channel,
        /// what the peer sent).
        Rx => "rx",
        /// Out of this process.
        Tx => "tx",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DiskLabels {
    device: String,
    op: DiskOp,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeviceLabel {
    device: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NetLabels {
    device: String,
    direction: Direction,
}

/// Disk and network I/O as the host backends served it, by guest device
/// name (`vda`, `vdb`, ...; `eth0`, ...).
#[derive(Clone, Debug, Default)]
pub struct DeviceMetrics {
    disk_requests: Family<DiskLabels, Counter>,
    disk_bytes: Family<DiskLabels, Counter>,
    disk_errors: Family<DeviceLabel, Counter>,
    disk_seconds: Family<DiskLabels, Counter<f64, AtomicU64>>,
    net_frames: Family<NetLabels, Counter>,
    net_bytes: Family<NetLabels, Counter>,
}

impl DeviceMetrics {
    pub fn register(r: &mut Registry) -> DeviceMetrics {
        let m = DeviceMetrics::default();
        r.register(
            "ftvm_disk_requests",
            "Disk requests served by the host backend, by device and operation",
            m.disk_requests.clone(),
        );
        r.register_with_unit(
            "ftvm_disk",
            "Bytes read from and written to the host backend, by device",
            Unit::Bytes,
            m.disk_bytes.clone(),
        );
        r.register(
            "ftvm_disk_errors",
            "Disk requests the host backend failed (the guest saw an I/O error)",
            m.disk_errors.clone(),
        );
        r.register_with_unit(
            "ftvm_disk_busy",
            "Time the host backend spent serving disk requests, by device and operation",
            Unit::Seconds,
            m.disk_seconds.clone(),
        );
        r.register(
            "ftvm_net_frames",
            "Ethernet frames through the host TAP device, by device and direction",
            m.net_frames.clone(),
        );
        r.register_with_unit(
            "ftvm_net",
            "Ethernet bytes through the host TAP device, by device and direction",
            Unit::Bytes,
            m.net_bytes.clone(),
        );
        m
    }

    /// The counters of the disk `device`, for its backend to update
    /// without a lookup.
    pub fn disk(&self, device: &str) -> DiskMeter {
        let l = |op| DiskLabels {
            device: device.to_string(),
            op,
        };
        let ops = [DiskOp::Read, DiskOp::Write, DiskOp::Flush, DiskOp::Discard];
        DiskMeter {
            requests: ops.map(|op| self.disk_requests.get_or_create_owned(&l(op))),
            bytes: [DiskOp::Read, DiskOp::Write]
                .map(|op| self.disk_bytes.get_or_create_owned(&l(op))),
            seconds: ops.map(|op| self.disk_seconds.get_or_create_owned(&l(op))),
            errors: self.disk_errors.get_or_create_owned(&DeviceLabel {
                device: device.to_string(),
            }),
        }
    }

    /// The counters of the network card `device`.
    pub fn net(&self, device: &str) -> NetMeter {
        let l = |direction| NetLabels {
            device: device.to_string(),
            direction,
        };
        let dirs = [Direction::Rx, Direction::Tx];
        NetMeter {
            frames: dirs.map(|d| self.net_frames.get_or_create_owned(&l(d))),
            bytes: dirs.map(|d| self.net_bytes.get_or_create_owned(&l(d))),
        }
    }
}

/// One disk's counters (see [`DeviceMetrics::disk`]).
#[derive(Clone, Debug)]
pub struct DiskMeter {
    requests: [Counter; 4],
    bytes: [Counter; 2],
    seconds: [Counter<f64, AtomicU64>; 4],
    errors: Counter,
}

impl DiskMeter {
    /// One request served in `seconds`; `bytes` moved (reads and writes).
    pub fn served(&self, op: DiskOp, bytes: u64, seconds: f64, ok: bool) {
        let i = op as usize;
        self.requests[i].inc();
        if i < 2 {
            self.bytes[i].inc_by(bytes);
        }
        self.seconds[i].inc_by(seconds);
        if !ok {
            self.errors.inc();
        }
    }
}

/// One network card's counters (see [`DeviceMetrics::net`]).
#[derive(Clone, Debug)]
pub struct NetMeter {
    frames: [Counter; 2],
    bytes: [Counter; 2],
}

impl NetMeter {
    /// One frame of `bytes` through the host device.
    pub fn frame(&self, direction: Direction, bytes: usize) {
        let i = direction as usize;
        self.frames[i].inc();
        self.bytes[i].inc_by(bytes as u64);
    }
}

/// A phase of an FT process (see `ftvm_ft::Phase`), plus `waiting` before
/// the first contact.
pub const PHASES: [&str; 8] = [
    "waiting",
    "paired",
    "following",
    "draining",
    "arbitrating",
    "alone",
    "live",
    "halted",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: Direction,
}

label_values! {
    /// Whether a check passed.
    CheckResult {
        Passed => "passed",
        Failed => "failed",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: CheckResult,
}

/// The FT protocol as one side of a pair sees it.
#[derive(Clone, Debug)]
pub struct FtMetrics {
    phase: Family<PhaseLabel, Gauge>,
    generation: Gauge,
    connected: Gauge,
    lag_seconds: Gauge<f64, AtomicU64>,
    lag_instructions: Gauge,
    throttled_seconds: Counter<f64, AtomicU64>,
    /// The last sample mirrored (see [`FtMetrics::status`]).
    last: std::sync::Arc<std::sync::Mutex<Option<StatusSample>>>,
    held_outputs: Gauge,
    released_outputs: Counter,
    hold_seconds: Histogram,
    ack_round_trip_seconds: Histogram,
    log_bytes: Family<DirectionLabel, Counter>,
    log_entries: Family<DirectionLabel, Counter>,
    acked_entries: Counter,
    heartbeats_missed: Counter,
    failovers: Counter,
    joins: Counter,
    join_seconds: Histogram,
    join_pause_seconds: Histogram,
    digest_checks: Family<ResultLabel, Counter>,
    arbiter_requests: Counter,
}

/// Buckets from 20 µs to about 5 s (hold times, acknowledgement round trips).
fn latency_buckets() -> Histogram {
    Histogram::new(exponential_buckets(20e-6, 2.0, 18))
}

impl FtMetrics {
    /// Registers the FT families; `started_as` is `primary` or `backup`.
    pub fn register(r: &mut Registry, started_as: &str) -> FtMetrics {
        let m = FtMetrics {
            phase: Family::default(),
            generation: Gauge::default(),
            connected: Gauge::default(),
            lag_seconds: Gauge::default(),
            lag_instructions: Gauge::default(),
            throttled_seconds: Counter::default(),
            last: Default::default(),
            held_outputs: Gauge::default(),
            released_outputs: Counter::default(),
            hold_seconds: latency_buckets(),
            ack_round_trip_seconds: latency_buckets(),
            log_bytes: Family::default(),
            log_entries: Family::default(),
            acked_entries: Counter::default(),
            heartbeats_missed: Counter::default(),
            failovers: Counter::default(),
            joins: Counter::default(),
            join_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            join_pause_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            digest_checks: Family::default(),
            arbiter_requests: Counter::default(),
        };
        r.register(
            "ftvm_ft_process",
            "What this FT process was started as",
            Info::new(vec![("started_as", started_as.to_string())]),
        );
        r.register(
            "ftvm_ft_phase",
            "The protocol phase: 1 for the current one, 0 for the others",
            m.phase.clone(),
        );
        for phase in PHASES {
            let _ = m.phase.get_or_create(&PhaseLabel { phase });
        }
        m.phase
            .get_or_create(&PhaseLabel { phase: "waiting" })
            .set(1);
        r.register(
            "ftvm_ft_generation",
            "Generation of the pair this process belongs to",
            m.generation.clone(),
        );
        r.register(
            "ftvm_ft_connected",
            "1 while a logging connection with a completed handshake is up",
            m.connected.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_lag",
            "How far the backup's execution trails the primary's, in primary execution time",
            Unit::Seconds,
            m.lag_seconds.clone(),
        );
        r.register(
            "ftvm_ft_lag_instructions",
            "How far the backup's execution trails the primary's, in guest instructions",
            m.lag_instructions.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_throttled",
            "Time the primary slowed itself down to keep the lag under target",
            Unit::Seconds,
            m.throttled_seconds.clone(),
        );
        r.register(
            "ftvm_ft_held_outputs",
            "Outputs waiting for the backup's acknowledgement (the output rule)",
            m.held_outputs.clone(),
        );
        r.register(
            "ftvm_ft_released_outputs",
            "Outputs released to the outside world",
            m.released_outputs.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_output_hold",
            "Time from an output's production to its release while paired",
            Unit::Seconds,
            m.hold_seconds.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_ack_round_trip",
            "Time from an output's log marker written to the logging socket to the acknowledgement covering it read",
            Unit::Seconds,
            m.ack_round_trip_seconds.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_log",
            "Logging-channel bytes, by direction",
            Unit::Bytes,
            m.log_bytes.clone(),
        );
        r.register(
            "ftvm_ft_log_entries",
            "Log entries sent (primary) or received (backup)",
            m.log_entries.clone(),
        );
        r.register(
            "ftvm_ft_acked_entries",
            "Log entries acknowledged by the backup (primary: received acks; backup: sent)",
            m.acked_entries.clone(),
        );
        r.register(
            "ftvm_ft_heartbeats_missed",
            "Heartbeat intervals beyond the first that passed without a word from the peer",
            m.heartbeats_missed.clone(),
        );
        r.register(
            "ftvm_ft_failovers",
            "Failovers this process survived (a backup went live, or a primary went alone)",
            m.failovers.clone(),
        );
        r.register(
            "ftvm_ft_joins",
            "New backups that joined this process (re-protection)",
            m.joins.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_join_duration",
            "Time from a join request to the new pair",
            Unit::Seconds,
            m.join_seconds.clone(),
        );
        r.register_with_unit(
            "ftvm_ft_join_pause",
            "Time the guest was paused for a join's final copy",
            Unit::Seconds,
            m.join_pause_seconds.clone(),
        );
        r.register(
            "ftvm_ft_digest_checks",
            "State digests compared with the primary's, by result",
            m.digest_checks.clone(),
        );
        for result in [CheckResult::Passed, CheckResult::Failed] {
            let _ = m.digest_checks.get_or_create(&ResultLabel { result });
        }
        r.register(
            "ftvm_ft_arbiter_requests",
            "Test-and-set requests sent to the arbiter",
            m.arbiter_requests.clone(),
        );
        m
    }

    /// The current phase (one of [`PHASES`]).
    pub fn phase(&self, phase: &str) {
        for p in PHASES {
            self.phase
                .get_or_create(&PhaseLabel { phase: p })
                .set(i64::from(p == phase));
        }
    }

    /// What the core's status and the driver's report say now; totals are
    /// mirrored, gauges set.
    pub fn status(&self, s: &StatusSample) {
        self.phase(s.phase);
        self.generation.set(s.generation as i64);
        self.connected.set(i64::from(s.connected));
        self.lag_instructions.set(s.lag_instructions as i64);
        self.lag_seconds.set(s.lag_seconds);
        self.held_outputs.set(s.held_outputs as i64);
        // The totals come from a protocol core, and a join (or going
        // live) starts a new core from zero: count what was added since
        // the last sample, a total that went down being a new core's.
        let Ok(mut slot) = self.last.lock() else {
            return;
        };
        let last = slot.clone().unwrap_or(StatusSample {
            is_primary: s.is_primary,
            ..StatusSample::default()
        });
        let added = |was: u64, now: u64| if now >= was { now - was } else { now };
        let grow = |c: &Counter, was: u64, now: u64| {
            c.inc_by(added(was, now));
        };
        grow(
            &self.released_outputs,
            last.released_outputs,
            s.released_outputs,
        );
        self.throttled_seconds
            .inc_by(added(last.throttled_ms, s.throttled_ms) as f64 / 1000.0);
        let dir = |direction| DirectionLabel { direction };
        grow(
            &self.log_bytes.get_or_create(&dir(Direction::Tx)),
            last.log_bytes_sent,
            s.log_bytes_sent,
        );
        grow(
            &self.log_bytes.get_or_create(&dir(Direction::Rx)),
            last.log_bytes_received,
            s.log_bytes_received,
        );
        let entries = if s.is_primary {
            Direction::Tx
        } else {
            Direction::Rx
        };
        let was = if s.is_primary == last.is_primary {
            last.log_entries
        } else {
            // Went live: the entries it received are not ones it sent.
            s.log_entries
        };
        grow(
            &self.log_entries.get_or_create(&dir(entries)),
            was,
            s.log_entries,
        );
        grow(&self.acked_entries, last.acked_entries, s.acked_entries);
        grow(
            &self.heartbeats_missed,
            last.heartbeats_missed,
            s.heartbeats_missed,
        );
        grow(
            &self.arbiter_requests,
            last.arbiter_requests,
            s.arbiter_requests,
        );
        grow(
            &self.digest_checks.get_or_create(&ResultLabel {
                result: CheckResult::Passed,
            }),
            last.digests_passed,
            s.digests_passed,
        );
        *slot = Some(s.clone());
    }

    /// One output released while paired: its whole hold and the
    /// acknowledgement's round trip, in seconds.
    pub fn released(&self, hold_s: f64, round_trip_s: f64) {
        self.hold_seconds.observe(hold_s);
        self.ack_round_trip_seconds.observe(round_trip_s);
    }

    /// This process survived a failover.
    pub fn failover(&self) {
        self.failovers.inc();
    }

    /// A backup joined after `duration_s`, the guest paused `pause_s`.
    pub fn joined(&self, duration_s: f64, pause_s: f64) {
        self.joins.inc();
        self.join_seconds.observe(duration_s);
        self.join_pause_seconds.observe(pause_s);
    }

    /// A digest comparison failed (the backup diverged).
    pub fn digest_failed(&self) {
        self.digest_checks
            .get_or_create(&ResultLabel {
                result: CheckResult::Failed,
            })
            .inc();
    }
}

/// The numbers [`FtMetrics::status`] takes from a driver's status report.
#[derive(Clone, Debug, Default)]
pub struct StatusSample {
    pub is_primary: bool,
    pub phase: &'static str,
    pub generation: u64,
    pub connected: bool,
    pub lag_instructions: u64,
    pub lag_seconds: f64,
    pub held_outputs: usize,
    pub released_outputs: u64,
    pub throttled_ms: u64,
    pub log_bytes_sent: u64,
    pub log_bytes_received: u64,
    pub log_entries: u64,
    pub acked_entries: u64,
    pub heartbeats_missed: u64,
    pub arbiter_requests: u64,
    pub digests_passed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    fn text(r: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, r).unwrap();
        s
    }

    #[test]
    fn names_follow_the_conventions() {
        let mut r = crate::vm_registry("vm0");
        let g = GuestMetrics::register(&mut r);
        let d = DeviceMetrics::register(&mut r);
        let f = FtMetrics::register(&mut r, "primary");
        g.icount(1234);
        g.exit(ExitCause::Idle);
        d.disk("vda").served(DiskOp::Read, 4096, 0.001, true);
        d.net("eth0").frame(Direction::Tx, 60);
        let first = StatusSample {
            is_primary: true,
            phase: "paired",
            generation: 3,
            connected: true,
            lag_instructions: 500,
            lag_seconds: 0.002,
            log_bytes_sent: 100,
            log_entries: 7,
            throttled_ms: 1500,
            ..Default::default()
        };
        f.status(&first);
        // A new core (after a join) starts its totals from zero again.
        let next = |bytes| StatusSample {
            log_bytes_sent: bytes,
            log_entries: 3,
            throttled_ms: 500,
            ..first.clone()
        };
        f.status(&next(40));
        f.status(&next(60));
        f.released(0.0003, 0.0002);
        f.failover();
        let t = text(&r);
        for want in [
            "ftvm_guest_instructions_total{vm=\"vm0\"} 1234",
            "ftvm_guest_exits_total{vm=\"vm0\",cause=\"idle\"} 1",
            "ftvm_disk_bytes_total{vm=\"vm0\",device=\"vda\",op=\"read\"} 4096",
            "ftvm_net_frames_total{vm=\"vm0\",device=\"eth0\",direction=\"tx\"} 1",
            "ftvm_ft_phase{vm=\"vm0\",phase=\"paired\"} 1",
            "ftvm_ft_phase{vm=\"vm0\",phase=\"waiting\"} 0",
            "ftvm_ft_generation{vm=\"vm0\"} 3",
            "ftvm_ft_lag_instructions{vm=\"vm0\"} 500",
            "ftvm_ft_lag_seconds{vm=\"vm0\"} 0.002",
            "ftvm_ft_throttled_seconds_total{vm=\"vm0\"} 2",
            "ftvm_ft_log_bytes_total{vm=\"vm0\",direction=\"tx\"} 160",
            "ftvm_ft_log_entries_total{vm=\"vm0\",direction=\"tx\"} 10",
            "ftvm_ft_output_hold_seconds_count{vm=\"vm0\"} 1",
            "ftvm_ft_failovers_total{vm=\"vm0\"} 1",
            "ftvm_ft_process_info{vm=\"vm0\",started_as=\"primary\"} 1",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}
