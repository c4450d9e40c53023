//! TLS on the storage host's channels, with real processes: certificates
//! from `ftvm certs init`, `ftvm storage --tls-*`, qemu-img/qemu-io and
//! nbdinfo (libnbd) as TLS clients of it, our NBD client against
//! `qemu-nbd --tls-creds`, and the arbiter's identity rules — a host of
//! another VM cannot test-and-set or advance, a client without an operator
//! identity cannot read the history, a plain client and a replayed
//! handshake are refused — each refusal one log line naming the peer, with
//! nothing written. Tests needing qemu-utils or libnbd-bin print a note and
//! pass without them.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ftvm;
use ftvm_storage::arbiter::wire::E_DENIED;
use ftvm_storage::{ArbiterClient, ArbiterError, NbdClient, NbdClientOptions, Outcome};
use ftvm_tls::{ClientTls, Role, TlsFiles};

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn have_tools(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !on_path(t) {
            eprintln!("note: skipping {test}: `{t}` is not installed (qemu-utils, libnbd-bin)");
            return false;
        }
    }
    true
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("ftvm-tls-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run command")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `ftvm certs init`: hosts h1, h2 of vm0, h3 of vm1, operator alice.
fn make_certs(s: &Scratch) -> PathBuf {
    let dir = s.path("certs");
    let out = run(ftvm()
        .args(["certs", "init"])
        .arg(&dir)
        .args(["--hosts", "h1,h2", "--vms", "vm0", "--host", "h3=vm1"])
        .args(["--operator", "alice"]));
    assert!(out.status.success(), "certs init: {}", text(&out.stderr));
    dir
}

fn identity_args(certs: &Path, who: &str) -> Vec<String> {
    let side = if who == "storage" { "server" } else { "client" };
    vec![
        "--tls-cert".into(),
        certs
            .join(format!("{who}/{side}-cert.pem"))
            .display()
            .to_string(),
        "--tls-key".into(),
        certs
            .join(format!("{who}/{side}-key.pem"))
            .display()
            .to_string(),
        "--tls-ca".into(),
        certs.join("ca-cert.pem").display().to_string(),
    ]
}

fn client_tls(certs: &Path, who: &str) -> ClientTls {
    let f = TlsFiles {
        cert: certs.join(format!("{who}/client-cert.pem")),
        key: certs.join(format!("{who}/client-key.pem")),
        ca: certs.join("ca-cert.pem"),
    };
    ClientTls::load(&f, Role::Storage).expect("load client TLS")
}

