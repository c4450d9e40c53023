//! The TLS layer end to end over real loopback sockets: a lab CA from
//! `lab::init`, mutual authentication with identities read back from the
//! certificates, refusal of a foreign CA, of a server of the wrong role and
//! of a client without a certificate, and the property the servers rely
//! on — a socket read timeout in the middle of a TLS record loses nothing.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use ftvm_tls::lab::{self, LabPlan};
use ftvm_tls::{ClientStream, ClientTls, Identity, Role, ServerStream, ServerTls, TlsFiles};

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ftvm-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn plan() -> LabPlan {
    LabPlan {
        hosts: vec![
            ("h1".into(), vec!["vm0".into()]),
            ("h2".into(), vec!["vm0".into()]),
        ],
        operators: vec!["alice".into()],
        storage: "store".into(),
        server_names: vec!["localhost".into(), "127.0.0.1".into()],
        days: 30,
    }
}

fn files(dir: &Path, sub: &str, side: &str) -> TlsFiles {
    TlsFiles {
        cert: dir.join(sub).join(format!("{side}-cert.pem")),
        key: dir.join(sub).join(format!("{side}-key.pem")),
        ca: dir.join(sub).join("ca-cert.pem"),
    }
}

fn deadline() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

#[test]
fn lab_layout_and_identities() {
    let dir = scratch("layout");
    let written = lab::init(&dir, &plan()).unwrap();
    for f in [
        "ca-cert.pem",
        "ca-key.pem",
        "storage/ca-cert.pem",
        "storage/server-cert.pem",
        "storage/server-key.pem",
        "host-h1/client-cert.pem",
        "host-h1/server-key.pem",
        "host-h2/client-key.pem",
        "operator-alice/client-cert.pem",
        "operator-alice/client-key.pem",
    ] {
        assert!(written.contains(&dir.join(f)), "{f} written");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join("host-h1/client-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second init into the same directory overwrites nothing.
    assert!(lab::init(&dir, &plan()).is_err());
    let s = ServerTls::load(&files(&dir, "storage", "server")).unwrap();
    assert_eq!(s.identity(), &Identity::new(Role::Storage, "store", &[]));
    let c = ClientTls::load(&files(&dir, "host-h1", "client"), Role::Storage).unwrap();
    assert_eq!(c.identity(), &Identity::new(Role::Host, "h1", &["vm0"]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plans_with_clashing_or_bad_names_are_refused() {
    let mut p = plan();
    p.hosts = vec![
        ("h1".into(), vec!["vm".into()]),
        ("h2".into(), vec!["vm-2".into()]),
    ];
    assert!(lab::check_plan(&p).is_err());
    let mut p = plan();
    p.hosts = vec![("a/b".into(), vec!["vm0".into()])];
    assert!(lab::check_plan(&p).is_err());
    let mut p = plan();
    p.hosts[0].1.clear();
    assert!(lab::check_plan(&p).is_err());
}

/// A listener whose accepted connection runs `f` on a server stream.
fn serve_one<T: Send + 'static>(
    tls: ServerTls,
    f: impl FnOnce(Result<(ServerStream, Identity), ftvm_tls::TlsError>) -> T + Send + 'static,
) -> (std::net::SocketAddr, thread::JoinHandle<T>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let h = thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        f(ServerStream::accept(&tls, s, &[], deadline(), &|| false))
    });
    (addr, h)
}

#[test]
fn mutual_authentication_and_a_timeout_inside_a_record() {
    let dir = scratch("mutual");
    lab::init(&dir, &plan()).unwrap();
    let server = ServerTls::load(&files(&dir, "storage", "server")).unwrap();
    let client = ClientTls::load(&files(&dir, "host-h1", "client"), Role::Storage).unwrap();

    let (addr, h) = serve_one(server, |r| {
        let (mut s, peer) = r.expect("handshake");
        // Read 10000 bytes with a 50 ms socket timeout while the client
        // dribbles its records out with pauses; count the timeouts seen.
        let mut got = Vec::new();
        let mut timeouts = 0;
        let mut buf = [0u8; 4096];
        while got.len() < 10_000 {
            match s.read(&mut buf) {
                Ok(0) => panic!("closed early"),
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    timeouts += 1
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        s.write_all(b"ok").unwrap();
        s.flush().unwrap();
        (peer, got, timeouts)
    });

    // Each write goes out as its own record; the pauses between them are
    // longer than the server's read timeout.
    let sock = TcpStream::connect(addr).unwrap();
    let (mut c, server_id) = ClientStream::connect(&client, sock, deadline()).unwrap();
    assert_eq!(server_id, Identity::new(Role::Storage, "store", &[]));
    let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    for chunk in data.chunks(1000) {
        c.write_all(chunk).unwrap();
        c.flush().unwrap();
        thread::sleep(Duration::from_millis(120));
    }
    let mut ok = [0u8; 2];
    c.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok");
    let (peer, got, timeouts) = h.join().unwrap();
    assert_eq!(peer, Identity::new(Role::Host, "h1", &["vm0"]));
    assert_eq!(got, data, "every byte arrived, in order");
    assert!(
        timeouts >= 5,
        "the server's reads timed out between records ({timeouts})"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_record_split_across_a_read_timeout_is_kept() {
    let dir = scratch("split");
    lab::init(&dir, &plan()).unwrap();
    let server = ServerTls::load(&files(&dir, "storage", "server")).unwrap();
    let client = ClientTls::load(&files(&dir, "host-h1", "client"), Role::Storage).unwrap();

    // A relay between the client and the server that forwards the client's
    // bytes after the handshake one at a time, pausing 80 ms (longer than
    // the server's 50 ms read timeout) after each of the first bytes of the
    // first application record, so a read times out mid-record.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay_addr = l.local_addr().unwrap();
    let (addr, h) = serve_one(server, |r| {
        let (mut s, _) = r.expect("handshake");
        let mut buf = [0u8; 64];
        let mut timeouts = 0;
        loop {
            match s.read(&mut buf) {
                Ok(n) => return (buf[..n].to_vec(), timeouts),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    timeouts += 1
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    });
    let relay = thread::spawn(move || {
        let (mut from_client, _) = l.accept().unwrap();
        let mut to_server = TcpStream::connect(addr).unwrap();
        to_server.set_nodelay(true).unwrap();
        let mut back = to_server.try_clone().unwrap();
        let mut client_back = from_client.try_clone().unwrap();
        let t = thread::spawn(move || {
            let _ = std::io::copy(&mut back, &mut client_back);
        });
        // Forward everything up to and including the client's handshake
        // flight as it comes; the client sends its record only after the
        // handshake, so after 300 ms of quiet the next bytes are the record.
        from_client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 8192];
        loop {
            match from_client.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => to_server.write_all(&buf[..n]).unwrap(),
                Err(_) => break,
            }
        }
        from_client.set_read_timeout(None).unwrap();
        let mut record = vec![0u8; 5 + 11 + 17];
        from_client.read_exact(&mut record).unwrap();
        for (i, b) in record.iter().enumerate() {
            to_server.write_all(&[*b]).unwrap();
            if i < 4 {
                thread::sleep(Duration::from_millis(80));
            }
        }
        let _ = t.join();
    });
    let sock = TcpStream::connect(relay_addr).unwrap();
    let (mut c, _) = ClientStream::connect(&client, sock, deadline()).unwrap();
    thread::sleep(Duration::from_millis(600));
    // 11 bytes of plaintext: one record of 5 + 11 + 1 (type) + 16 (tag).
    c.write_all(b"hello world").unwrap();
    c.flush().unwrap();
    let (got, timeouts) = h.join().unwrap();
    assert_eq!(got, b"hello world");
    assert!(
        timeouts >= 3,
        "reads timed out inside the record ({timeouts})"
    );
    drop(c);
    let _ = relay.join();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn refusals() {
    let dir = scratch("refuse");
    lab::init(&dir, &plan()).unwrap();
    let other = scratch("refuse-other");
    lab::init(&other, &plan()).unwrap();
    let server = ServerTls::load(&files(&dir, "storage", "server")).unwrap();

    // A client whose certificate comes from another CA.
    let foreign = ClientTls::load(&files(&other, "host-h1", "client"), Role::Storage).unwrap();
    let (addr, h) = serve_one(server.clone(), |r| r.map(|_| ()));
    let r = ClientStream::connect(&foreign, TcpStream::connect(addr).unwrap(), deadline());
    // The foreign client rejects our server (unknown CA) before it would
    // send its own certificate; either way nobody gets through.
    assert!(r.is_err());
    assert!(h.join().unwrap().is_err());

    // A client that expects a host but talks to the storage server.
    let wants_host = ClientTls::load(&files(&dir, "host-h1", "client"), Role::Host).unwrap();
    let (addr, h) = serve_one(server.clone(), |r| r.map(|_| ()));
    let e = ClientStream::connect(&wants_host, TcpStream::connect(addr).unwrap(), deadline())
        .unwrap_err();
    assert!(e.to_string().contains("expected a host"), "{e}");
    assert!(h.join().unwrap().is_err());

    // Plain bytes where a ClientHello belongs.
    let (addr, h) = serve_one(server, |r| r.map(|_| ()));
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"FTAB\x01\x02\x00\x00garbage").unwrap();
    let e = h.join().unwrap().unwrap_err();
    assert!(matches!(e, ftvm_tls::TlsError::Tls(_)), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}
