//! `ftvm-loadgen write`: one TCP connection for the whole run, never
//! re-established, carrying `SET prefix:i value(i)` for i = 0, 1, 2, … with
//! up to `--pipeline` requests outstanding. Every `+OK` is an acknowledged
//! key: its index goes to the acked file and its send and reply times are
//! kept, from which the report's latency percentiles and reply gaps are
//! computed. The run ends cleanly when `--count` operations are acknowledged,
//! `--duration` has passed, the `--until-file` appears (outstanding requests
//! are answered first), or on SIGINT/SIGTERM (immediately; outstanding
//! requests are reported as unacknowledged). It fails — exit status 2 — when
//! the connection breaks, a reply takes longer than `--op-timeout-ms`, or the
//! server sends something that is not RESP or not `+OK`. Either way a report
//! is written, and the acked file is complete up to the last `+OK`.
//!
//! The loop is single-threaded: socket reads wait at most [`POLL`], so
//! between replies it still flushes the acked file every 100 ms, prints
//! progress every second and notices signals, stop files and deadlines.

use std::collections::VecDeque;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::conn::{Conn, ConnError, POLL};

const _: () = assert!(
    POLL.as_millis() < FLUSH_EVERY.as_millis(),
    "reads must wake up between flushes"
);
use crate::keys::{key_for, value_for, AckedLog};
use crate::resp::{encode_command, Reply};
use crate::stats::{percentile, top_gaps};

/// How often the acked file is flushed and the stop file looked for.
const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How many of the longest reply gaps the report lists.
const TOP_GAPS: usize = 3;

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM end a write run cleanly, with a report.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub struct WriteOptions {
    pub addr: String,
    pub prefix: String,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
    pub pipeline: usize,
    pub value_size: usize,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
    pub acked_file: Option<PathBuf>,
    pub report: Option<PathBuf>,
    pub until_file: Option<PathBuf>,
    pub ops_file: Option<PathBuf>,
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Count,
    Duration,
    UntilFile,
    Signal,
    Failure,
}

impl StopReason {
    /// The name the report uses.
    pub fn name(self) -> &'static str {
        match self {
            StopReason::Count => "count",
            StopReason::Duration => "duration",
            StopReason::UntilFile => "until_file",
            StopReason::Signal => "signal",
            StopReason::Failure => "failure",
        }
    }
}

/// What went wrong when a run fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The connection was closed or reset, or a socket call failed.
    Broken,
    /// A reply did not arrive within `--op-timeout-ms`.
    Timeout,
    /// The server sent bytes that are not RESP, or a reply nobody asked for.
    Protocol,
    /// The server answered a SET with something other than `+OK`.
    BadReply,
}

struct Failure {
    kind: FailureKind,
    message: String,
    at: Instant,
}

#[derive(Debug, Serialize)]
pub struct GapReport {
    pub gap_ms: f64,
    pub start_s: f64,
    pub end_s: f64,
}

/// The JSON report of a write run.
#[derive(Debug, Serialize)]
pub struct WriteReport {
    pub addr: String,
    pub prefix: String,
    pub local_addr: Option<String>,
    /// The client's TCP port: the same number before and after a failover
    /// shows the same connection carried on.
    pub local_port: Option<u16>,
    pub peer_addr: Option<String>,
    pub pipeline: usize,
    pub value_size: usize,
    /// Wall-clock time of the start, to line the run up with other logs.
    pub started_unix_ms: u64,
    pub stop_reason: StopReason,
    pub ops_sent: u64,
    pub ops_acked: u64,
    pub first_acked_index: Option<u64>,
    pub last_acked_index: Option<u64>,
    /// Requests sent but not answered when the run ended.
    pub unacked_in_flight: u64,
    pub duration_s: f64,
    pub throughput_ops_s: f64,
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
    pub latency_max_us: Option<u64>,
    /// Longest interval between two consecutive `+OK`s.
    pub max_gap_ms: Option<f64>,
    /// When that interval began, in seconds since the start.
    pub max_gap_at_s: Option<f64>,
    pub top_gaps: Vec<GapReport>,
    /// Seconds since the start of the last `+OK`.
    pub last_ack_s: Option<f64>,
    /// The run failed because the connection stopped working (closed, reset,
    /// reply timeout, or a stream that is no longer RESP). False when the
    /// run ended cleanly, and when the server answered a SET with an error
    /// (`failure: "bad_reply"`), which also fails the run.
    pub connection_broken: bool,
    pub failure: Option<FailureKind>,
    pub error: Option<String>,
    pub error_at_s: Option<f64>,
}

