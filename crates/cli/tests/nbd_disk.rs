//! End-to-end tests for `ftvm storage`, `ftvm arbiter` and guest disks on
//! NBD (`--drive nbd://HOST:PORT/EXPORT`). Every server is a real process:
//! `ftvm storage` started on port 0 (its stdout names the bound addresses)
//! or `qemu-nbd`; guests are the image of `guest/build.sh`, whose init
//! mounts `/dev/vda` on `/data` (formatting a blank disk first).
//!
//! - `storage_serves_qemu_tools_and_survives_garbage`: `qemu-img info` and
//!   `qemu-io` against `ftvm storage`; garbage on both ports is refused and
//!   the server keeps serving.
//! - `arbiter_command_queries_and_advances`: `ftvm arbiter` query/history/
//!   advance, a refused advance and an unreachable arbiter.
//! - `storage_stops_cleanly_on_sigterm_and_sigint`.
//! - `storage_killed_mid_stream_loses_no_acknowledged_write`: the Rust NBD
//!   client against an `ftvm storage` that is SIGKILLed and restarted.
//! - `guest_disk_on_ftvm_storage_survives_reboot`,
//!   `guest_disk_on_qemu_nbd_survives_reboot`: a file written and synced in
//!   the guest, poweroff, a second boot reads it back.
//! - `guest_dd_survives_storage_sigkill`: the storage server is SIGKILLed
//!   while the guest writes with `dd conv=fsync` and restarted a second later
//!   on the same port; every dd completes and the data reads back.
//!
//! Tests that need the qemu tools (Debian `qemu-utils`) or a built guest
//! image (`guest/build.sh`, or `FTVM_GUEST_DIR`) print a note and pass when
//! those are missing; none needs root. Guests boot one at a time.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::{ftvm, repo_root, Guest};
use ftvm_storage::{ArbiterClient, NbdClient, NbdClientOptions};

/// Size of a guest data disk.
const DISK: &str = "64M";
const DISK_BYTES: u64 = 64 << 20;

static VM_LOCK: Mutex<()> = Mutex::new(());

/// One booting test at a time; a failed (poisoned) test does not block the rest.
fn vm_lock() -> MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

fn have_tools(test: &str, tools: &[&str]) -> bool {
    for t in tools {
        if !on_path(t) {
            eprintln!("note: skipping {test}: `{t}` is not installed (apt-get install qemu-utils)");
            return false;
        }
    }
    true
}

/// The built guest image, without building it: `FTVM_GUEST_DIR`, or the
/// cache directory `guest/build.sh --print-dir` names if it is complete.
fn guest_dir(test: &str) -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FTVM_GUEST_DIR") {
        return Some(PathBuf::from(d));
    }
    let out = Command::new(repo_root().join("guest/build.sh"))
        .arg("--print-dir")
        .stderr(Stdio::null())
        .output();
    let dir = out.ok().and_then(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .map(|l| PathBuf::from(l.trim()))
    });
    match dir {
        Some(d) if d.join(".complete").is_file() => Some(d),
        _ => {
            eprintln!("note: skipping {test}: the guest image is not built (run guest/build.sh)");
            None
        }
    }
}

fn guest_run_args(guest: &Path, drive: &str) -> Vec<String> {
    vec![
        "run".into(),
        "--bios".into(),
        guest.join("fw_jump.bin").display().to_string(),
        "--kernel".into(),
        guest.join("Image").display().to_string(),
        "--initrd".into(),
        guest.join("initrd.cpio.gz").display().to_string(),
        "--drive".into(),
        drive.into(),
        // These servers speak plain TCP; TLS to storage is tls_storage.rs's
        // and ft_failover.rs's business.
        "--insecure".into(),
    ]
}

/// A scratch directory per test; removed when the test passes, kept (and
/// named) when it fails.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("ftvm-nbd-disk-{}-{tag}", std::process::id()));
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