/// A running `ftvm storage` with TLS; killed on drop.
struct Storage {
    child: Child,
    nbd: SocketAddr,
    arbiter: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Storage {
    fn start(dir: &Path, certs: &Path) -> Storage {
        let mut child = ftvm()
            .arg("storage")
            .args(identity_args(certs, "storage"))
            .arg("--dir")
            .arg(dir)
            .args([
                "--nbd-listen",
                "127.0.0.1:0",
                "--arbiter-listen",
                "127.0.0.1:0",
            ])
            .args(["--create", "vm0=1M", "--create", "vm1=1M"])
            .env("FTVM_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ftvm storage");
        let log = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let t = String::from_utf8_lossy(&buf[..n]);
                eprint!("[storage] {t}");
                sink.lock().unwrap_or_else(|e| e.into_inner()).push_str(&t);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addr = |tag: &str| -> SocketAddr {
            let line = lines.next().expect("an address line").expect("stdout");
            line.strip_prefix(tag)
                .and_then(|r| r.trim().parse().ok())
                .unwrap_or_else(|| panic!("unexpected output {line:?}"))
        };
        let nbd = addr("nbd ");
        let arbiter = addr("arbiter ");
        Storage {
            child,
            nbd,
            arbiter,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log holds `pat` (log lines are written asynchronously).
    fn wait_log(&self, pat: &str) -> String {
        let t = Instant::now();
        loop {
            let l = self.log();
            if l.contains(pat) || t.elapsed() > Duration::from_secs(10) {
                return l;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The log line that holds `pat`, checked to name a peer.
fn log_line<'a>(log: &'a str, pat: &str) -> &'a str {
    let line = log
        .lines()
        .find(|l| l.contains(pat))
        .unwrap_or_else(|| panic!("no log line with {pat:?} in:\n{log}"));
    assert!(line.contains("peer=127.0.0.1:"), "names the peer: {line}");
    line
}

fn qemu_tls_object(certs: &Path, who: &str) -> String {
    format!(
        "tls-creds-x509,id=tls0,endpoint=client,dir={}",
        certs.join(who).display()
    )
}

fn qemu_image_opts(addr: SocketAddr, export: &str) -> String {
    format!(
        "driver=nbd,host={},port={},export={export},tls-creds=tls0",
        addr.ip(),
        addr.port()
    )
}

#[test]
fn nbd_over_tls_with_qemu_nbdinfo_and_our_client() {
    if !have_tools("nbd_over_tls", &["qemu-io", "nbdinfo"]) {
        return;
    }
    let s = Scratch::new("nbd");
    let certs = make_certs(&s);
    let srv = Storage::start(&s.path("store"), &certs);

    // qemu-io as host h1 writes vm0 over TLS.
    let w = run(Command::new("qemu-io")
        .args(["--object", &qemu_tls_object(&certs, "host-h1")])
        .args(["--image-opts", &qemu_image_opts(srv.nbd, "vm0")])
        .args(["-c", "write -P 0xa5 4096 8192"]));
    assert!(
        w.status.success(),
        "qemu-io: {}{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    let img = std::fs::read(s.path("store/vm0.img")).expect("image");
    assert!(img[4096..12288].iter().all(|&b| b == 0xa5));

    // Our client as h2 reads it back and writes; qemu-io as the operator sees it.
    let opts = NbdClientOptions {
        tls: Some(client_tls(&certs, "host-h2")),
        retry_for: Some(Duration::from_secs(5)),
        ..NbdClientOptions::default()
    };
    let c = NbdClient::connect_with(srv.nbd, "vm0", opts).expect("our TLS client");
    let mut buf = vec![0u8; 8192];
    c.read_at(4096, &mut buf).expect("read");
    assert!(buf.iter().all(|&b| b == 0xa5));
    c.write_at(65536, &[0x3c; 4096], false).expect("write");
    drop(c);
    let r = run(Command::new("qemu-io")
        .args(["--object", &qemu_tls_object(&certs, "operator-alice")])
        .args(["--image-opts", &qemu_image_opts(srv.nbd, "vm0")])
        .args(["-c", "read -P 0x3c 65536 4096"]));
    assert!(
        r.status.success() && !text(&r.stdout).contains("Pattern verification failed"),
        "qemu-io read: {}{}",
        text(&r.stdout),
        text(&r.stderr)
    );

    // nbdinfo with the operator's directory; a host lists only its VM's exports.
    let uri = |who: &str, export: &str| {
        format!(
            "nbds://{}/{export}?tls-certificates={}",
            srv.nbd,
            certs.join(who).display()
        )
    };
    let size = run(Command::new("nbdinfo").args(["--size", &uri("operator-alice", "vm1")]));
    assert_eq!(
        text(&size.stdout).trim(),
        "1048576",
        "{}",
        text(&size.stderr)
    );
    let list = run(Command::new("nbdinfo").args(["--list", &uri("host-h3", "")]));
    let listed = text(&list.stdout);
    assert!(
        listed.contains("vm1") && !listed.contains("\"vm0\""),
        "{listed}"
    );

    // A host of vm1 cannot open vm0: refused by policy, one log line.
    let denied = run(Command::new("nbdinfo").args(["--size", &uri("host-h3", "vm0")]));
    assert!(!denied.status.success());
    log_line(
        &srv.wait_log("may not open export"),
        "host h3 (VMs vm1) may not open export \"vm0\"",
    );

    // nbdinfo without credentials gets nothing.
    let plain = run(Command::new("nbdinfo").args(["--size", &format!("nbd://{}/vm0", srv.nbd)]));
    assert!(!plain.status.success());
    assert!(plain.stdout.is_empty(), "{}", text(&plain.stdout));
    assert!(
        text(&plain.stderr).contains("TLS"),
        "{}",
        text(&plain.stderr)
    );
    log_line(
        &srv.wait_log("did not start TLS"),
        "refused: client did not start TLS",
    );

    // Our client without TLS is told why.
    let opts = NbdClientOptions {
        retry_for: Some(Duration::from_secs(1)),
        ..NbdClientOptions::default()
    };
    let e = NbdClient::connect_with(srv.nbd, "vm0", opts).unwrap_err();
    assert!(e.to_string().contains("requires TLS"), "{e}");

    // A certificate from another CA: the handshake fails, one log line.
    let other = Scratch::new("nbd-other");
    let foreign = make_certs(&other);
    let f = run(Command::new("nbdinfo").args([
        "--size",
        &format!(
            "nbds://{}/vm0?tls-certificates={}",
            srv.nbd,
            foreign.join("host-h1").display()
        ),
    ]));
    assert!(!f.status.success());
    log_line(
        &srv.wait_log("TLS handshake failed"),
        "refused: TLS handshake failed",
    );
}

#[test]
fn our_client_against_qemu_nbd_with_tls() {
    if !have_tools("qemu_nbd_tls", &["qemu-nbd"]) {
        return;
    }
    let s = Scratch::new("qemu-nbd");
    let certs = make_certs(&s);
    let img = s.path("disk.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).expect("image");
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").expect("port");
        l.local_addr().expect("addr").port()
    };
    let mut q = Command::new("qemu-nbd")
        .args([
            "-f",
            "raw",
            "-x",
            "vm0",
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
        ])
        .args([
            "--object",
            &format!(
                "tls-creds-x509,id=tls0,endpoint=server,dir={}",
                certs.join("storage").display()
            ),
            "--tls-creds",
            "tls0",
        ])
        .arg(&img)
        .stdin(Stdio::null())
        .spawn()
        .expect("start qemu-nbd");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let t = Instant::now();
    while TcpStream::connect(addr).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "qemu-nbd did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let opts = NbdClientOptions {
        tls: Some(client_tls(&certs, "host-h1")),
        retry_for: Some(Duration::from_secs(5)),
        ..NbdClientOptions::default()
    };
    let c = NbdClient::connect_with(addr, "vm0", opts).expect("TLS client on qemu-nbd");
    assert_eq!(c.size(), 1 << 20);
    c.write_at(8192, &[0x77; 4096], true).expect("write");
    let mut back = vec![0u8; 4096];
    c.read_at(8192, &mut back).expect("read");
    assert!(back.iter().all(|&b| b == 0x77));
    drop(c);
    // Without TLS, qemu-nbd refuses our client.
    let plain = NbdClientOptions {
        retry_for: Some(Duration::from_secs(1)),
        ..NbdClientOptions::default()
    };
    assert!(NbdClient::connect_with(addr, "vm0", plain).is_err());
    let _ = q.kill();
    let _ = q.wait();
    let data = std::fs::read(&img).expect("image");
    assert!(data[8192..12288].iter().all(|&b| b == 0x77));
}

fn arbiter(srv: &Storage, certs: &Path, who: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = ftvm();
    cmd.args([
        "arbiter",
        "--arbiter",
        &srv.arbiter.to_string(),
        "--timeout",
        "3",
    ]);
    match who {
        Some(w) => cmd.args(identity_args(certs, w)),
        None => cmd.arg("--insecure"),
    };
    run(cmd.args(args))
}

#[test]
fn arbiter_identities() {
    let s = Scratch::new("arbiter");
    let certs = make_certs(&s);
    let srv = Storage::start(&s.path("store"), &certs);

    // The operator advances vm0 and reads its history.
    let a = arbiter(
        &srv,
        &certs,
        Some("operator-alice"),
        &["advance", "vm0", "3"],
    );
    assert!(a.status.success(), "{}", text(&a.stderr));

    // A host of vm1 cannot advance vm0, nor can a plain client; a host of
    // vm0 cannot read the history.
    let t = Instant::now();
    let a = arbiter(&srv, &certs, Some("host-h3"), &["advance", "vm0", "9"]);
    assert!(!a.status.success());
    assert!(
        text(&a.stderr).contains("may not advance VM \"vm0\""),
        "{}",
        text(&a.stderr)
    );
    let a = arbiter(&srv, &certs, None, &["advance", "vm0", "9"]);
    assert!(!a.status.success());
    assert!(
        text(&a.stderr).contains("requires TLS"),
        "{}",
        text(&a.stderr)
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "refusals are immediate, not timeouts"
    );
    let h = arbiter(&srv, &certs, Some("host-h1"), &["history", "vm0"]);
    assert!(!h.status.success());
    let log = srv.wait_log("may not read the history");
    log_line(
        &log,
        "refused: host h3 (VMs vm1) may not advance VM \"vm0\"",
    );
    log_line(&log, "refused: client sent a plain arbiter frame");
    log_line(
        &log,
        "refused: host h1 (VMs vm0) may not read the history of VM \"vm0\"",
    );

    // Test-and-set: only a host of the VM.
    let h3 = ArbiterClient::connect_with(
        srv.arbiter,
        Duration::from_secs(3),
        Some(client_tls(&certs, "host-h3")),
    )
    .expect("h3 connects");
    match h3.test_and_set("vm0", 3, "backup", Duration::from_secs(3)) {
        Err(ArbiterError::Refused { code, .. }) => assert_eq!(code, E_DENIED),
        other => panic!("h3 on vm0: {other:?}"),
    }
    let h1 = ArbiterClient::new(srv.arbiter).with_tls(client_tls(&certs, "host-h1"));
    assert_eq!(
        h1.test_and_set("vm0", 3, "backup", Duration::from_secs(3))
            .expect("h1"),
        Outcome::Won { generation: 3 }
    );
    // Nothing the refused requests asked for was written.
    let q = arbiter(&srv, &certs, Some("operator-alice"), &["query", "vm0"]);
    assert_eq!(text(&q.stdout), "generation 3\nholder backup\nwins 1\n");
    let q = arbiter(&srv, &certs, Some("operator-alice"), &["query", "vm1"]);
    assert_eq!(text(&q.stdout), "generation 0\nholder -\nwins 0\n");
}

#[test]
fn a_replayed_handshake_is_refused() {
    let s = Scratch::new("replay");
    let certs = make_certs(&s);
    let srv = Storage::start(&s.path("store"), &certs);

    // A relay that records what an operator's `ftvm arbiter advance` sends.
    let relay = TcpListener::bind("127.0.0.1:0").expect("relay");
    let relay_addr = relay.local_addr().expect("addr");
    let target = srv.arbiter;
    let recorder = std::thread::spawn(move || {
        let (mut client, _) = relay.accept().expect("accept");
        let mut server = TcpStream::connect(target).expect("connect");
        let mut back = server.try_clone().expect("clone");
        let mut client_back = client.try_clone().expect("clone");
        let t = std::thread::spawn(move || {
            let _ = std::io::copy(&mut back, &mut client_back);
        });
        let mut recorded = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Both);
        let _ = t.join();
        recorded
    });
    let mut cmd = ftvm();
    cmd.args(["arbiter", "--arbiter", &relay_addr.to_string()])
        .args(identity_args(&certs, "operator-alice"))
        .args(["advance", "vm0", "5"]);
    let a = run(&mut cmd);
    assert!(a.status.success(), "{}", text(&a.stderr));
    let recorded = recorder.join().expect("recorder");
    assert!(
        recorded.len() > 500,
        "a TLS handshake was recorded ({} bytes)",
        recorded.len()
    );
    srv.wait_log("generation advanced");

    // Send the recording again on a fresh connection.
    let mut replay = TcpStream::connect(srv.arbiter).expect("connect");
    replay.write_all(&recorded).expect("replay");
    replay
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut answer = Vec::new();
    let _ = replay.read_to_end(&mut answer);
    assert!(
        !answer.windows(4).any(|w| w == b"FTAB"),
        "no arbiter frame to a replay"
    );
    let log = srv.wait_log("TLS handshake failed");
    log_line(&log, "arbiter: refused: TLS handshake failed");
    assert_eq!(log.matches("generation advanced").count(), 1, "{log}");
    let q = arbiter(&srv, &certs, Some("operator-alice"), &["history", "vm0"]);
    assert!(q.status.success(), "{}", text(&q.stderr));
    let q = arbiter(&srv, &certs, Some("operator-alice"), &["query", "vm0"]);
    assert_eq!(text(&q.stdout), "generation 5\nholder -\nwins 0\n");
}
