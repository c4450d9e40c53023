//! A storage server that goes away makes client I/O wait and resume, losing
//! nothing acknowledged: a write issued while the server is down completes
//! once it is back; a write whose reply is lost with the connection is sent
//! again on a new one. (The storage process killed with SIGKILL mid-stream
//! and restarted on the same port is tested with the `ftvm storage` command
//! in `crates/cli/tests/nbd_disk.rs`.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use ftvm_storage::{NbdClient, NbdClientOptions};

fn patient() -> NbdClientOptions {
    NbdClientOptions {
        backoff_initial: Duration::from_millis(20),
        backoff_max: Duration::from_millis(200),
        io_timeout: Duration::from_secs(10),
        retry_for: Some(Duration::from_secs(30)),
        ..NbdClientOptions::default()
    }
}

#[test]
fn a_write_issued_while_the_server_is_down_completes_after_restart() {
    let dir = TempDir::new("rc-restart");
    let img = make_image(dir.path(), "disk", 1 << 20, 0);
    let srv = start(dir.path());
    let nbd = srv.nbd_addr();
    let c = Arc::new(NbdClient::connect_with(nbd, "disk", patient()).unwrap());
    c.write_at(0, &[1; 4096], false).unwrap();
    srv.stop();

    let writer = {
        let c = c.clone();
        std::thread::spawn(move || c.write_at(4096, &[2; 4096], false))
    };
    std::thread::sleep(Duration::from_millis(500));
    assert!(!writer.is_finished(), "the write must wait for the server");
    let mut cfg = config(dir.path());
    cfg.nbd_listen = nbd;
    let _srv = start_with(cfg);
    writer.join().unwrap().unwrap();
    assert!(c.reconnects() >= 1);
    let file = std::fs::read(&img).unwrap();
    assert!(file[..4096].iter().all(|&b| b == 1));
    assert!(file[4096..8192].iter().all(|&b| b == 2));
    let mut b = [0u8; 4];
    c.read_at(4096, &mut b).unwrap();
    assert_eq!(b, [2; 4]);
}

#[test]
fn the_retry_policy_can_give_up() {
    let dir = TempDir::new("rc-giveup");
    make_image(dir.path(), "disk", 65536, 0);
    let srv = start(dir.path());
    let opts = NbdClientOptions {
        retry_for: Some(Duration::from_millis(300)),
        ..patient()
    };
    let c = NbdClient::connect_with(srv.nbd_addr(), "disk", opts).unwrap();
    srv.stop();
    let err = c.write_at(0, b"x", false).unwrap_err();
    assert!(
        matches!(err, ftvm_storage::NbdError::GaveUp { .. }),
        "{err}"
    );
}

/// A TCP proxy that can drop the connection the moment the server answers,
/// so the client loses the reply to a request the server already executed.
struct CuttingProxy {
    addr: SocketAddr,
    cut_next_reply: Arc<AtomicBool>,
    cuts: Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: SocketAddr) -> CuttingProxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let cuts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (cut2, cuts2) = (cut.clone(), cuts.clone());
        std::thread::spawn(move || {
            for client in l.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let (mut c_rd, mut s_wr) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let mut b = [0u8; 65536];
                    while let Ok(n) = c_rd.read(&mut b) {
                        if n == 0 || s_wr.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_wr.shutdown(std::net::Shutdown::Both);
                });
                let (cut, cuts) = (cut2.clone(), cuts2.clone());
                std::thread::spawn(move || {
                    let (mut s_rd, mut c_wr) = (server, client);
                    let mut b = [0u8; 65536];
                    while let Ok(n) = s_rd.read(&mut b) {
                        if n == 0 {
                            break;
                        }
                        if cut.swap(false, Ordering::SeqCst) {
                            cuts.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        if c_wr.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = c_wr.shutdown(std::net::Shutdown::Both);
                    let _ = s_rd.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        CuttingProxy {
            addr,
            cut_next_reply: cut,
            cuts,
        }
    }
}

#[test]
fn a_write_whose_reply_is_lost_is_sent_again() {
    let dir = TempDir::new("rc-proxy");
    let img = make_image(dir.path(), "disk", 1 << 20, 0);
    let srv = start(dir.path());
    let proxy = CuttingProxy::start(srv.nbd_addr());
    let c = NbdClient::connect_with(proxy.addr, "disk", patient()).unwrap();
    c.write_at(0, &[9; 512], false).unwrap();

    proxy.cut_next_reply.store(true, Ordering::SeqCst);
    c.write_at(65536, &[7; 65536], true).unwrap();
    assert_eq!(proxy.cuts.load(Ordering::SeqCst), 1, "the reply was cut");
    assert_eq!(c.reconnects(), 1);

    proxy.cut_next_reply.store(true, Ordering::SeqCst);
    let mut b = vec![0u8; 65536];
    c.read_at(65536, &mut b).unwrap();
    assert!(b.iter().all(|&x| x == 7));
    assert_eq!(c.reconnects(), 2);
    let file = std::fs::read(&img).unwrap();
    assert!(file[65536..131072].iter().all(|&x| x == 7));
}

#[test]
fn an_export_missing_for_a_while_after_restart_is_waited_for() {
    let dir = TempDir::new("rc-missing");
    let img = make_image(dir.path(), "disk", 65536, 0);
    let srv = start(dir.path());
    let nbd = srv.nbd_addr();
    let c = Arc::new(NbdClient::connect_with(nbd, "disk", patient()).unwrap());
    srv.stop();
    let aside = dir.path().join("disk.img.aside");
    std::fs::rename(&img, &aside).unwrap();
    let mut cfg = config(dir.path());
    cfg.nbd_listen = nbd;
    let _srv = start_with(cfg);
    let writer = {
        let c = c.clone();
        std::thread::spawn(move || c.write_at(0, b"waited", false))
    };
    std::thread::sleep(Duration::from_millis(400));
    assert!(!writer.is_finished(), "no export yet: the write waits");
    std::fs::rename(&aside, &img).unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(&std::fs::read(&img).unwrap()[..6], b"waited");
}

#[test]
fn an_export_that_changed_size_is_an_error() {
    let dir = TempDir::new("rc-size");
    let img = make_image(dir.path(), "disk", 65536, 0);
    let srv = start(dir.path());
    let nbd = srv.nbd_addr();
    let c = NbdClient::connect_with(nbd, "disk", patient()).unwrap();
    srv.stop();
    std::fs::write(&img, vec![0u8; 131072]).unwrap();
    let mut cfg = config(dir.path());
    cfg.nbd_listen = nbd;
    let _srv = start_with(cfg);
    let err = c.write_at(0, b"x", false).unwrap_err();
    assert!(
        matches!(err, ftvm_storage::NbdError::SizeChanged { .. }),
        "{err}"
    );
}
