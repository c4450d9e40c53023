//! Shared harness for the integration tests: finding the guest image and
//! driving the `ftvm` binary's console through pipes.

#![allow(dead_code)]

pub mod lab;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guest image directory: `$FTVM_GUEST_DIR`, or whatever `guest/build.sh`
/// prints (it builds on first use, then answers from its cache).
pub fn guest_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(find_guest_dir).clone()
}

fn find_guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTVM_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let out = Command::new(repo_root().join("guest/build.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run guest/build.sh");
    assert!(out.status.success(), "guest/build.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("guest/build.sh printed its output dir")
            .trim(),
    )
}

/// `--bios/--kernel/--initrd` for the guest image.
pub fn guest_image_args() -> Vec<String> {
    let d = guest_dir();
    vec![
        "--bios".into(),
        d.join("fw_jump.bin").display().to_string(),
        "--kernel".into(),
        d.join("Image").display().to_string(),
        "--initrd".into(),
        d.join("initrd.cpio.gz").display().to_string(),
    ]
}

/// `ftvm-loadgen` beside the `ftvm` under test (built if missing): the
/// redis client of the failover tests, and what `ftvm demo --auto` runs.
pub fn loadgen() -> PathBuf {
    let exe = Path::new(env!("CARGO_BIN_EXE_ftvm"))
        .parent()
        .expect("target dir")
        .join("ftvm-loadgen");
    if !exe.exists() {
        let st = Command::new(env!("CARGO"))
            .args(["build", "--release", "-p", "ftvm-loadgen"])
            .status()
            .expect("build ftvm-loadgen");
        assert!(st.success(), "cannot build ftvm-loadgen");
    }
    exe
}

pub fn ftvm() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ftvm"))
}

/// Runs ftvm to completion with a timeout.
pub fn ftvm_output(args: &[String], timeout: Duration) -> Output {
    let mut child = ftvm()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ftvm");
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ftvm {args:?} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("collect output")
}

/// A guest whose console is driven through ftvm's stdin/stdout.
pub struct Guest {
    pub child: Child,
    rx: Receiver<Vec<u8>>,
    /// Console output not yet consumed by `expect`.
    pub seen: String,
    /// Everything the console printed.
    pub transcript: String,
}

impl Guest {
    /// Starts `ftvm ARGS` with piped console.
    pub fn spawn(args: &[String]) -> Guest {
        let mut child = ftvm()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ftvm");
        let mut out = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Guest {
            child,
            rx,
            seen: String::new(),
            transcript: String::new(),
        }
    }

    /// Waits until the console output (since the last match) contains
    /// `pat`; returns the text before it.
    pub fn expect(&mut self, pat: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.seen.find(pat) {
                let before = self.seen[..i].to_string();
                self.seen = self.seen[i + pat.len()..].to_string();
                return before;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let _ = self.child.kill();
                panic!(
                    "timed out waiting for {pat:?}; console so far:\n{}",
                    self.seen
                );
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(b) => self.take(&b),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!(
                        "ftvm exited ({status:?}) while waiting for {pat:?}; console:\n{}",
                        self.seen
                    );
                }
            }
        }
    }

    /// Waits for the boot marker and the first shell prompt.
    pub fn wait_for_shell(&mut self) {
        self.expect("ftvm-guest: ready", Duration::from_secs(120));
        self.expect("# ", Duration::from_secs(60));
    }

    fn take(&mut self, b: &[u8]) {
        let text = String::from_utf8_lossy(b);
        self.seen.push_str(&text);
        self.transcript.push_str(&text);
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(line.as_bytes())
            .expect("write to guest console");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// Runs a shell command and returns its output, delimited by markers
    /// the command line itself does not contain verbatim.
    pub fn sh(&mut self, cmd: &str) -> String {
        self.send(&format!("echo '<'OUT'>'; {cmd}; echo '<'END'>'"));
        self.expect("<OUT>", Duration::from_secs(60));
        let out = self.expect("<END>", Duration::from_secs(120));
        out.trim().replace('\r', "")
    }

    /// Waits for ftvm to exit; returns its status code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                // Collect what was printed before exiting.
                while let Ok(b) = self.rx.recv_timeout(Duration::from_millis(200)) {
                    self.take(&b);
                }
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ftvm did not exit in time; console:\n{}", self.seen);
            }
            while let Ok(b) = self.rx.try_recv() {
                self.take(&b);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
