//! `ftvm dashboard`: serves the live web page of `ftvm-dashboard` for the
//! pairs given on the command line, until interrupted.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use ftvm_dashboard::Target;

#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Where to serve the page.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The status endpoints (`--status`) of one VM's processes, comma
    /// separated; repeat for more VMs. Each is [NAME=][netns:NS/]HOST:PORT:
    /// NAME is how the page calls it, netns:NS/ reaches an endpoint from
    /// inside the network namespace /run/netns/NS (as `ip netns exec`
    /// would), e.g. h1=netns:ftdemo-h1/127.0.0.1:7100.
    #[arg(long, value_name = "A,B", required = true)]
    pub pair: Vec<String>,
}

pub fn dashboard(args: DashboardArgs) -> Result<u8> {
    let mut pairs = Vec::new();
    for p in &args.pair {
        let targets = p
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<Target>())
            .collect::<Result<Vec<_>, _>>()?;
        pairs.push(targets);
    }
    let d = ftvm_dashboard::start(args.listen, pairs).context("cannot start the dashboard")?;
    println!("ftvm dashboard: http://{}/", d.addr);
    ftvm_node::driver::install_signal_handlers();
    while !ftvm_node::driver::STOP_REQUESTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(0)
}
