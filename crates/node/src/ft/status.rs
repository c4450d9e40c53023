//! Observability of an FT process: the driver publishes a [`Report`] (the
//! core's status plus what only the driver knows — execution speed, log
//! bandwidth over the last second, whether outputs flow) a few times a
//! second — with the output hold times per hop and the last failover's
//! timeline — and `--status ADDR` serves the latest one as a line of JSON to
//! every TCP connection, answered on the driver's event loop; [`fetch`] reads one (`ftvm status ADDR` prints it).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::reactor::Reactor;

/// What `ftvm status` shows.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Report {
    pub vm: String,
    /// "primary" or "backup": what this process was started as.
    pub started_as: String,
    /// The protocol phase: paired, alone, following, draining,
    /// arbitrating, live, halted (or "waiting" before the first contact).
    pub phase: String,
    pub generation: u64,
    pub connected: bool,
    pub peer: Option<String>,
    pub uptime_s: f64,
    /// Guest instructions executed (on a backup: replayed).
    pub icount: u64,
    /// Guest instructions per second over the last report interval.
    pub mips: f64,
    pub log_seq: u64,
    pub acked_seq: u64,
    pub executed_seq: u64,
    pub lag_instructions: u64,
    pub lag_ms: Option<u64>,
    /// A following backup: state digests compared with the primary's and
    /// found equal (a mismatch ends the backup).
    #[serde(default)]
    pub digests_checked: u64,
    pub held_outputs: usize,
    pub released_outputs: u64,
    pub log_bytes_sent: u64,
    pub log_bytes_received: u64,
    /// Logging-channel traffic (both directions) over the last interval.
    pub log_mbit_s: f64,
    pub throttled_ms: u64,
    pub arbiter_attempts: u32,
    /// Heartbeat intervals beyond the first that passed without a word
    /// from the peer (the failure detector's count).
    #[serde(default)]
    pub heartbeats_missed: u64,
    /// Set once this process went live (backup) or alone (primary), and
    /// cleared when a new backup joins.
    pub solo_since_s: Option<f64>,
    /// Backups that joined this process (re-protection).
    pub joins: u64,
    /// Duration of the last join, from the request to the new pair.
    pub last_join_s: Option<f64>,
    /// How long the guest was paused for the last join.
    pub last_join_pause_ms: Option<f64>,
    pub halted: Option<String>,
    /// Output hold times (produced → released) while paired, over the last
    /// outputs released.
    #[serde(default)]
    pub hold: Option<HoldReport>,
    /// The last failover this process took part in as the survivor.
    #[serde(default)]
    pub failover: Option<Timeline>,
}

/// Percentiles of the output rule's cost, in microseconds, over the last
/// [`HOLD_WINDOW`] outputs released while paired, split by hop: produced →
/// its marker written to the logging socket (`to_send`), written → the
/// acknowledgement covering it read (`round_trip`), read → released
/// (`to_release`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HoldReport {
    pub samples: usize,
    pub hold_us_p50: f64,
    pub hold_us_p99: f64,
    pub hold_us_max: f64,
    pub to_send_us_p50: f64,
    pub round_trip_us_p50: f64,
    pub round_trip_us_p99: f64,
    pub to_release_us_p50: f64,
}

/// How many released outputs [`HoldStats`] remembers.
pub const HOLD_WINDOW: usize = 16384;

/// The per-hop times of the outputs released lately (a ring).
#[derive(Default)]
pub struct HoldStats {
    /// (hold, to_send, round_trip, to_release) in microseconds.
    samples: Vec<[f64; 4]>,
    next: usize,
}

impl HoldStats {
    /// One released output: when it was produced, its marker written, the
    /// acknowledgement read, and now (released). Returns its hops in
    /// microseconds: hold, to_send, round_trip, to_release.
    pub fn add(
        &mut self,
        produced: Instant,
        sent: Instant,
        acked: Instant,
        released: Instant,
    ) -> [f64; 4] {
        let us = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1e6;
        let s = [
            us(produced, released),
            us(produced, sent),
            us(sent, acked),
            us(acked, released),
        ];
        if self.samples.len() < HOLD_WINDOW {
            self.samples.push(s);
        } else {
            self.samples[self.next] = s;
        }
        self.next = (self.next + 1) % HOLD_WINDOW;
        s
    }

