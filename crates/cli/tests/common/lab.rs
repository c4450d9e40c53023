//! The test network and scratch space for tests that boot the guest on a
//! network: `scripts/netns.sh` under a per-process prefix (torn down by a
//! drop guard, and stray ones of dead test processes removed), a scratch
//! directory kept only when a test fails, the client namespace's commands,
//! and the checks that say why a machine cannot run these tests.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::repo_root;

/// The guest's address on the test network, and its prefix length.
pub const GUEST_IP: &str = "10.77.0.2";
pub const GUEST_CIDR: &str = "10.77.0.2/24";
/// Size of a fresh data disk.
pub const DISK_BYTES: u64 = 64 << 20;
/// Boot to `redis ready` is a few seconds on QEMU; the interpreter is several
/// times slower, and a loaded machine slower still.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// From `poweroff` to ftvm's exit (redis stops, /data is unmounted).
pub const POWEROFF_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound for one client command (seconds, for `timeout`).
pub const CLIENT_TIMEOUT_S: u64 = 120;

pub static VM_LOCK: Mutex<()> = Mutex::new(());

/// One booting test at a time; a failed (poisoned) test does not block the rest.
pub fn vm_lock() -> MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Whether this machine can run the network tests; prints why not.
pub fn network_tests_possible(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: skipping {test}: needs root (network namespaces and TAP devices)");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() {
        eprintln!("note: skipping {test}: /dev/net/tun is missing (modprobe tun)");
        return false;
    }
    for tool in ["ip", "timeout", "redis-cli", "redis-benchmark"] {
        if !on_path(tool) {
            eprintln!(
                "note: skipping {test}: `{tool}` is not installed \
                 (redis-cli/redis-benchmark: apt-get install redis-tools)"
            );
            return false;
        }
    }
    true
}

/// A scratch directory per test; removed when the test passes, kept (and
/// named) when it fails.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("ftvm-guest-net-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("create scratch dir");
        Scratch(d)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A sparse, zero-filled disk image (no filesystem: the guest formats it).
    pub fn fresh_disk(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        let f = fs::File::create(&p).expect("create disk image");
        f.set_len(DISK_BYTES).expect("size disk image");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test files kept in {}", self.0.display());
        } else {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// The test network of `scripts/netns.sh` under one prefix; `down --kill` on drop.
pub struct TestNet {
    pub prefix: String,
    record: PathBuf,
}

/// Where live prefixes are recorded (with the owning pid), so that a later
/// run can remove the networks of runs that died without cleaning up.
pub fn prefix_registry() -> PathBuf {
    std::env::temp_dir().join("ftvm-guest-net-prefixes")
}

pub fn netns(args: &[&str]) -> Output {
    Command::new(repo_root().join("scripts/netns.sh"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/netns.sh")
}

pub fn base36(mut n: u32) -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = Vec::new();
    loop {
        s.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).expect("ascii")
}

/// Removes the networks of earlier test processes that are gone.
pub fn remove_stray_networks() {
    let Ok(entries) = fs::read_dir(prefix_registry()) else {
        return;
    };
    for e in entries.flatten() {
        let prefix = e.file_name().to_string_lossy().into_owned();
        let owner: Option<u32> = fs::read_to_string(e.path())
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let alive = owner.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            eprintln!("removing stray test network {prefix} (its test process is gone)");
            netns(&["down", &prefix, "--kill"]);
            let _ = fs::remove_file(e.path());
        }
    }
}

impl TestNet {
    /// Builds the network with one VM host, under the prefix `ft` + the pid
    /// in base 36 + `index` (a digit: one per test), e.g. `ftfh52`: 6
    /// characters while pids stay below 36^3 (the default pid_max is 32768).
    pub fn up(index: u32) -> TestNet {
        Self::up_with_hosts(index, 1)
    }

    /// Like `up`, with `hosts` VM hosts (an FT pair needs 2).
    pub fn up_with_hosts(index: u32, hosts: u32) -> TestNet {
        assert!(index < 10);
        remove_stray_networks();
        let prefix = format!("ft{}{index}", base36(std::process::id()));
        fs::create_dir_all(prefix_registry()).expect("create prefix registry");
        let record = prefix_registry().join(&prefix);
        fs::write(&record, std::process::id().to_string()).expect("record prefix");
        let net = TestNet { prefix, record };
        // A namespace left with this prefix by an earlier process with our pid.
        netns(&["down", &net.prefix, "--kill"]);
        let out = netns(&["up", &net.prefix, &hosts.to_string()]);
        assert!(
            out.status.success(),
            "netns.sh up {} failed: {}",
            net.prefix,
            String::from_utf8_lossy(&out.stderr)
        );
        net
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Runs `args` in the client namespace, killed after `CLIENT_TIMEOUT_S`.
    pub fn client(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("timeout");
        cmd.args(["-k", "5", &CLIENT_TIMEOUT_S.to_string()])
            .args(["ip", "netns", "exec", &self.ns("c")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            });
        let mut child = cmd.spawn().expect("start a client command");
        if let Some(input) = stdin {
            let mut w = child.stdin.take().expect("client stdin");
            w.write_all(input.as_bytes()).expect("write client input");
        }
        child.wait_with_output().expect("wait for a client command")
    }

    /// `redis-cli -h GUEST ARGS...`: its trimmed stdout; panics on failure.
    pub fn redis(&self, args: &[&str]) -> String {
        let mut full = vec!["redis-cli", "-h", GUEST_IP];
        full.extend_from_slice(args);
        let out = self.client(&full, None);
        assert!(
            out.status.success(),
            "redis-cli {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let out = netns(&["down", &self.prefix, "--kill"]);
        if !out.status.success() {
            eprintln!(
                "netns.sh down {} failed: {}",
                self.prefix,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let _ = fs::remove_file(&self.record);
    }
}