/// A running `ftvm storage`; killed on drop. Its stderr is echoed and kept.
struct Storage {
    child: Child,
    nbd: SocketAddr,
    arbiter: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Storage {
    fn start(dir: &Path, nbd: &str, arbiter: &str, extra: &[&str]) -> Storage {
        let mut child = ftvm()
            .arg("storage")
            .arg("--insecure")
            .arg("--dir")
            .arg(dir)
            .args(["--nbd-listen", nbd, "--arbiter-listen", arbiter])
            .args(extra)
            // Connections entering transmission are logged at info.
            .env("FTVM_LOG", "info")
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
                let text = String::from_utf8_lossy(&buf[..n]);
                eprint!("[storage] {text}");
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&text);
            }
        });
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut addr = |tag: &str| -> SocketAddr {
            let line = match lines.next() {
                Some(Ok(l)) => l,
                other => {
                    let status = child.wait();
                    panic!("ftvm storage printed no {tag} line ({other:?}), exit {status:?}");
                }
            };
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

    /// SIGKILL: no chance to finish anything.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid; no memory is passed.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig})");
    }

    fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("ftvm storage did not exit within {timeout:?}");
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Reads until the peer closes; returns what arrived. Panics if the peer
/// keeps the connection open past `timeout`.
fn read_until_closed(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let deadline = Instant::now() + timeout;
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("read: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the server kept a garbage connection open for {timeout:?}"
        );
    }
}