    pub fn report(&self) -> Option<HoldReport> {
        if self.samples.is_empty() {
            return None;
        }
        let col = |i: usize| {
            let mut v: Vec<f64> = self.samples.iter().map(|s| s[i]).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let pct = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let (hold, send, rt, rel) = (col(0), col(1), col(2), col(3));
        Some(HoldReport {
            samples: hold.len(),
            hold_us_p50: pct(&hold, 0.5),
            hold_us_p99: pct(&hold, 0.99),
            hold_us_max: pct(&hold, 1.0),
            to_send_us_p50: pct(&send, 0.5),
            round_trip_us_p50: pct(&rt, 0.5),
            round_trip_us_p99: pct(&rt, 0.99),
            to_release_us_p50: pct(&rel, 0.5),
        })
    }
}

/// A failover as the survivor saw it, in milliseconds since this process
/// started: the last frame heard from the peer, when it was suspected
/// dead, (backup) when the log was drained, the arbiter's answer, going
/// live (backup) or alone (primary), and the first output released after.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Timeline {
    /// "backup went live" or "primary went alone".
    pub what: String,
    /// Backup: the last log entry received.
    pub last_entry_ms: Option<u64>,
    pub last_heard_ms: Option<u64>,
    pub suspected_ms: Option<u64>,
    pub drained_ms: Option<u64>,
    pub arbiter_answer_ms: Option<u64>,
    pub took_over_ms: Option<u64>,
    pub first_output_ms: Option<u64>,
}

impl Timeline {
    /// One line for the log, relative to the last frame heard.
    pub fn describe(&self) -> String {
        let base = self.last_heard_ms.or(self.suspected_ms).unwrap_or(0);
        let rel = |t: Option<u64>| match t {
            Some(t) if t < base => format!("-{} ms", base - t),
            Some(t) => format!("+{} ms", t - base),
            None => "-".into(),
        };
        format!(
            "{}: last heard from the peer at {} ms; last log entry {}, suspected {}, drained {}, arbiter answered {}, took over {}, first output {}",
            self.what,
            base,
            rel(self.last_entry_ms),
            rel(self.suspected_ms),
            rel(self.drained_ms),
            rel(self.arbiter_answer_ms),
            rel(self.took_over_ms),
            rel(self.first_output_ms)
        )
    }
}

/// The latest report, shared with the event loop that serves it.
#[derive(Clone, Default)]
pub struct Board {
    latest: Arc<Mutex<String>>,
    last: Arc<Mutex<Option<(Instant, u64, u64)>>>,
}

impl Board {
    /// Publishes `r`, filling in the rates from the previous publication.
    pub fn publish(&self, mut r: Report) {
        let now = Instant::now();
        let bytes = r.log_bytes_sent + r.log_bytes_received;
        if let Ok(mut last) = self.last.lock() {
            if let Some((t, icount, b)) = *last {
                let dt = now.duration_since(t).as_secs_f64().max(1e-6);
                r.mips = r.icount.saturating_sub(icount) as f64 / dt / 1e6;
                r.log_mbit_s = bytes.saturating_sub(b) as f64 * 8.0 / dt / 1e6;
            }
            *last = Some((now, r.icount, bytes));
        }
        if let (Ok(json), Ok(mut l)) = (serde_json::to_string(&r), self.latest.lock()) {
            *l = json;
        }
    }

    /// Serves the latest report to every connection on `addr`, from the
    /// driver's event loop.
    pub fn serve(&self, addr: SocketAddr, reactor: &mut Reactor) -> Result<SocketAddr> {
        reactor.serve_status(addr, self.latest.clone())
    }
}

/// Fetches one report.
pub fn fetch(addr: SocketAddr) -> Result<Report> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("cannot reach the status endpoint at {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut body = String::new();
    s.read_to_string(&mut body)
        .with_context(|| format!("cannot read the status from {addr}"))?;
    serde_json::from_str(body.trim())
        .with_context(|| format!("{addr} did not answer with an ftvm status report"))
}

/// The numbers of a report that the FT metrics mirror
/// ([`ftvm_metrics::FtMetrics::status`]).
pub fn sample(r: &Report, is_primary: bool) -> ftvm_metrics::StatusSample {
    ftvm_metrics::StatusSample {
        is_primary,
        phase: ftvm_metrics::vm::PHASES
            .iter()
            .find(|p| **p == r.phase)
            .copied()
            .unwrap_or("waiting"),
        generation: r.generation,
        connected: r.connected,
        lag_instructions: r.lag_instructions,
        lag_seconds: r.lag_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        held_outputs: r.held_outputs,
        released_outputs: r.released_outputs,
        throttled_ms: r.throttled_ms,
        log_bytes_sent: r.log_bytes_sent,
        log_bytes_received: r.log_bytes_received,
        log_entries: r.log_seq,
        acked_entries: r.acked_seq,
        heartbeats_missed: r.heartbeats_missed,
        arbiter_requests: u64::from(r.arbiter_attempts),
        digests_passed: r.digests_checked,
    }
}
