//! `ftvm status ADDR`: fetches the report an `ftvm primary` or `ftvm
//! backup` serves on its `--status` address and prints it (or its JSON).

use anyhow::Result;
use clap::Args;
use ftvm_node::ft::status::fetch;
use std::net::SocketAddr;

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The `--status` address of an `ftvm primary` or `ftvm backup`.
    pub addr: SocketAddr,
    /// Print the raw JSON.
    #[arg(long)]
    pub json: bool,
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
    if r.digests_checked > 0 {
        println!(
            "  digests:  {} compared with the primary's, all equal",
            r.digests_checked
        );
    }
    if let Some(s) = r.solo_since_s {
        println!("  solo since {s:.1} s");
    }
    if let (Some(t), Some(p)) = (r.last_join_s, r.last_join_pause_ms) {
        println!(
            "  joins:    {} (last took {t:.2} s, guest paused {p:.1} ms)",
            r.joins
        );
    }
    if let Some(h) = &r.hold {
        println!(
            "  held:     {} outputs: hold p50 {:.0} us p99 {:.0} us (to send {:.0}, round trip {:.0} / p99 {:.0}, to release {:.0})",
            h.samples,
            h.hold_us_p50,
            h.hold_us_p99,
            h.to_send_us_p50,
            h.round_trip_us_p50,
            h.round_trip_us_p99,
            h.to_release_us_p50
        );
    }
    if let Some(t) = &r.failover {
        println!("  failover: {}", t.describe());
    }
    if let Some(h) = &r.halted {
        println!("  halted: {h}");
    }
    Ok(0)
}
