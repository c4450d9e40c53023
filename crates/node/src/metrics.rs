//! A VM process's Prometheus metrics (`--metrics HOST:PORT` on `run`,
//! `record`, `primary` and `backup`): one registry labelled with the VM's
//! name, holding the guest's and the devices' families and, in an FT
//! process, the protocol's ([`ftvm_metrics::vm`]). The handles are always
//! there and cheap (atomics); only the endpoint is optional. The drivers
//! count the machine's returns to the host loop ([`exit_cause`]) and mirror
//! their status reports; the host backends count their own I/O
//! ([`crate::metered`]).

use std::net::SocketAddr;

use anyhow::{Context, Result};
use ftvm_machine::{Machine, Stop};
use ftvm_metrics::{DeviceMetrics, ExitCause, FtMetrics, GuestMetrics, Registry};

/// The metric handles of a VM process.
#[derive(Clone, Debug)]
pub struct VmMetrics {
    pub guest: GuestMetrics,
    pub devices: DeviceMetrics,
    /// The FT protocol's, in `ftvm primary` and `ftvm backup`.
    pub ft: Option<FtMetrics>,
}

impl VmMetrics {
    /// Registers the families of a process running VM `vm` (every sample
    /// labelled `vm="NAME"`; `ftvm run` has no name), with the FT
    /// protocol's when `ft_role` (`primary` or `backup`) is given, and with
    /// `listen`, serves them there. Returns the handles and the address
    /// bound.
    pub fn start(
        vm: Option<&str>,
        ft_role: Option<&str>,
        listen: Option<SocketAddr>,
    ) -> Result<(VmMetrics, Option<SocketAddr>)> {
        let mut r = vm.map_or_else(Registry::default, ftvm_metrics::vm_registry);
        let m = VmMetrics {
            guest: GuestMetrics::register(&mut r),
            devices: DeviceMetrics::register(&mut r),
            ft: ft_role.map(|role| FtMetrics::register(&mut r, role)),
        };
        let bound = match listen {
            Some(addr) => Some(serve(addr, r)?),
            None => None,
        };
        Ok((m, bound))
    }

    /// One return of `machine` from a run that stopped with `stop`;
    /// `for_outputs`: the run stops after a device access that produced
    /// outputs (`Machine::run_until_output`).
    pub fn exit(&self, machine: &Machine, stop: Stop, for_outputs: bool) {
        self.guest
            .exit(exit_cause(stop, for_outputs && machine.has_outputs()));
        self.guest.icount(machine.icount());
    }
}

/// Why a run stopped: `Stop::Limit` with outputs waiting is a return for
/// the outputs.
pub fn exit_cause(stop: Stop, has_outputs: bool) -> ExitCause {
    match stop {
        Stop::Limit if has_outputs => ExitCause::Output,
        Stop::Limit => ExitCause::Quantum,
        Stop::Idle { .. } => ExitCause::Idle,
        Stop::Finished(_) => ExitCause::Finished,
    }
}

fn serve(addr: SocketAddr, r: Registry) -> Result<SocketAddr> {
    let ep = ftvm_metrics::serve(addr, r).context("cannot start the metrics endpoint")?;
    Ok(ep.addr)
}
