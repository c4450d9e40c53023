//! Observability of an FT process: the driver publishes a [`Report`] (the
//! core's status plus what only the driver knows — execution speed, log
//! bandwidth over the last second, whether outputs flow) a few times a
//! second, and `--status ADDR` serves the latest one as a line of JSON to
//! every TCP connection. `ftvm status ADDR` fetches and prints it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};

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
    pub held_outputs: usize,
    pub released_outputs: u64,
    pub log_bytes_sent: u64,
    pub log_bytes_received: u64,
    /// Logging-channel traffic (both directions) over the last interval.
    pub log_mbit_s: f64,
    pub throttled_ms: u64,
    pub arbiter_attempts: u32,
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
}

/// The latest report, shared with the endpoint thread.
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

    /// Serves the latest report to every connection on `addr`.
    pub fn serve(&self, addr: SocketAddr) -> Result<SocketAddr> {
        let listener = TcpListener::bind(addr)
            .with_context(|| format!("cannot listen for status requests on {addr}"))?;
        let local = listener.local_addr()?;
        let latest = self.latest.clone();
        thread::Builder::new()
            .name("status".into())
            .spawn(move || {
                for s in listener.incoming() {
                    let Ok(mut s) = s else { continue };
                    let body = latest.lock().map(|l| l.clone()).unwrap_or_default();
                    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
                    let _ = s.write_all(body.as_bytes());
                    let _ = s.write_all(b"\n");
                }
            })
            .context("cannot start the status thread")?;
        Ok(local)
    }
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The `--status` address of an `ftvm primary` or `ftvm backup`.
    pub addr: SocketAddr,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
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

pub fn status(args: StatusArgs) -> Result<u8> {
    let r = fetch(args.addr)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(0);
    }
    println!(
        "{} {} (started as {}), generation {}",
        r.vm, r.phase, r.started_as, r.generation
    );
    println!(
        "  peer:     {}",
        match (&r.peer, r.connected) {
            (Some(p), true) => format!("connected to {p}"),
            _ => "not connected".into(),
        }
    );
    println!(
        "  guest:    {} instructions, {:.1} MIPS, up {:.1} s",
        r.icount, r.mips, r.uptime_s
    );
    println!(
        "  log:      seq {} acked {} executed {}, {:.3} Mbit/s, {} B sent, {} B received",
        r.log_seq,
        r.acked_seq,
        r.executed_seq,
        r.log_mbit_s,
        r.log_bytes_sent,
        r.log_bytes_received
    );
    println!(
        "  lag:      {} instructions{}, throttled {} ms in total",
        r.lag_instructions,
        r.lag_ms.map(|m| format!(" ({m} ms)")).unwrap_or_default(),
        r.throttled_ms
    );
    println!(
        "  outputs:  {} held, {} released",
        r.held_outputs, r.released_outputs
    );
    if let Some(s) = r.solo_since_s {
        println!("  solo since {s:.1} s");
    }
    if let (Some(t), Some(p)) = (r.last_join_s, r.last_join_pause_ms) {
        println!(
            "  joins:    {} (last took {t:.2} s, guest paused {p:.1} ms)",
            r.joins
        );
    }
    if let Some(h) = &r.halted {
        println!("  halted: {h}");
    }
    Ok(0)
}
