//! End-to-end tests of the `ftvm-loadgen` binary against a real, local
//! `redis-server` (one per test, on a free port, no persistence): a counted
//! write followed by verify; a server killed mid-run, which must end the run
//! with exit status 2 and `connection_broken`; a stalled server, which must
//! hit the reply timeout; and the clean ways a run ends (SIGTERM, duration,
//! stop file). Each test is skipped, with a message, when `redis-server` is
//! not installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGEN: &str = env!("CARGO_BIN_EXE_ftvm-loadgen");

fn redis_available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("skipping: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// A scratch directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("ftvm-loadgen-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A redis-server child process, killed when dropped.
struct Redis {
    child: Child,
    addr: String,
}

impl Redis {
    fn start(dir: &Path) -> Redis {
        // redis-server cannot choose its own port: take a free one and release it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let status = Command::new(LOADGEN)
            .args(["ping", "--addr", &redis.addr, "--timeout-ms", "10000"])
            .status()
            .expect("run ftvm-loadgen ping");
        assert!(
            status.success(),
            "redis-server on {} never answered PING",
            redis.addr
        );
        redis
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: plain kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({sig}) redis-server");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_timeout(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait for ftvm-loadgen") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ftvm-loadgen did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the acked file lists at least `n` keys.
fn wait_for_acks(path: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked_lines(path) < n {
        assert!(Instant::now() < deadline, "fewer than {n} acks after 20 s");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn acked_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("read report");
    serde_json::from_str(&text).expect("report is JSON")
}

fn spawn_write(redis: &Redis, scratch: &Scratch, prefix: &str, extra: &[&str]) -> Child {
    Command::new(LOADGEN)
        .args(["write", "--addr", &redis.addr, "--prefix", prefix])
        .arg("--acked-file")
        .arg(scratch.path("acked"))
        .arg("--report")
        .arg(scratch.path("report.json"))
        .args(extra)
        .stderr(Stdio::null())
        .spawn()
        .expect("start ftvm-loadgen write")
}

fn verify(redis: &Redis, scratch: &Scratch, prefix: &str) -> (Option<i32>, Value) {
    let out = Command::new(LOADGEN)
        .args([
            "verify",
            "--addr",
            &redis.addr,
            "--prefix",
            prefix,
            "--batch",
            "300",
        ])
        .arg("--acked-file")
        .arg(scratch.path("acked"))
        .output()
        .expect("run ftvm-loadgen verify");
    let json = serde_json::from_slice(&out.stdout).expect("verify prints JSON");
    (out.status.code(), json)
}

#[test]
fn write_2000_then_verify() {
    if !redis_available() {
        return;
    }
    let scratch = Scratch::new("count");
    let redis = Redis::start(&scratch.0);
    let mut write = spawn_write(
        &redis,
        &scratch,
        "run1",
        &["--count", "2000", "--pipeline", "4"],
    );
    let status = wait_timeout(&mut write, Duration::from_secs(60));
    assert_eq!(status.code(), Some(0));

    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["stop_reason"], "count");
    assert_eq!(report["ops_acked"], 2000);
    assert_eq!(report["first_acked_index"], 0);
    assert_eq!(report["last_acked_index"], 1999);
    assert_eq!(report["unacked_in_flight"], 0);
    assert_eq!(report["connection_broken"], false);
    assert!(report["error"].is_null());
    assert!(report["local_port"].as_u64().is_some_and(|p| p > 0));
    assert!(report["latency_p50_us"].as_u64() <= report["latency_p99_us"].as_u64());
    assert!(report["latency_p99_us"].as_u64() <= report["latency_max_us"].as_u64());
    assert!(report["max_gap_ms"].as_f64().is_some());
    assert_eq!(report["top_gaps"].as_array().map(Vec::len), Some(3));
    assert_eq!(acked_lines(&scratch.path("acked")), 2000);

    let (code, result) = verify(&redis, &scratch, "run1");
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(result["checked"], 2000);
    assert_eq!(result["missing"], 0);
    assert_eq!(result["wrong"], 0);

    // The same indices under another prefix were never written.
    let (code, result) = verify(&redis, &scratch, "run2");
    assert_eq!(code, Some(1));
    assert_eq!(result["missing"], 2000);
}

#[test]
fn server_killed_mid_run_breaks_the_connection() {
    if !redis_available() {
        return;
    }
    let scratch = Scratch::new("kill");
    let mut redis = Redis::start(&scratch.0);
    let mut write = spawn_write(&redis, &scratch, "run1", &[]);
    wait_for_acks(&scratch.path("acked"), 200);
    redis.child.kill().expect("kill redis-server");
    let status = wait_timeout(&mut write, Duration::from_secs(30));
    assert_eq!(status.code(), Some(2));

    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["stop_reason"], "failure");
    assert_eq!(report["connection_broken"], true);
    assert_eq!(report["failure"], "broken");
    assert!(report["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(report["error_at_s"].as_f64().is_some());
    let acked = report["ops_acked"].as_u64().expect("ops_acked");
    assert!(acked >= 200);
    // Every acknowledged key reached the acked file before exit.
    assert_eq!(acked_lines(&scratch.path("acked")) as u64, acked);
}

#[test]
fn stalled_server_hits_the_reply_timeout() {
    if !redis_available() {
        return;
    }
    let scratch = Scratch::new("stall");
    let redis = Redis::start(&scratch.0);
    let mut write = spawn_write(&redis, &scratch, "run1", &["--op-timeout-ms", "300"]);
    wait_for_acks(&scratch.path("acked"), 200);
    redis.signal(libc::SIGSTOP);
    let started = Instant::now();
    let status = wait_timeout(&mut write, Duration::from_secs(30));
    redis.signal(libc::SIGCONT);
    assert_eq!(status.code(), Some(2));
    assert!(started.elapsed() >= Duration::from_millis(250));

    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["failure"], "timeout");
    assert_eq!(report["connection_broken"], true);
    assert_eq!(report["unacked_in_flight"], 1);
}

#[test]
fn sigterm_duration_and_stop_file_end_cleanly() {
    if !redis_available() {
        return;
    }
    let scratch = Scratch::new("clean");
    let redis = Redis::start(&scratch.0);

    let mut write = spawn_write(&redis, &scratch, "sig", &[]);
    wait_for_acks(&scratch.path("acked"), 100);
    // SAFETY: plain kill(2) on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(write.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let status = wait_timeout(&mut write, Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["stop_reason"], "signal");
    assert_eq!(report["connection_broken"], false);
    let (code, result) = verify(&redis, &scratch, "sig");
    assert_eq!(code, Some(0), "{result}");
    assert_eq!(result["checked"], report["ops_acked"]);

    let mut write = spawn_write(&redis, &scratch, "dur", &["--duration", "0.5"]);
    assert_eq!(
        wait_timeout(&mut write, Duration::from_secs(30)).code(),
        Some(0)
    );
    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["stop_reason"], "duration");
    assert!(report["duration_s"].as_f64().is_some_and(|d| d >= 0.5));

    let stop = scratch.path("stop");
    let until = stop.to_str().expect("utf-8 path");
    std::fs::remove_file(scratch.path("acked")).expect("remove old acked file");
    let mut write = spawn_write(&redis, &scratch, "until", &["--until-file", until]);
    wait_for_acks(&scratch.path("acked"), 100);
    std::fs::write(&stop, b"").expect("create stop file");
    assert_eq!(
        wait_timeout(&mut write, Duration::from_secs(30)).code(),
        Some(0)
    );
    let report = read_json(&scratch.path("report.json"));
    assert_eq!(report["stop_reason"], "until_file");
    let (code, result) = verify(&redis, &scratch, "until");
    assert_eq!(code, Some(0), "{result}");
}
