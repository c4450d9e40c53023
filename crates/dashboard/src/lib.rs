//! `ftvm dashboard`: a live web page of fault-tolerant pairs. It polls the
//! status endpoint (`--status`) of every process of every pair
//! ([`target`]: one thread per target, entering a network namespace if
//! the target says so), turns the reports into rounds of samples and a
//! timeline of failovers and joins ([`state`]), and serves the page, its
//! script, the vendored uPlot charting library, the history as JSON and
//! the live rounds as server-sent events ([`http`]). Nothing is fetched
//! from anywhere at run time: the assets are in the binary.

pub mod http;
pub mod state;
pub mod target;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use thiserror::Error;

pub use target::Target;

/// How often targets are polled and a round is published.
pub const ROUND: Duration = Duration::from_millis(500);

#[derive(Debug, Error)]
pub enum DashboardError {
    #[error("bad target {target:?}: {why} (expected [NAME=][netns:NS/]HOST:PORT)")]
    BadTarget { target: String, why: String },
    #[error("cannot enter network namespace {ns:?}: {why}")]
    Netns { ns: String, why: String },
    #[error("cannot serve the dashboard on {addr}: {why}")]
    Bind { addr: SocketAddr, why: String },
    #[error("cannot start a dashboard thread: {0}")]
    Thread(std::io::Error),
    #[error("no targets: give --pair A,B")]
    NoTargets,
}

/// A running dashboard.
pub struct Dashboard {
    /// Where the page is served.
    pub addr: SocketAddr,
}

/// Starts polling `pairs` (each the targets of one VM) and serving the page
/// on `listen`.
pub fn start(listen: SocketAddr, pairs: Vec<Vec<Target>>) -> Result<Dashboard, DashboardError> {
    let mut targets = Vec::new();
    let mut groups = Vec::new();
    for p in pairs {
        let mut g = Vec::new();
        for t in p {
            g.push(targets.len());
            targets.push(t);
        }
        groups.push(g);
    }
    if targets.is_empty() {
        return Err(DashboardError::NoTargets);
    }
    let slots = targets
        .iter()
        .map(|t| target::poll(t, ROUND))
        .collect::<Result<Vec<_>, _>>()?;
    let state = Arc::new(Mutex::new(state::State::new(
        targets.iter().map(|t| t.name.clone()).collect(),
        groups,
    )));
    let hub = http::Hub::default();
    let addr = http::serve(listen, state.clone(), hub.clone())?;
    let started = Instant::now();
    thread::Builder::new()
        .name("dashboard-rounds".into())
        .spawn(move || loop {
            thread::sleep(ROUND);
            let samples = slots
                .iter()
                .map(|s| {
                    s.lock()
                        .map(|seen| state::Sample::of(&seen))
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>();
            let t = started.elapsed().as_secs_f64();
            let msg = match state.lock() {
                Ok(mut st) => {
                    let events = st.round(t, samples);
                    st.rounds
                        .back()
                        .map(|r| serde_json::json!({ "round": r, "events": events }).to_string())
                }
                Err(_) => None,
            };
            if let Some(m) = msg {
                hub.publish(&m);
            }
        })
        .map_err(DashboardError::Thread)?;
    Ok(Dashboard { addr })
}