fn qemu_img_info(url: &str) -> String {
    let out = run(Command::new("qemu-img").args(["info", url]));
    assert!(
        out.status.success(),
        "qemu-img info {url}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn storage_serves_qemu_tools_and_survives_garbage() {
    let test = "storage_serves_qemu_tools_and_survives_garbage";
    if !have_tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let scratch = Scratch::new("qemu");
    let dir = scratch.path("store");
    let srv = Storage::start(
        &dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--create", "vm1=1M", "--default-export", "vm1"],
    );
    // Bytes put into the image behind the server's back are what it serves.
    let img = dir.join("vm1.img");
    assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 20);
    let mut f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.write_all(b"ftvm-nbd-disk!").unwrap();
    drop(f);

    let url = format!("nbd://{}/vm1", srv.nbd);
    let info = qemu_img_info(&url);
    assert!(info.contains("1048576 bytes"), "{info}");
    // The empty name is the default export.
    let info = qemu_img_info(&format!("nbd://{}", srv.nbd));
    assert!(info.contains("1048576 bytes"), "{info}");

    let read = |url: &str| {
        let out = run(Command::new("qemu-io").args(["-f", "raw", "-c", "read -v 0 512", url]));
        assert!(out.status.success(), "qemu-io: {}", text(&out.stderr));
        // The last line is timing; the dump and the byte count are stable.
        let dump = text(&out.stdout);
        dump.lines()
            .filter(|l| !l.contains("ops/sec"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let dump = read(&url);
    assert!(
        dump.starts_with("00000000:  66 74 76 6d 2d 6e 62 64 2d 64 69 73 6b 21 00 00"),
        "{dump}"
    );
    assert!(dump.contains("read 512/512 bytes at offset 0"), "{dump}");

    // NBD: a client that sets flags the server does not know is closed
    // right after the greeting; so is one sending bytes that are no protocol.
    let mut s = TcpStream::connect(srv.nbd).unwrap();
    let mut greeting = [0u8; 18];
    s.read_exact(&mut greeting).unwrap();
    assert_eq!(&greeting[..16], b"NBDMAGICIHAVEOPT");
    s.write_all(&[0xff; 4]).unwrap();
    let rest = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(rest.is_empty(), "no answer to bad client flags: {rest:?}");

    let mut s = TcpStream::connect(srv.nbd).unwrap();
    s.write_all(&[0, 0, 0, 3]).unwrap();
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let _ = s.write_all(&garbage);
    read_until_closed(&mut s, Duration::from_secs(10));

    // Arbiter: a frame with a wrong magic is closed without an answer.
    let mut s = TcpStream::connect(srv.arbiter).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let _ = s.write_all(&garbage);
    let answer = read_until_closed(&mut s, Duration::from_secs(10));
    assert!(answer.is_empty(), "garbage got an answer: {answer:?}");

    // Both ports still serve.
    assert_eq!(read(&url), dump);
    let q = run(ftvm().args([
        "arbiter",
        "--insecure",
        "--arbiter",
        &srv.arbiter.to_string(),
        "query",
        "vm1",
    ]));
    assert!(q.status.success(), "{}", text(&q.stderr));
    // Each refusal was logged with its reason.
    let log = srv.log();
    assert!(
        log.contains("nbd: closing connection: unknown client flags"),
        "{log}"
    );
    assert!(
        log.contains("nbd: closing connection: bad option magic"),
        "{log}"
    );
    assert!(
        log.contains("arbiter: closing connection: bad frame magic"),
        "{log}"
    );
}

fn arbiter_cmd(arb: &str, args: &[&str]) -> Output {
    let mut cmd = ftvm();
    cmd.args(["arbiter", "--insecure", "--arbiter", arb])
        .args(args);
    run(&mut cmd)
}

#[test]
fn arbiter_command_queries_and_advances() {
    let scratch = Scratch::new("arbiter");
    let srv = Storage::start(&scratch.path("store"), "127.0.0.1:0", "127.0.0.1:0", &[]);
    let arb = srv.arbiter.to_string();
    let ok = |args: &[&str]| {
        let out = arbiter_cmd(&arb, args);
        assert!(
            out.status.success(),
            "ftvm arbiter {args:?}: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    };
    assert_eq!(ok(&["query", "vm1"]), "generation 0\nholder -\nwins 0\n");
    assert_eq!(ok(&["history", "vm1"]), "");
    assert_eq!(ok(&["advance", "vm1", "2"]), "generation 2\n");
    // Advancing to the same generation while nobody holds it is harmless.
    assert_eq!(ok(&["advance", "vm1", "2"]), "generation 2\n");

    let client = ArbiterClient::connect(srv.arbiter).unwrap();
    let t = Duration::from_secs(5);
    assert!(client
        .test_and_set("vm1", 2, "primary@a", t)
        .unwrap()
        .is_won());
    assert_eq!(
        ok(&["query", "vm1"]),
        "generation 2\nholder primary@a\nwins 1\n"
    );
    assert_eq!(ok(&["advance", "vm1", "3"]), "generation 3\n");
    assert!(client
        .test_and_set("vm1", 3, "backup b", t)
        .unwrap()
        .is_won());

    let history = ok(&["history", "vm1"]);
    let lines: Vec<Vec<&str>> = history.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(lines.len(), 2, "{history}");
    assert_eq!(&lines[0][..2], &["2", "primary@a"]);
    assert_eq!(&lines[1][..2], &["3", "backup b"]);
    for l in &lines {
        // e.g. 2025-01-31T12:34:56.789Z
        assert_eq!(l.len(), 3, "{history}");
        assert!(
            l[2].len() == 24 && l[2].ends_with('Z') && l[2].starts_with("20"),
            "{history}"
        );
    }

    // Going back is refused, with the arbiter's reason.
    let out = arbiter_cmd(&arb, &["advance", "vm1", "1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("refused") && err.contains("already at 3"),
        "{err}"
    );
    // Bad arguments are the argument parser's errors.
    let out = arbiter_cmd(&arb, &["advance", "vm1", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Nobody listening: a clear error, quickly.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let t0 = Instant::now();
    let out = arbiter_cmd(&dead, &["query", "vm1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("ftvm storage"),
        "{err}"
    );
    // One line of error, besides --insecure's warning.
    let errors = err.lines().filter(|l| !l.contains("--insecure")).count();
    assert_eq!(errors, 1, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[test]
fn storage_stops_cleanly_on_sigterm_and_sigint() {
    let scratch = Scratch::new("signals");
    let dir = scratch.path("store");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let mut srv = Storage::start(&dir, "127.0.0.1:0", "127.0.0.1:0", &["--create", "d=4096"]);
        // With a client connected, too.
        let client = NbdClient::connect(srv.nbd, "d").unwrap();
        client.write_at(0, b"x", false).unwrap();
        srv.signal(sig);
        assert_eq!(
            srv.wait_exit(Duration::from_secs(10)),
            Some(0),
            "signal {sig}"
        );
        // The directory is free again for the next round.
    }
}

fn patient() -> NbdClientOptions {
    NbdClientOptions {
        backoff_initial: Duration::from_millis(10),
        backoff_max: Duration::from_millis(100),
        retry_for: Some(Duration::from_secs(60)),
        ..NbdClientOptions::default()
    }
}

#[test]
fn storage_killed_mid_stream_loses_no_acknowledged_write() {
    let scratch = Scratch::new("sigkill");
    let dir = scratch.path("store");
    let srv = Storage::start(&dir, "127.0.0.1:0", "127.0.0.1:0", &["--create", "disk=8M"]);
    let (nbd, arb) = (srv.nbd, srv.arbiter);
    assert!(ArbiterClient::connect(arb)
        .unwrap()
        .test_and_set("vm", 3, "primary", Duration::from_secs(5))
        .unwrap()
        .is_won());

    let c = Arc::new(NbdClient::connect_with(nbd, "disk", patient()).unwrap());
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (c, acked) = (c.clone(), acked.clone());
        std::thread::spawn(move || {
            for i in 0..128u64 {
                let pattern = (i % 250) as u8 + 1;
                c.write_at(i * 65536, &vec![pattern; 65536], false).unwrap();
                acked.lock().unwrap().push(i);
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    // Let some writes through, then kill the server without warning.
    while acked.lock().unwrap().len() < 20 {
        std::thread::sleep(Duration::from_millis(5));
    }
    srv.kill();
    let at_kill = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(300));
    let srv2 = Storage::start(&dir, &nbd.to_string(), &arb.to_string(), &[]);
    assert_eq!((srv2.nbd, srv2.arbiter), (nbd, arb));
    writer.join().unwrap();
    assert!(at_kill < 128, "the kill happened mid-stream");
    assert!(c.reconnects() >= 1);

    let file = std::fs::read(dir.join("disk.img")).unwrap();
    for i in acked.lock().unwrap().iter() {
        let pattern = (i % 250) as u8 + 1;
        let at = (*i as usize) * 65536;
        assert!(
            file[at..at + 65536].iter().all(|&b| b == pattern),
            "acknowledged write {i} is missing"
        );
    }
    let status = ArbiterClient::connect(arb)
        .unwrap()
        .query("vm", Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        (status.generation, status.holder.as_deref()),
        (3, Some("primary"))
    );
}

/// Types `poweroff` and checks ftvm exits 0.
fn poweroff(g: &mut Guest) {
    g.send("poweroff");
    let code = g.wait_exit(Duration::from_secs(120));
    assert_eq!(
        code, 0,
        "ftvm exit status after poweroff; console:\n{}",
        g.transcript
    );
}

/// Boots with `drive`, writes a file on /data, syncs, powers off; boots
/// again and reads it back. Returns the line written.
fn file_survives_reboot(guest: &Path, drive: &str, tag: &str) -> String {
    let line = format!("ftvm-nbd-{tag}-{}", std::process::id());
    let args = guest_run_args(guest, drive);
    let mut g = Guest::spawn(&args);
    g.wait_for_shell();
    let mounts = g.sh("grep /data /proc/mounts");
    assert!(mounts.starts_with("/dev/vda /data"), "{mounts}");
    g.sh(&format!("echo {line} > /data/hello && sync"));
    poweroff(&mut g);
    assert!(
        g.transcript.contains("formatted /dev/vda"),
        "a blank disk is formatted at first boot"
    );

    let mut g = Guest::spawn(&args);
    g.wait_for_shell();
    assert!(!g.transcript.contains("formatted /dev/vda"), "no reformat");
    assert_eq!(g.sh("cat /data/hello"), line);
    poweroff(&mut g);
    line
}

/// The file's bytes contain `needle` somewhere.
fn image_contains(img: &Path, needle: &str) -> bool {
    let data = std::fs::read(img).expect("read image");
    data.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn guest_disk_on_ftvm_storage_survives_reboot() {
    let test = "guest_disk_on_ftvm_storage_survives_reboot";
    let Some(guest) = guest_dir(test) else { return };
    let _vm = vm_lock();
    let scratch = Scratch::new("guest-storage");
    let dir = scratch.path("store");
    let srv = Storage::start(
        &dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--create", &format!("vm1={DISK}")],
    );
    let line = file_survives_reboot(&guest, &format!("nbd://{}/vm1", srv.nbd), "storage");
    drop(srv);
    assert!(image_contains(&dir.join("vm1.img"), &line));
}

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests).
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct QemuNbd(Child);

impl Drop for QemuNbd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn guest_disk_on_qemu_nbd_survives_reboot() {
    let test = "guest_disk_on_qemu_nbd_survives_reboot";
    if !have_tools(test, &["qemu-nbd"]) {
        return;
    }
    let Some(guest) = guest_dir(test) else { return };
    let _vm = vm_lock();
    let scratch = Scratch::new("guest-qemu-nbd");
    let img = scratch.path("vm1.img");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(DISK_BYTES))
        .expect("create image");
    let port = free_port();
    let child = Command::new("qemu-nbd")
        .args(["-f", "raw", "-x", "vm1", "-b", "127.0.0.1", "-t"])
        .args(["-p", &port.to_string()])
        .arg(&img)
        .stdin(Stdio::null())
        .spawn()
        .expect("start qemu-nbd");
    let server = QemuNbd(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "qemu-nbd did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let line = file_survives_reboot(&guest, &format!("nbd://127.0.0.1:{port}/vm1"), "qemu");
    drop(server);
    assert!(image_contains(&img, &line));
}

#[test]
fn guest_dd_survives_storage_sigkill() {
    let test = "guest_dd_survives_storage_sigkill";
    let Some(guest) = guest_dir(test) else { return };
    let _vm = vm_lock();
    let scratch = Scratch::new("guest-sigkill");
    let dir = scratch.path("store");
    let srv = Storage::start(
        &dir,
        "127.0.0.1:0",
        "127.0.0.1:0",
        &["--create", &format!("vm1={DISK}")],
    );
    let (nbd, arb) = (srv.nbd, srv.arbiter);
    let mut g = Guest::spawn(&guest_run_args(&guest, &format!("nbd://{nbd}/vm1")));
    g.wait_for_shell();
    let src = g.sh("dd if=/dev/urandom of=/tmp/src bs=64k count=8 2>/dev/null; md5sum </tmp/src");
    let md5 = src
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(md5.len(), 32, "{src}");

    // Many synced writes in a row, so the kill lands in the middle of them.
    const ROUNDS: u32 = 48;
    g.send(&format!(
        "i=0; while [ $i -lt {ROUNDS} ]; do dd if=/tmp/src of=/data/f$i bs=64k conv=fsync 2>/dev/null || echo DD'-'FAILED-$i; echo wrote-$i; i=$((i+1)); done; echo LOOP'-'DONE"
    ));
    g.expect("wrote-2", Duration::from_secs(300));
    srv.kill();
    let killed_at = Instant::now();
    assert!(
        !g.seen.contains(&format!("wrote-{}", ROUNDS - 1)),
        "the loop ended before the kill; console:\n{}",
        g.transcript
    );
    std::thread::sleep(Duration::from_secs(1));
    let srv2 = Storage::start(&dir, &nbd.to_string(), &arb.to_string(), &[]);
    g.expect("LOOP-DONE", Duration::from_secs(300));
    // ftvm's NBD client came back to the new server by itself.
    assert!(
        srv2.log().contains("nbd: client entered transmission"),
        "{}",
        srv2.log()
    );
    eprintln!(
        "note: the loop finished {:.1} s after the storage server was killed",
        killed_at.elapsed().as_secs_f64()
    );
    assert!(
        !g.transcript.contains("DD-FAILED"),
        "a dd failed; console:\n{}",
        g.transcript
    );
    // Read back from the disk, not the page cache.
    let sums = g.sh("sync; echo 3 > /proc/sys/vm/drop_caches; md5sum /data/f*");
    // (The kernel may log the drop_caches on the console too.)
    let lines: Vec<&str> = sums.lines().filter(|l| l.contains("/data/f")).collect();
    assert_eq!(lines.len(), ROUNDS as usize, "{sums}");
    for l in lines {
        assert!(l.starts_with(&md5), "{l} (expected {md5})");
    }
    poweroff(&mut g);
}
