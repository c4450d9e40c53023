//! The metric families of `ftvm storage`: NBD requests, bytes and errors by
//! export and command, connections by channel, refusals (TLS and
//! authorisation), and arbiter requests by request kind and result.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

label_values! {
    /// An NBD transmission command.
    NbdCommand {
        Read => "read",
        Write => "write",
        Flush => "flush",
        Trim => "trim",
        WriteZeroes => "write_zeroes",
        Other => "other",
    }
}

label_values! {
    /// An arbiter request.
    ArbiterRequest {
        TestAndSet => "test_and_set",
        Query => "query",
        History => "history",
        Advance => "advance",
    }
}

label_values! {
    /// What the arbiter answered.
    ArbiterResult {
        /// Test-and-set won (or already held by the asker).
        Won => "won",
        /// Test-and-set lost: the other side holds the VM.
        Lost => "lost",
        /// Answered (query, history, advance).
        Ok => "ok",
        /// Refused: stale generation, not allowed, bad request.
        Error => "error",
    }
}

label_values! {
    /// Which listener a connection came to.
    Channel {
        Nbd => "nbd",
        Arbiter => "arbiter",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NbdLabels {
    export: String,
    command: NbdCommand,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ArbiterLabels {
    request: ArbiterRequest,
    result: ArbiterResult,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabel {
    channel: Channel,
}

/// What `ftvm storage` served.
#[derive(Clone, Debug, Default)]
pub struct StorageMetrics {
    nbd_requests: Family<NbdLabels, Counter>,
    nbd_bytes: Family<NbdLabels, Counter>,
    nbd_errors: Family<NbdLabels, Counter>,
    connections: Family<ChannelLabel, Counter>,
    open_connections: Family<ChannelLabel, Gauge>,
    refused: Family<ChannelLabel, Counter>,
    arbiter: Family<ArbiterLabels, Counter>,
}

impl StorageMetrics {
    pub fn register(r: &mut Registry) -> StorageMetrics {
        let m = StorageMetrics::default();
        r.register(
            "ftvm_storage_nbd_requests",
            "NBD requests served, by export and command",
            m.nbd_requests.clone(),
        );
        r.register_with_unit(
            "ftvm_storage_nbd",
            "NBD payload bytes read and written, by export and command",
            Unit::Bytes,
            m.nbd_bytes.clone(),
        );
        r.register(
            "ftvm_storage_nbd_errors",
            "NBD requests answered with an error, by export and command",
            m.nbd_errors.clone(),
        );
        r.register(
            "ftvm_storage_connections",
            "Connections accepted, by channel",
            m.connections.clone(),
        );
        r.register(
            "ftvm_storage_open_connections",
            "Connections being served now, by channel",
            m.open_connections.clone(),
        );
        r.register(
            "ftvm_storage_refused",
            "Connections refused (bad TLS identity, wrong role, garbage, over the connection limit), by channel",
            m.refused.clone(),
        );
        r.register(
            "ftvm_storage_arbiter_requests",
            "Arbiter requests answered, by request and result",
            m.arbiter.clone(),
        );
        // Zeros from the first scrape, so that rates and alerts see them.
        for channel in [Channel::Nbd, Channel::Arbiter] {
            let l = ChannelLabel { channel };
            let _ = m.connections.get_or_create(&l);
            let _ = m.open_connections.get_or_create(&l);
            let _ = m.refused.get_or_create(&l);
        }
        m
    }

    /// One NBD request on `export`; `bytes` of payload moved; `ok` unless
    /// it was answered with an error.
    pub fn nbd(&self, export: &str, command: NbdCommand, bytes: u64, ok: bool) {
        let l = NbdLabels {
            export: export.to_string(),
            command,
        };
        self.nbd_requests.get_or_create(&l).inc();
        if bytes > 0 {
            self.nbd_bytes.get_or_create(&l).inc_by(bytes);
        }
        if !ok {
            self.nbd_errors.get_or_create(&l).inc();
        }
    }

    /// A connection on `channel` was accepted; the gauge goes down again
    /// when the returned guard is dropped.
    pub fn connection(&self, channel: Channel) -> ConnectionGuard {
        let l = ChannelLabel { channel };
        self.connections.get_or_create(&l).inc();
        let g = self.open_connections.get_or_create(&l).clone();
        g.inc();
        ConnectionGuard(g)
    }

    /// A connection on `channel` was refused.
    pub fn refused(&self, channel: Channel) {
        self.refused.get_or_create(&ChannelLabel { channel }).inc();
    }

    /// An arbiter request was answered.
    pub fn arbiter(&self, request: ArbiterRequest, result: ArbiterResult) {
        self.arbiter
            .get_or_create(&ArbiterLabels { request, result })
            .inc();
    }
}

/// Counts a connection as open while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Gauge);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn counts_by_export_and_result() {
        let mut r = Registry::default();
        let m = StorageMetrics::register(&mut r);
        m.nbd("vm0-disk", NbdCommand::Write, 4096, true);
        m.nbd("vm0-disk", NbdCommand::Read, 0, false);
        m.arbiter(ArbiterRequest::TestAndSet, ArbiterResult::Won);
        {
            let _c = m.connection(Channel::Nbd);
        }
        let mut t = String::new();
        encode(&mut t, &r).unwrap();
        for want in [
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"write\"} 1",
            "ftvm_storage_nbd_bytes_total{export=\"vm0-disk\",command=\"write\"} 4096",
            "ftvm_storage_nbd_errors_total{export=\"vm0-disk\",command=\"read\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"test_and_set\",result=\"won\"} 1",
            "ftvm_storage_connections_total{channel=\"nbd\"} 1",
            "ftvm_storage_open_connections{channel=\"nbd\"} 0",
        ] {
            assert!(t.contains(want), "missing {want} in\n{t}");
        }
    }
}
