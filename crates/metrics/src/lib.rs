//! Prometheus metrics of ftvm's long-running processes. Each process builds
//! one [`prometheus_client`] registry (labelled with its VM name, or none
//! for the storage server), registers the families it has ([`vm`]: the
//! guest, its devices and the FT protocol; [`storage`]: NBD exports and the
//! arbiter), and serves it with [`serve`] on `--metrics HOST:PORT` in the
//! OpenMetrics text format, which Prometheus scrapes.
//!
//! The handles are atomics shared with the HTTP thread: the drivers update
//! them on their own thread without a lock or a hop (a histogram takes an
//! uncontended mutex). Totals that a protocol core already keeps (bytes,
//! entries, throttled time) are mirrored into counters with [`advance`]
//! when the driver publishes its status, a few times a second.

#[macro_use]
mod labels;
pub mod serve;
pub mod storage;
pub mod vm;

pub use prometheus_client::registry::Registry;
pub use serve::{serve, Endpoint, ServeError};
pub use storage::{ArbiterRequest, ArbiterResult, Channel, NbdCommand, StorageMetrics};
pub use vm::{
    DeviceMetrics, Direction, DiskMeter, DiskOp, ExitCause, FtMetrics, GuestMetrics, NetMeter,
    StatusSample,
};

use prometheus_client::metrics::counter::Counter;

/// Raises `counter` to `total`, a running total kept elsewhere (it only
/// ever goes up; a smaller `total` is ignored).
pub fn advance(counter: &Counter, total: u64) {
    let cur = counter.get();
    if total > cur {
        counter.inc_by(total - cur);
    }
}

/// A registry whose every sample carries `vm="NAME"`.
pub fn vm_registry(vm: &str) -> Registry {
    Registry::with_labels(std::iter::once((
        std::borrow::Cow::Borrowed("vm"),
        std::borrow::Cow::Owned(vm.to_string()),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_only_goes_up() {
        let c = Counter::default();
        advance(&c, 10);
        advance(&c, 7);
        assert_eq!(c.get(), 10);
        advance(&c, 12);
        assert_eq!(c.get(), 12);
    }
}