/// Runs a write load. `Ok(report)` whether the run ended cleanly or failed
/// (see `report.failure`); `Err` only if it could not start or its output
/// files could not be written.
pub fn run(opts: &WriteOptions) -> Result<WriteReport> {
    let mut acked_log = match &opts.acked_file {
        Some(path) => Some(AckedLog::create(path)?),
        None => None,
    };
    let mut conn = Conn::connect(&opts.addr, opts.connect_timeout)?;
    conn.set_write_timeout(opts.op_timeout)
        .context("cannot set the socket write timeout")?;
    let local = conn.local_addr();
    let peer = conn.peer_addr();
    eprintln!(
        "ftvm-loadgen: connected {} -> {}",
        local.map_or_else(|| "?".to_string(), |a| a.to_string()),
        peer.map_or_else(|| "?".to_string(), |a| a.to_string()),
    );

    let started_unix_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let start = Instant::now();
    let us = |t: Instant| t.saturating_duration_since(start).as_micros() as u64;

    // Per-operation times, in µs since start; replies arrive in request
    // order and the run ends at the first failure, so the i-th entry of
    // `acked_us` is operation i.
    let mut sent_us: Vec<u64> = Vec::new();
    let mut acked_us: Vec<u64> = Vec::new();
    let mut in_flight: VecDeque<(u64, Instant)> = VecDeque::with_capacity(opts.pipeline);
    let mut next_index: u64 = 0;
    let mut request = Vec::new();
    let mut stop: Option<StopReason> = None;
    let mut failure: Option<Failure> = None;
    let mut next_flush = start + FLUSH_EVERY;
    let mut next_progress = start + PROGRESS_EVERY;
    let mut acked_at_last_progress = 0usize;

    loop {
        let now = Instant::now();
        if SIGNALLED.load(Ordering::SeqCst) {
            stop = Some(StopReason::Signal);
            break;
        }
        if stop.is_none() {
            if opts.duration.is_some_and(|d| now - start >= d) {
                stop = Some(StopReason::Duration);
            } else if opts.count.is_some_and(|c| next_index >= c) {
                stop = Some(StopReason::Count);
            }
        }
        if now >= next_flush {
            next_flush = now + FLUSH_EVERY;
            if let Some(log) = &mut acked_log {
                log.flush()?;
            }
            if stop.is_none() && opts.until_file.as_deref().is_some_and(Path::exists) {
                stop = Some(StopReason::UntilFile);
            }
        }
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            let rate =
                (acked_us.len() - acked_at_last_progress) as f64 / PROGRESS_EVERY.as_secs_f64();
            acked_at_last_progress = acked_us.len();
            eprintln!(
                "ftvm-loadgen: {:.0}s {:.0} ops/s acked={} in_flight={}",
                (now - start).as_secs_f64(),
                rate,
                acked_us.len(),
                in_flight.len()
            );
        }
        if stop.is_some() && in_flight.is_empty() {
            break;
        }

        if stop.is_none() && in_flight.len() < opts.pipeline {
            request.clear();
            let sent_at = Instant::now();
            while in_flight.len() < opts.pipeline && opts.count.is_none_or(|c| next_index < c) {
                let key = key_for(&opts.prefix, next_index);
                let value = value_for(&opts.prefix, next_index, opts.value_size);
                encode_command(&mut request, &[b"SET", key.as_bytes(), &value]);
                in_flight.push_back((next_index, sent_at));
                sent_us.push(us(sent_at));
                next_index += 1;
            }
            if !request.is_empty() {
                if let Err(e) = conn.send(&request) {
                    failure = Some(conn_failure(e));
                    break;
                }
            }
        }

        match conn.poll_reply() {
            Ok(Some(reply)) => {
                let at = Instant::now();
                let Some((index, _)) = in_flight.pop_front() else {
                    failure = Some(Failure {
                        kind: FailureKind::Protocol,
                        message: format!("reply {reply:?} to no request"),
                        at,
                    });
                    break;
                };
                match reply {
                    Reply::Simple(s) if s == "OK" => {
                        acked_us.push(us(at));
                        if let Some(log) = &mut acked_log {
                            log.record(index)?;
                        }
                    }
                    Reply::Error(message) => {
                        failure = Some(Failure {
                            kind: FailureKind::BadReply,
                            message: format!("server refused SET of index {index}: {message}"),
                            at,
                        });
                        break;
                    }
                    other => {
                        failure = Some(Failure {
                            kind: FailureKind::BadReply,
                            message: format!("unexpected reply to SET of index {index}: {other:?}"),
                            at,
                        });
                        break;
                    }
                }
            }
            Ok(None) => {
                if let Some(&(index, sent_at)) = in_flight.front() {
                    let now = Instant::now();
                    if now - sent_at > opts.op_timeout {
                        failure = Some(Failure {
                            kind: FailureKind::Timeout,
                            message: format!(
                                "no reply to SET of index {index} within {} ms",
                                opts.op_timeout.as_millis()
                            ),
                            at: now,
                        });
                        break;
                    }
                }
            }
            Err(e) => {
                failure = Some(conn_failure(e));
                break;
            }
        }
    }
    let end = Instant::now();
    if let Some(log) = &mut acked_log {
        log.flush()?;
    }
    if let Some(path) = &opts.ops_file {
        write_ops_file(path, &sent_us, &acked_us)?;
    }

    let duration_s = (end - start).as_secs_f64();
    let ops_acked = acked_us.len() as u64;
    let mut latencies: Vec<u64> = acked_us
        .iter()
        .zip(&sent_us)
        .map(|(acked, sent)| acked.saturating_sub(*sent))
        .collect();
    latencies.sort_unstable();
    let gaps = top_gaps(&acked_us, TOP_GAPS);
    let secs = |t_us: u64| t_us as f64 / 1e6;
    let stop_reason = match (&failure, stop) {
        (Some(_), _) => StopReason::Failure,
        (None, Some(reason)) => reason,
        (None, None) => StopReason::Failure,
    };
    Ok(WriteReport {
        addr: opts.addr.clone(),
        prefix: opts.prefix.clone(),
        local_addr: local.map(|a| a.to_string()),
        local_port: local.map(|a| a.port()),
        peer_addr: peer.map(|a| a.to_string()),
        pipeline: opts.pipeline,
        value_size: opts.value_size,
        started_unix_ms,
        stop_reason,
        ops_sent: next_index,
        ops_acked,
        first_acked_index: (ops_acked > 0).then_some(0),
        last_acked_index: ops_acked.checked_sub(1),
        unacked_in_flight: in_flight.len() as u64,
        duration_s,
        throughput_ops_s: if duration_s > 0.0 {
            ops_acked as f64 / duration_s
        } else {
            0.0
        },
        latency_p50_us: percentile(&latencies, 50.0),
        latency_p99_us: percentile(&latencies, 99.0),
        latency_max_us: latencies.last().copied(),
        max_gap_ms: gaps.first().map(|g| g.gap_us as f64 / 1e3),
        max_gap_at_s: gaps.first().map(|g| secs(g.start_us)),
        top_gaps: gaps
            .iter()
            .map(|g| GapReport {
                gap_ms: g.gap_us as f64 / 1e3,
                start_s: secs(g.start_us),
                end_s: secs(g.end_us),
            })
            .collect(),
        last_ack_s: acked_us.last().map(|&t| secs(t)),
        connection_broken: failure
            .as_ref()
            .is_some_and(|f| f.kind != FailureKind::BadReply),
        failure: failure.as_ref().map(|f| f.kind),
        error: failure.as_ref().map(|f| f.message.clone()),
        error_at_s: failure.as_ref().map(|f| secs(us(f.at))),
    })
}

