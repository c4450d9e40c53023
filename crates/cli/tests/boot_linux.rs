//! End-to-end: boot the real guest (Debian's OpenSBI, Linux 6.1, busybox)
//! on ftvm, type commands on the console, check the answers, power off and
//! check the exit status. The guest image comes from `guest/build.sh`
//! (cached; built on first use) or from `FTVM_GUEST_DIR`.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FTVM_GUEST_DIR") {
        return PathBuf::from(d);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("guest/build.sh"))
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

/// A guest console driven through pipes.
struct Guest {
    child: Child,
    rx: Receiver<Vec<u8>>,
    seen: String,
}

impl Guest {
    fn boot(extra: &[&str]) -> Guest {
        let dir = guest_dir();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftvm"));
        cmd.arg("run")
            .arg("--bios")
            .arg(dir.join("fw_jump.bin"))
            .arg("--kernel")
            .arg(dir.join("Image"))
            .arg("--initrd")
            .arg(dir.join("initrd.cpio.gz"))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start ftvm");
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
        }
    }

    /// Waits until the console output (since the last match) contains `pat`;
    /// returns the text before it.
    fn expect(&mut self, pat: &str, timeout: Duration) -> String {
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
                Ok(b) => self.seen.push_str(&String::from_utf8_lossy(&b)),
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

    fn send(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(line.as_bytes())
            .expect("write to guest console");
        stdin.write_all(b"\n").expect("write");
        stdin.flush().expect("flush");
    }

    /// Runs a shell command and returns its output, delimited by markers the
    /// command line itself does not contain verbatim.
    fn sh(&mut self, cmd: &str) -> String {
        self.send(&format!("echo '<'OUT'>'; {cmd}; echo '<'END'>'"));
        self.expect("<OUT>", Duration::from_secs(60));
        let out = self.expect("<END>", Duration::from_secs(120));
        out.trim().replace('\r', "")
    }

    fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ftvm did not exit after poweroff; console:\n{}", self.seen);
            }
            while let Ok(b) = self.rx.try_recv() {
                self.seen.push_str(&String::from_utf8_lossy(&b));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn boots_linux_to_a_shell_and_answers() {
    let mut g = Guest::boot(&[]);
    g.expect("ftvm-guest: ready", Duration::from_secs(120));
    assert_eq!(g.sh("echo $((6*7))"), "42");
    assert_eq!(g.sh("uname -m"), "riscv64");
    // The same file's md5 computed on the host from the recipe's copy.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let host = Command::new("md5sum")
        .arg(root.join("guest/rootfs/etc/ftvm-test.txt"))
        .output()
        .expect("md5sum on the host");
    let expected = String::from_utf8_lossy(&host.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    let md5 = g.sh("md5sum /etc/ftvm-test.txt");
    assert!(
        !expected.is_empty() && md5.starts_with(&expected),
        "md5sum said {md5:?}, expected {expected:?}"
    );
    assert_eq!(
        g.sh("awk 'BEGIN { printf \"%.6f\\n\", atan2(1, 1) * 4 / 3 }'"),
        "1.047198"
    );
    assert_eq!(
        g.sh(
            "awk 'BEGIN { x = 0; for (i = 1; i <= 1000; i++) x += 1 / i; printf \"%.10f\\n\", x }'"
        ),
        "7.4854708606"
    );
    // The RTC gave the guest the real date.
    let year: i32 = g.sh("date +%Y").parse().expect("a year");
    assert!(year >= 2024, "guest year {year}");
    g.send("poweroff -f");
    assert_eq!(
        g.wait_exit(Duration::from_secs(60)),
        0,
        "poweroff must exit with status 0"
    );
}
