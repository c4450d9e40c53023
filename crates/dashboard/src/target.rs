//! What the dashboard watches: a target is one FT process's status endpoint,
//! written `[NAME=][netns:NS/]HOST:PORT`. With `netns:NS/` the endpoint is
//! reached from inside the network namespace `/run/netns/NS` — the demo's
//! processes serve status on their namespace's loopback while the dashboard
//! runs where a browser can reach it — so each target is polled by a thread
//! of its own that enters that namespace once (setns(2) changes only the
//! calling thread). The thread fetches a report every poll interval and
//! leaves the latest one, or why there is none, in a shared slot.

use std::fs::File;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use ftvm_node::ft::status::{fetch, Report};

use crate::DashboardError;

/// One status endpoint to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// How the page names it (default: the address as written).
    pub name: String,
    /// The network namespace to reach it from, if not this one.
    pub netns: Option<String>,
    pub addr: SocketAddr,
}

impl std::str::FromStr for Target {
    type Err = DashboardError;

    fn from_str(s: &str) -> Result<Target, DashboardError> {
        let bad = |why: &str| DashboardError::BadTarget {
            target: s.to_string(),
            why: why.to_string(),
        };
        let (name, rest) = match s.split_once('=') {
            Some((n, r)) if !n.is_empty() => (Some(n.to_string()), r),
            Some(_) => return Err(bad("empty name before '='")),
            None => (None, s),
        };
        let (netns, hostport) = match rest.strip_prefix("netns:") {
            Some(r) => {
                let (ns, hp) = r
                    .split_once('/')
                    .ok_or_else(|| bad("expected netns:NAME/HOST:PORT"))?;
                if ns.is_empty() || ns.contains(['.', ' ']) {
                    return Err(bad("not a namespace name"));
                }
                (Some(ns.to_string()), hp)
            }
            None => (None, rest),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| bad(&format!("not HOST:PORT ({e})")))?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Target {
            name: name.unwrap_or_else(|| rest.to_string()),
            netns,
            addr,
        })
    }
}

/// What the poller last saw.
#[derive(Clone, Debug, Default)]
pub enum Seen {
    /// Not polled yet.
    #[default]
    Nothing,
    Report(Box<Report>),
    /// The endpoint did not answer (or not with a report).
    Unreachable(String),
}

/// The latest sight of a target, shared with its poller.
pub type Slot = Arc<Mutex<Seen>>;

/// Starts the poller of `t`, which writes into the returned slot every
/// `every` until the process exits.
pub fn poll(t: &Target, every: Duration) -> Result<Slot, DashboardError> {
    let slot: Slot = Arc::default();
    let out = slot.clone();
    let t = t.clone();
    let name = format!("poll-{}", t.name);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(ns) = &t.netns {
                if let Err(e) = enter_netns(ns) {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(()));
            loop {
                let seen = match fetch(t.addr) {
                    Ok(r) => Seen::Report(Box::new(r)),
                    Err(e) => Seen::Unreachable(format!("{e:#}")),
                };
                if let Ok(mut s) = out.lock() {
                    *s = seen;
                }
                thread::sleep(every);
            }
        })
        .map_err(DashboardError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(slot),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(DashboardError::Thread(std::io::Error::other(
            "the poller thread died",
        ))),
    }
}

/// Moves the calling thread into the network namespace `/run/netns/NS`.
fn enter_netns(ns: &str) -> Result<(), DashboardError> {
    let path = format!("/run/netns/{ns}");
    let f = File::open(&path).map_err(|e| DashboardError::Netns {
        ns: ns.to_string(),
        why: e.to_string(),
    })?;
    // SAFETY: setns(2) with a descriptor we own, for this thread only.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(DashboardError::Netns {
            ns: ns.to_string(),
            why: std::io::Error::last_os_error().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_address_forms() {
        let t: Target = "127.0.0.1:7100".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.netns.as_deref()),
            ("127.0.0.1:7100", None)
        );
        let t: Target = "h1=netns:demo-h1/127.0.0.1:7100".parse().unwrap();
        assert_eq!(t.name, "h1");
        assert_eq!(t.netns.as_deref(), Some("demo-h1"));
        assert_eq!(t.addr, "127.0.0.1:7100".parse().unwrap());
        for bad in [
            "",
            "=1.2.3.4:5",
            "netns:x",
            "netns:/1.2.3.4:5",
            "h1=nohost",
            "1.2.3.4",
        ] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?} accepted");
        }
    }
}