fn conn_failure(e: ConnError) -> Failure {
    let kind = match e {
        ConnError::Protocol(_) => FailureKind::Protocol,
        ConnError::Io(ref io) if io.kind() == std::io::ErrorKind::WouldBlock => {
            // A write that hit the write timeout.
            FailureKind::Timeout
        }
        ConnError::Io(ref io) if io.kind() == std::io::ErrorKind::TimedOut => FailureKind::Timeout,
        ConnError::Closed | ConnError::Io(_) => FailureKind::Broken,
    };
    Failure {
        kind,
        message: e.to_string(),
        at: Instant::now(),
    }
}

/// Writes `index,sent_us,acked_us` for every acknowledged operation.
fn write_ops_file(path: &Path, sent_us: &[u64], acked_us: &[u64]) -> Result<()> {
    let file = std::fs::File::create(path)
        .with_context(|| format!("cannot create ops file {}", path.display()))?;
    let mut out = BufWriter::new(file);
    let mut write = || -> std::io::Result<()> {
        writeln!(out, "index,sent_us,acked_us")?;
        for (index, (sent, acked)) in sent_us.iter().zip(acked_us).enumerate() {
            writeln!(out, "{index},{sent},{acked}")?;
        }
        out.flush()
    };
    write().with_context(|| format!("cannot write ops file {}", path.display()))
}
