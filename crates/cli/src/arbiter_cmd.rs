//! `ftvm arbiter`: an operator's view of the arbiter that `ftvm storage`
//! serves, or of one kept in etcd (`--arbiter etcd://…`). This module owns the `query`, `history` and `advance`
//! subcommands, their plain-text output (one fact per line, so scripts can
//! read it) and the errors shown when the arbiter cannot be reached or
//! refuses a request. It never claims a generation: test-and-set belongs to
//! the FT processes alone.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use ftvm_etcd::{EtcdArbiter, EtcdTarget};
use ftvm_storage::{ArbiterClient, ArbiterError, VmStatus, Win};

use ftvm_node::devices::resolve_addr;

/// The arbiter port when `--arbiter HOST` names none.
const ARBITER_DEFAULT_PORT: u16 = 10810;

#[derive(Args, Debug)]
pub struct ArbiterArgs {
    /// The arbiter's address: HOST[:PORT] of `ftvm storage`, or an etcd
    /// cluster as etcd://HOST:PORT[,HOST:PORT...]/PREFIX (plain HTTP; the
    /// TLS options do not apply to it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10810", value_parser = parse_arbiter_addr)]
    pub arbiter: ArbiterTarget,
    /// How long to wait for an answer, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub timeout: f64,
    /// TLS with this identity (history and advance need an operator's,
    /// e.g. DIR/operator-NAME/client-*.pem), or --insecure.
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    #[command(subcommand)]
    pub action: ArbiterAction,
}

#[derive(Subcommand, Debug)]
pub enum ArbiterAction {
    /// The VM's highest generation, its holder and how many wins are recorded
    /// (`generation G`, `holder NAME` or `holder -`, `wins N`).
    Query { vm: String },
    /// Every recorded win, oldest first: one line per win with the
    /// generation, the claimant and the time (UTC), separated by tabs.
    History { vm: String },
    /// Start generation GEN with no holder (a new pair was formed); claims
    /// for older generations lose from then on. GEN must be above the
    /// current generation (or equal to it while nobody holds it).
    Advance { vm: String, generation: u64 },
}

/// Which arbiter `ftvm arbiter` talks to.
#[derive(Debug, Clone)]
pub enum ArbiterTarget {
    Builtin(SocketAddr),
    Etcd(EtcdTarget),
}

fn parse_arbiter_addr(s: &str) -> Result<ArbiterTarget, String> {
    if EtcdTarget::is_etcd(s) {
        return EtcdTarget::parse(s)
            .map(ArbiterTarget::Etcd)
            .map_err(|e| e.to_string());
    }
    resolve_addr(s, ARBITER_DEFAULT_PORT).map(ArbiterTarget::Builtin)
}

/// A connected client of either kind.
enum Client {
    Builtin(ArbiterClient),
    Etcd(Box<EtcdArbiter>),
}

impl Client {
    fn query(&self, vm: &str, timeout: Duration) -> Result<VmStatus> {
        match self {
            Client::Builtin(c) => c.query(vm, timeout).map_err(explain),
            Client::Etcd(c) => c.query(vm, timeout).map_err(explain_etcd),
        }
    }

    fn history(&self, vm: &str, timeout: Duration) -> Result<Vec<Win>> {
        match self {
            Client::Builtin(c) => c.history(vm, timeout).map_err(explain),
            Client::Etcd(c) => c.history(vm, timeout).map_err(explain_etcd),
        }
    }

    fn advance(&self, vm: &str, generation: u64, timeout: Duration) -> Result<u64> {
        match self {
            Client::Builtin(c) => c.advance(vm, generation, timeout).map_err(explain),
            Client::Etcd(c) => c.advance(vm, generation, timeout).map_err(explain_etcd),
        }
    }
}

fn explain_etcd(e: ftvm_etcd::EtcdError) -> anyhow::Error {
    let hint = match &e {
        ftvm_etcd::EtcdError::Timeout { .. } => {
            " (are a majority of the etcd members running and reachable? see --arbiter)"
        }
        _ => "",
    };
    anyhow::anyhow!("{e}{hint}")
}

/// `unix_ms` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic Gregorian, UTC).
pub fn format_utc(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Days since 1970-01-01 to a civil date, by 400-year eras of 146097 days
    // counted from 0000-03-01 (so the leap day ends each year).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
}

/// The error as one line, with what to check when nobody answered. (The
/// message already includes its cause, so the chain is not kept: it would
/// print the cause twice.)
fn explain(e: ArbiterError) -> anyhow::Error {
    let hint = match &e {
        ArbiterError::Unreachable { .. } | ArbiterError::Timeout { .. } => {
            " (is `ftvm storage` running there? see --arbiter)"
        }
        _ => "",
    };
    anyhow::anyhow!("{e}{hint}")
}

pub fn arbiter(args: ArbiterArgs) -> Result<u8> {
    if !(args.timeout.is_finite() && args.timeout > 0.0 && args.timeout <= 86_400.0) {
        anyhow::bail!(
            "--timeout {} must be a number of seconds above 0 (at most a day)",
            args.timeout
        );
    }
    let timeout = Duration::from_secs_f64(args.timeout);
    let client = match &args.arbiter {
        ArbiterTarget::Builtin(addr) => {
            let tls = args.tls.client("arbiter", ftvm_tls::Role::Storage)?;
            Client::Builtin(ArbiterClient::connect_with(*addr, timeout, tls).map_err(explain)?)
        }
        ArbiterTarget::Etcd(target) => Client::Etcd(Box::new(EtcdArbiter::new(target.clone())?)),
    };
    let mut out = String::new();
    match &args.action {
        ArbiterAction::Query { vm } => {
            let st = client.query(vm, timeout)?;
            out.push_str(&format!(
                "generation {}\nholder {}\nwins {}\n",
                st.generation,
                st.holder.as_deref().unwrap_or("-"),
                st.history_count
            ));
        }
        ArbiterAction::History { vm } => {
            for w in client.history(vm, timeout)? {
                out.push_str(&format!(
                    "{}\t{}\t{}\n",
                    w.generation,
                    w.claimant,
                    format_utc(w.at_unix_ms)
                ));
            }
        }
        ArbiterAction::Advance { vm, generation } => {
            let g = client.advance(vm, *generation, timeout)?;
            out.push_str(&format!("generation {g}\n"));
        }
    }
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to stdout")?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(format_utc(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(format_utc(4_102_444_800_000), "2100-01-01T00:00:00.000Z");
    }

    #[test]
    fn parses_arbiter_addresses() {
        let builtin = |s: &str| match parse_arbiter_addr(s) {
            Ok(ArbiterTarget::Builtin(a)) => Some(a),
            _ => None,
        };
        assert_eq!(builtin("127.0.0.1"), "127.0.0.1:10810".parse().ok());
        assert_eq!(builtin("127.0.0.1:99"), "127.0.0.1:99".parse().ok());
        assert!(parse_arbiter_addr("127.0.0.1:x").is_err());
        match parse_arbiter_addr("etcd://10.0.0.1:2379,10.0.0.2:2379/ftvm") {
            Ok(ArbiterTarget::Etcd(t)) => {
                assert_eq!(t.endpoints.len(), 2);
                assert_eq!(t.prefix, "ftvm");
            }
            other => panic!("an etcd target expected: {other:?}"),
        }
        assert!(parse_arbiter_addr("etcd:///ftvm").is_err());
    }
}
