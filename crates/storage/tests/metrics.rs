//! The storage server's Prometheus metrics (`StorageConfig::metrics`): NBD
//! requests, payload bytes and errors by export and command, arbiter
//! requests by kind and result, connections accepted and open per channel,
//! and refusals — garbage on plain ports, and with TLS a plain client, an
//! export or arbiter request the identity may not use — read back from the
//! encoded registry after real clients have talked to the server.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::*;
use ftvm_metrics::{Registry, StorageMetrics};
use ftvm_storage::nbd::proto::*;
use ftvm_storage::{ArbiterClient, ArbiterError, NbdClient, NbdClientOptions, Outcome};
use ftvm_tls::{ClientTls, Role, ServerTls, TlsFiles};
use prometheus_client::encoding::text::encode;

const T: Duration = Duration::from_secs(5);

fn text(r: &Registry) -> String {
    let mut s = String::new();
    encode(&mut s, r).unwrap();
    s
}

/// The registry's text once no connection is open any more (connection
/// threads finish a moment after their clients leave).
fn settled(r: &Registry) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let t = text(r);
        let idle = t.contains("ftvm_storage_open_connections{channel=\"nbd\"} 0")
            && t.contains("ftvm_storage_open_connections{channel=\"arbiter\"} 0");
        if idle || Instant::now() > deadline {
            return t;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_lines(t: &str, want: &[&str], absent: &[&str]) {
    for w in want {
        assert!(t.lines().any(|l| l == *w), "missing line {w:?} in\n{t}");
    }
    for a in absent {
        assert!(!t.contains(a), "unexpected {a:?} in\n{t}");
    }
}

#[test]
fn counts_nbd_and_arbiter_traffic() {
    let dir = TempDir::new("metrics");
    make_image(dir.path(), "vm0-disk", 1 << 20, 0);
    make_image(dir.path(), "vm1-disk", 1 << 20, 7);
    let mut registry = Registry::default();
    let mut cfg = config(dir.path());
    cfg.metrics = Some(StorageMetrics::register(&mut registry));
    let srv = start_with(cfg);

    // The client library: 2 writes, 2 reads, a flush and a trim, then
    // NBD_CMD_DISC when it is dropped.
    let c = NbdClient::connect(srv.nbd_addr(), "vm0-disk").unwrap();
    c.write_at(0, &[0xab; 4096], false).unwrap();
    c.write_at(8192, &[0xcd; 100], true).unwrap();
    let mut buf = vec![0u8; 4096];
    c.read_at(0, &mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0xab));
    let mut small = [0u8; 100];
    c.read_at(8192, &mut small).unwrap();
    assert_eq!(small, [0xcd; 100]);
    c.flush().unwrap();
    c.trim(65536, 4096).unwrap();
    drop(c);
    let c1 = NbdClient::connect(srv.nbd_addr(), "vm1-disk").unwrap();
    let mut b1 = [0u8; 512];
    c1.read_at(512, &mut b1).unwrap();
    assert_eq!(b1, [7; 512]);
    drop(c1);

    // Byte by byte: a read past the end (EINVAL), WRITE_ZEROES, an unknown
    // command (EINVAL), NBD_CMD_DISC.
    let mut s = connect(srv.nbd_addr());
    go(&mut s, "vm0-disk");
    send_req(&mut s, CMD_READ, 0, 1, 1 << 20, 512, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 1));
    send_req(&mut s, CMD_WRITE_ZEROES, 0, 2, 0, 4096, &[]);
    assert_eq!(read_reply(&mut s), (0, 2));
    send_req(&mut s, 99, 0, 3, 0, 0, &[]);
    assert_eq!(read_reply(&mut s), (EINVAL, 3));
    send_req(&mut s, CMD_DISC, 0, 4, 0, 0, &[]);
    assert!(is_closed(&mut s));

    // Garbage on both ports: refused.
    let mut g = connect(srv.nbd_addr());
    read_n(&mut g, 18);
    g.write_all(&0xdead_beef_u32.to_be_bytes()).unwrap();
    assert!(is_closed(&mut g));
    let mut g = connect(srv.arbiter_addr());
    g.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
    assert!(is_closed(&mut g));

    // The arbiter: won, lost, query, history, advance, a stale advance.
    let a = ArbiterClient::connect(srv.arbiter_addr()).unwrap();
    assert!(a.test_and_set("vm0", 1, "h1", T).unwrap().is_won());
    assert!(matches!(
        a.test_and_set("vm0", 1, "h2", T).unwrap(),
        Outcome::Lost { .. }
    ));
    a.query("vm0", T).unwrap();
    assert_eq!(a.history("vm0", T).unwrap().len(), 1);
    assert_eq!(a.advance("vm0", 2, T).unwrap(), 2);
    assert!(matches!(
        a.advance("vm0", 1, T),
        Err(ArbiterError::Refused { .. })
    ));
    drop(a);

    let t = settled(&registry);
    assert_lines(
        &t,
        &[
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"write\"} 2",
            "ftvm_storage_nbd_bytes_total{export=\"vm0-disk\",command=\"write\"} 4196",
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"read\"} 3",
            "ftvm_storage_nbd_bytes_total{export=\"vm0-disk\",command=\"read\"} 4196",
            "ftvm_storage_nbd_errors_total{export=\"vm0-disk\",command=\"read\"} 1",
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"flush\"} 1",
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"trim\"} 1",
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"write_zeroes\"} 1",
            // Two NBD_CMD_DISC and the unknown command.
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"other\"} 3",
            "ftvm_storage_nbd_errors_total{export=\"vm0-disk\",command=\"other\"} 1",
            "ftvm_storage_nbd_requests_total{export=\"vm1-disk\",command=\"read\"} 1",
            "ftvm_storage_nbd_bytes_total{export=\"vm1-disk\",command=\"read\"} 512",
            "ftvm_storage_nbd_requests_total{export=\"vm1-disk\",command=\"other\"} 1",
            "ftvm_storage_connections_total{channel=\"nbd\"} 4",
            "ftvm_storage_connections_total{channel=\"arbiter\"} 2",
            "ftvm_storage_open_connections{channel=\"nbd\"} 0",
            "ftvm_storage_open_connections{channel=\"arbiter\"} 0",
            "ftvm_storage_refused_total{channel=\"nbd\"} 1",
            "ftvm_storage_refused_total{channel=\"arbiter\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"test_and_set\",result=\"won\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"test_and_set\",result=\"lost\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"query\",result=\"ok\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"history\",result=\"ok\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"advance\",result=\"ok\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"advance\",result=\"error\"} 1",
        ],
        &[
            "ftvm_storage_nbd_errors_total{export=\"vm0-disk\",command=\"write\"}",
            "ftvm_storage_nbd_errors_total{export=\"vm1-disk\"",
            "command=\"write_zeroes\"} 4096",
        ],
    );
    srv.stop();
}

