//! The Rust NBD client library against the in-process server: basic I/O,
//! requests larger than one NBD payload, client-side checks, sharing one
//! client between threads, and talking to `qemu-nbd` instead of our server.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use ftvm_storage::{NbdClient, NbdError};

#[test]
fn read_write_flush_trim() {
    let dir = TempDir::new("client-basic");
    let img = make_image(dir.path(), "disk", 1 << 20, 0);
    let srv = start(dir.path());
    let c = NbdClient::connect(srv.nbd_addr(), "disk").unwrap();
    assert_eq!(c.size(), 1 << 20);
    assert!(!c.is_read_only());

    c.write_at(1000, b"hello, storage", false).unwrap();
    c.write_at(5000, b"durable", true).unwrap();
    let mut buf = [0u8; 14];
    c.read_at(1000, &mut buf).unwrap();
    assert_eq!(&buf, b"hello, storage");
    c.flush().unwrap();
    let file = std::fs::read(&img).unwrap();
    assert_eq!(&file[1000..1014], b"hello, storage");
    assert_eq!(&file[5000..5007], b"durable");

    c.write_at(65536, &[0xee; 65536], false).unwrap();
    c.trim(65536, 65536).unwrap();
    let mut z = vec![1u8; 65536];
    c.read_at(65536, &mut z).unwrap();
    assert!(z.iter().all(|&b| b == 0));
    assert_eq!(c.reconnects(), 0);
}

#[test]
fn requests_larger_than_one_payload_are_split() {
    let dir = TempDir::new("client-big");
    let size = 40 << 20;
    let img = make_image(dir.path(), "big", size, 0);
    let srv = start(dir.path());
    let c = NbdClient::connect(srv.nbd_addr(), "big").unwrap();
    let data: Vec<u8> = (0..(36usize << 20)).map(|i| (i / 4096) as u8).collect();
    c.write_at(4096, &data, false).unwrap();
    let mut back = vec![0u8; data.len()];
    c.read_at(4096, &mut back).unwrap();
    assert!(back == data);
    let file = std::fs::read(&img).unwrap();
    assert!(file[4096..4096 + data.len()] == data[..]);
}

#[test]
fn client_side_errors() {
    let dir = TempDir::new("client-err");
    make_image(dir.path(), "disk", 8192, 0);
    make_image(dir.path(), "ro", 8192, 7);
    let mut cfg = config(dir.path());
    cfg.read_only_exports = vec!["ro".into()];
    let srv = start_with(cfg);

    match NbdClient::connect(srv.nbd_addr(), "missing") {
        Err(NbdError::NoSuchExport { export, .. }) => assert_eq!(export, "missing"),
        other => panic!("expected NoSuchExport, got {other:?}"),
    }
    let c = NbdClient::connect(srv.nbd_addr(), "disk").unwrap();
    let mut b = [0u8; 2];
    assert!(matches!(
        c.read_at(8191, &mut b),
        Err(NbdError::Invalid { .. })
    ));
    assert!(matches!(
        c.write_at(u64::MAX, b"x", false),
        Err(NbdError::Invalid { .. })
    ));
    let ro = NbdClient::connect(srv.nbd_addr(), "ro").unwrap();
    assert!(ro.is_read_only());
    assert!(matches!(
        ro.write_at(0, b"x", false),
        Err(NbdError::Invalid { .. })
    ));
    ro.read_at(0, &mut b).unwrap();
    assert_eq!(b, [7, 7]);

    // Nothing listening: the first connection fails at once.
    let dead: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        NbdClient::connect(dead, "disk"),
        Err(NbdError::Io { .. })
    ));
}

#[test]
fn one_client_shared_by_threads() {
    let dir = TempDir::new("client-shared");
    let img = make_image(dir.path(), "disk", 32 * 4096, 0);
    let srv = start(dir.path());
    let c = Arc::new(NbdClient::connect(srv.nbd_addr(), "disk").unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let c = c.clone();
            std::thread::spawn(move || {
                for k in 0..4u64 {
                    let off = (u64::from(t) * 4 + k) * 4096;
                    c.write_at(off, &[t + 1; 4096], false).unwrap();
                    let mut b = vec![0u8; 4096];
                    c.read_at(off, &mut b).unwrap();
                    assert!(b.iter().all(|&x| x == t + 1));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let file = std::fs::read(&img).unwrap();
    for t in 0..8usize {
        assert!(file[t * 16384..(t + 1) * 16384]
            .iter()
            .all(|&b| b == t as u8 + 1));
    }
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn client_works_against_qemu_nbd() {
    if !have_tool("qemu-nbd") {
        return;
    }
    init_tracing();
    let dir = TempDir::new("client-qemu-nbd");
    let img = make_image(dir.path(), "q", 1 << 20, 0);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = Command::new("qemu-nbd")
        .args(["-f", "raw", "-x", "q", "-b", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("--persistent")
        .arg("--cache=none")
        .arg(&img)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _guard = Kill(child);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let c = loop {
        match NbdClient::connect(addr, "q") {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("qemu-nbd did not come up: {e}"),
        }
    };
    assert_eq!(c.size(), 1 << 20);
    c.write_at(512, b"written by ftvm over qemu-nbd", true)
        .unwrap();
    c.flush().unwrap();
    let mut b = [0u8; 29];
    c.read_at(512, &mut b).unwrap();
    assert_eq!(&b, b"written by ftvm over qemu-nbd");
    c.trim(65536, 65536).unwrap();
    drop(c);
    let file = std::fs::read(&img).unwrap();
    assert_eq!(&file[512..541], b"written by ftvm over qemu-nbd");
}