#[test]
fn counts_tls_refusals() {
    let dir = TempDir::new("metrics-tls");
    let certs = dir.path().join("certs");
    ftvm_tls::lab::init(
        &certs,
        &ftvm_tls::lab::LabPlan {
            hosts: vec![("h1".into(), vec!["vm0".into()])],
            operators: vec![],
            storage: "storage".into(),
            server_names: vec!["127.0.0.1".into()],
            days: 1,
        },
    )
    .unwrap();
    let files = |who: &str, side: &str| TlsFiles {
        cert: certs.join(format!("{who}/{side}-cert.pem")),
        key: certs.join(format!("{who}/{side}-key.pem")),
        ca: certs.join("ca-cert.pem"),
    };
    let client = || ClientTls::load(&files("host-h1", "client"), Role::Storage).unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    make_image(&images, "vm0-disk", 1 << 20, 0);
    make_image(&images, "vm9-disk", 1 << 20, 0);

    let mut registry = Registry::default();
    let mut cfg = config(&images);
    cfg.tls = Some(ServerTls::load(&files("storage", "server")).unwrap());
    cfg.metrics = Some(StorageMetrics::register(&mut registry));
    let srv = start_with(cfg);

    let opts = NbdClientOptions {
        tls: Some(client()),
        retry_for: Some(Duration::from_secs(2)),
        ..NbdClientOptions::default()
    };
    // Allowed: host h1 runs vm0; the write inside TLS is counted.
    let c = NbdClient::connect_with(srv.nbd_addr(), "vm0-disk", opts.clone()).unwrap();
    c.write_at(0, &[1; 512], false).unwrap();
    drop(c);
    // Not h1's export: refused at NBD_OPT_GO.
    assert!(NbdClient::connect_with(srv.nbd_addr(), "vm9-disk", opts).is_err());
    // No TLS at all: refused.
    assert!(NbdClient::connect(srv.nbd_addr(), "vm0-disk").is_err());

    let a = ArbiterClient::new(srv.arbiter_addr()).with_tls(client());
    assert!(a.test_and_set("vm0", 1, "h1", T).unwrap().is_won());
    assert!(matches!(
        a.test_and_set("vm9", 1, "h1", T),
        Err(ArbiterError::Refused { .. })
    ));
    drop(a);
    let plain = ArbiterClient::new(srv.arbiter_addr());
    assert!(plain.test_and_set("vm0", 1, "h1", T).is_err());
    drop(plain);

    let t = settled(&registry);
    assert_lines(
        &t,
        &[
            "ftvm_storage_nbd_requests_total{export=\"vm0-disk\",command=\"write\"} 1",
            "ftvm_storage_nbd_bytes_total{export=\"vm0-disk\",command=\"write\"} 512",
            "ftvm_storage_connections_total{channel=\"nbd\"} 3",
            "ftvm_storage_refused_total{channel=\"nbd\"} 2",
            "ftvm_storage_connections_total{channel=\"arbiter\"} 2",
            "ftvm_storage_refused_total{channel=\"arbiter\"} 2",
            "ftvm_storage_arbiter_requests_total{request=\"test_and_set\",result=\"won\"} 1",
            "ftvm_storage_arbiter_requests_total{request=\"test_and_set\",result=\"error\"} 1",
        ],
        &["export=\"vm9-disk\""],
    );
    srv.stop();
}
