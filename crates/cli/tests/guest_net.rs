//! End-to-end tests for disks and networking: the real ftvm binary boots the
//! guest from `guest/build.sh` (or `FTVM_GUEST_DIR`) with a virtio-blk disk
//! image and a virtio-net card on the TAP `tap0` of a test network built by
//! `scripts/netns.sh` (see docs/network.md). The guest configures eth0 as
//! 10.77.0.2/24 (`ftvm.ip=`), mounts the disk on /data and serves redis
//! (`ftvm.redis`); clients run in the client namespace.
//!
//! - `redis_serves_clients_over_tap`: PING, SET/GET and redis-benchmark from
//!   the client namespace, then `poweroff` typed on the console: exit 0.
//! - `data_survives_poweroff_and_reboot`: keys written, clean poweroff, the
//!   same disk booted again: no reformat, a clean filesystem, every key back.
//! - `acknowledged_writes_survive_a_killed_vm`: the same with SIGKILL instead
//!   of poweroff (`appendfsync always`: an OK means the write is on the image).
//! - `bad_disk_images_are_refused_clearly`, `busy_or_wrong_tap_is_refused_clearly`:
//!   bad `--drive`/`--net` arguments fail with exit 1 and one error line.
//!
//! The network tests need root and `/dev/net/tun` (and the host's
//! `redis-cli`/`redis-benchmark` from `redis-tools`); without them they print
//! a note and pass. Each test gets its own network prefix, torn down by a drop
//! guard even when the test fails; a test that fails prints the guest console
//! and ftvm's stderr. Tests that boot a guest run one at a time (the emulator
//! is CPU-bound).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::guest_dir;
use common::lab::*;

/// `run` and the guest image's files: ftvm's arguments before any device.
fn run_args(guest: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--bios".into(),
        guest.join("fw_jump.bin").into(),
        "--kernel".into(),
        guest.join("Image").into(),
        "--initrd".into(),
        guest.join("initrd.cpio.gz").into(),
    ]
}

/// ftvm for the guest image, in the current network namespace.
fn ftvm_for_guest(guest: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ftvm"));
    cmd.args(run_args(guest));
    cmd
}

/// ftvm for the guest image, in the namespace `ns`.
fn ftvm_in_ns(ns: &str, guest: &Path) -> Command {
    ftvm_in_ns_recording(ns, guest, None)
}

/// Like [`ftvm_in_ns`], but `ftvm record --log LOG` when a log is given.
fn ftvm_in_ns_recording(ns: &str, guest: &Path, log: Option<&Path>) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_ftvm")]);
    let mut args = run_args(guest);
    if let Some(log) = log {
        args[0] = "record".into();
        args.splice(1..1, ["--log".into(), log.as_os_str().to_owned()]);
        args.splice(3..3, ["--digest-interval".into(), "20000000".into()]);
    }
    cmd.args(args);
    cmd
}

/// A guest running on ftvm in a VM host namespace, its console in a file and
/// its console input on our pipe. Killed on drop if still running; a failing
/// test prints its console and ftvm's stderr.
struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    console: PathBuf,
    stderr: PathBuf,
    started: Instant,
    status: Option<ExitStatus>,
}

impl Vm {
    /// Boots the guest in host namespace `h1` of `net` with `disk` as /dev/vda.
    fn boot(
        net: &TestNet,
        guest: &Path,
        scratch: &Scratch,
        tag: &str,
        disk: &Path,
        append: &str,
    ) -> Vm {
        Vm::boot_recording(net, guest, scratch, tag, disk, append, None)
    }

    /// [`Vm::boot`], under `ftvm record --log LOG` when a log is given.
    fn boot_recording(
        net: &TestNet,
        guest: &Path,
        scratch: &Scratch,
        tag: &str,
        disk: &Path,
        append: &str,
        log: Option<&Path>,
    ) -> Vm {
        let console = scratch.path(&format!("{tag}.console"));
        let stderr = scratch.path(&format!("{tag}.stderr"));
        let mut cmd = ftvm_in_ns_recording(&net.ns("h1"), guest, log);
        cmd.arg("--drive")
            .arg(format!("file={}", disk.display()))
            .args(["--net", "tap:tap0", "--append", append])
            .arg("--console")
            .arg(format!("file:{}", console.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&stderr).expect("create stderr file"));
        let mut child = cmd.spawn().expect("start ftvm");
        let stdin = child.stdin.take();
        Vm {
            child,
            stdin,
            console,
            stderr,
            started: Instant::now(),
            status: None,
        }
    }

    fn console_text(&self) -> String {
        fs::read(&self.console)
            .map(|b| String::from_utf8_lossy(&b).replace('\r', ""))
            .unwrap_or_default()
    }

    /// Waits until the console shows `pat`; returns the time since start.
    fn wait_for(&mut self, pat: &str, timeout: Duration) -> Duration {
        let deadline = Instant::now() + timeout;
        loop {
            if self.console_text().contains(pat) {
                return self.started.elapsed();
            }
            if let Some(status) = self.child.try_wait().expect("poll ftvm") {
                self.status = Some(status);
                panic!("ftvm exited ({status}) before the console showed {pat:?}");
            }
            if Instant::now() > deadline {
                panic!("the console did not show {pat:?} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `poweroff` on the console and waits for ftvm to exit.
    fn poweroff(&mut self) -> ExitStatus {
        let stdin = self.stdin.as_mut().expect("console input");
        stdin
            .write_all(b"poweroff\n")
            .and_then(|_| stdin.flush())
            .expect("type poweroff on the guest console");
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll ftvm") {
                self.status = Some(status);
                return status;
            }
            if Instant::now() > deadline {
                panic!("ftvm did not exit within {POWEROFF_TIMEOUT:?} of `poweroff`");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Vm {
    /// SIGKILLs ftvm: the machine stops dead, nothing is flushed or unmounted.
    fn kill(&mut self) {
        self.child.kill().expect("kill ftvm");
        self.status = Some(self.child.wait().expect("wait for ftvm"));
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if self.status.is_none() && matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            let mut report = String::new();
            let _ = writeln!(
                report,
                "---- guest console ({}) ----",
                self.console.display()
            );
            report.push_str(&self.console_text());
            let _ = writeln!(report, "\n---- ftvm stderr ----");
            report.push_str(&fs::read_to_string(&self.stderr).unwrap_or_default());
            let _ = writeln!(report, "---- end ----");
            eprintln!("{report}");
        }
    }
}

/// The kernel command line for the network tests.
fn redis_append() -> String {
    format!("console=ttyS0 ftvm.ip={GUEST_CIDR} ftvm.redis")
}

#[test]
fn redis_serves_clients_over_tap() {
    if !network_tests_possible("redis_serves_clients_over_tap") {
        return;
    }
    let guest = guest_dir();
    let _vm_lock = vm_lock();
    let net = TestNet::up(1);
    let scratch = Scratch::new("serve");
    let disk = scratch.fresh_disk("data.img");
    let mut vm = Vm::boot(&net, &guest, &scratch, "boot", &disk, &redis_append());

    let t = vm.wait_for("ftvm-guest: redis ready", BOOT_TIMEOUT);
    vm.wait_for("ftvm-guest: ready", Duration::from_secs(60));
    let console = vm.console_text();
    assert!(
        console.contains("ftvm-guest: formatted /dev/vda"),
        "a blank disk is formatted"
    );
    assert!(
        console.contains("ftvm-guest: eth0 10.77.0.2/24"),
        "eth0 is configured"
    );
    eprintln!(
        "guest: redis ready {:.1} s after ftvm started",
        t.as_secs_f64()
    );

    assert_eq!(net.redis(&["PING"]), "PONG");
    assert_eq!(net.redis(&["SET", "k", "v"]), "OK");
    assert_eq!(net.redis(&["GET", "k"]), "v");

    let t0 = Instant::now();
    let out = net.client(
        &[
            "redis-benchmark",
            "-h",
            GUEST_IP,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "4",
            "-q",
        ],
        None,
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "redis-benchmark failed ({}): {text}",
        out.status
    );
    // -q prints progress with carriage returns, then one result line per test.
    let lines: Vec<&str> = text.split(['\r', '\n']).map(str::trim).collect();
    eprintln!(
        "redis-benchmark ({:.1} s): {:?}",
        t0.elapsed().as_secs_f64(),
        lines
            .iter()
            .filter(|l| l.contains("requests per second"))
            .collect::<Vec<_>>()
    );
    for test in ["SET", "GET"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{test}: ")) && l.contains("requests per second")),
            "no {test} result line in the redis-benchmark output: {text:?}"
        );
    }
    assert!(
        !text.to_lowercase().contains("error"),
        "redis-benchmark reported errors: {text:?}"
    );
    assert_eq!(
        net.redis(&["GET", "k"]),
        "v",
        "the key survives the benchmark"
    );

    let status = vm.poweroff();
    assert!(
        status.success(),
        "ftvm must exit 0 after poweroff, got {status}"
    );
    assert!(vm.console_text().contains("ftvm-guest: poweroff"));
}

#[test]
fn data_survives_poweroff_and_reboot() {
    if !network_tests_possible("data_survives_poweroff_and_reboot") {
        return;
    }
    const KEYS: usize = 100;
    let guest = guest_dir();
    let _vm_lock = vm_lock();
    let net = TestNet::up(2);
    let scratch = Scratch::new("persist");
    let disk = scratch.fresh_disk("data.img");

    // First boot: a blank disk, formatted by the guest; write the keys.
    let mut vm = Vm::boot(&net, &guest, &scratch, "boot1", &disk, &redis_append());
    vm.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    assert!(vm.console_text().contains("ftvm-guest: formatted /dev/vda"));
    set_keys(&net, KEYS);
    let status = vm.poweroff();
    assert!(
        status.success(),
        "first boot: ftvm must exit 0 after poweroff, got {status}"
    );
    let first = vm.console_text();
    assert!(
        !first.contains("remounting it read-only"),
        "/data was busy at poweroff"
    );
    drop(vm);

    // Second boot from the same image: no formatting, a clean filesystem, and
    // redis replays its append-only file.
    let mut vm = Vm::boot(&net, &guest, &scratch, "boot2", &disk, &redis_append());
    vm.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    let second = vm.console_text();
    assert!(
        second.contains("ftvm-guest: /dev/vda mounted on /data"),
        "the disk is mounted again"
    );
    assert!(
        !second.contains("formatted /dev/vda"),
        "the second boot must not format the disk again"
    );
    assert!(
        !second.contains("mounting unchecked fs"),
        "the filesystem was not cleanly unmounted at poweroff"
    );
    check_keys(&net, KEYS);
    let status = vm.poweroff();
    assert!(
        status.success(),
        "second boot: ftvm must exit 0 after poweroff, got {status}"
    );
}

/// `SET key:I value-I` for I in 0..n through one redis-cli (each line waits
/// for its reply); asserts every one was acknowledged.
fn set_keys(net: &TestNet, n: usize) {
    let mut input = String::new();
    for i in 0..n {
        let _ = writeln!(input, "SET key:{i} value-{i}");
    }
    let out = net.client(&["redis-cli", "-h", GUEST_IP], Some(&input));
    let replies = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "redis-cli failed ({}): {replies}",
        out.status
    );
    assert_eq!(
        replies.lines().filter(|l| l.trim() == "OK").count(),
        n,
        "every SET is acknowledged: {replies:?}"
    );
}

/// Asserts that DBSIZE is `n` and key:I holds value-I for I in 0..n.
fn check_keys(net: &TestNet, n: usize) {
    assert_eq!(
        net.redis(&["DBSIZE"]),
        n.to_string(),
        "keys after the reboot ({n} were acknowledged)"
    );
    let names: Vec<String> = (0..n).map(|i| format!("key:{i}")).collect();
    let mut args = vec!["MGET"];
    args.extend(names.iter().map(String::as_str));
    let got = net.redis(&args);
    let values: Vec<&str> = got.lines().map(str::trim).collect();
    let expected: Vec<String> = (0..n).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected, "every key reads back after the reboot");
}

#[test]
fn acknowledged_writes_survive_a_killed_vm() {
    if !network_tests_possible("acknowledged_writes_survive_a_killed_vm") {
        return;
    }
    // Enough appends that the AOF grows within allocated blocks, where an
    // fdatasync on an ext2-type mount used to leave the new size unwritten.
    const KEYS: usize = 300;
    let guest = guest_dir();
    let _vm_lock = vm_lock();
    let net = TestNet::up(4);
    let scratch = Scratch::new("kill");
    let disk = scratch.fresh_disk("data.img");

    let mut vm = Vm::boot(&net, &guest, &scratch, "boot1", &disk, &redis_append());
    vm.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    set_keys(&net, KEYS);
    // No poweroff: appendfsync always means each OK was on the disk image.
    vm.kill();
    drop(vm);

    let mut vm = Vm::boot(&net, &guest, &scratch, "boot2", &disk, &redis_append());
    vm.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    assert!(
        !vm.console_text().contains("formatted /dev/vda"),
        "the disk must not be formatted again"
    );
    check_keys(&net, KEYS);
    let status = vm.poweroff();
    assert!(
        status.success(),
        "ftvm must exit 0 after poweroff, got {status}"
    );
}

/// Runs ftvm expecting it to fail before booting; returns its stderr lines.
fn expect_refusal(mut cmd: Command, what: &str) -> Vec<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run ftvm");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "{what}: ftvm must fail, but exited {}",
        out.status
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{what}: exit status; stderr: {stderr}"
    );
    let lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line, got: {stderr:?}"
    );
    assert!(lines[0].starts_with("ftvm: error: "), "{what}: {stderr:?}");
    lines
}

#[test]
fn bad_disk_images_are_refused_clearly() {
    let guest = guest_dir();
    let scratch = Scratch::new("baddisk");

    let odd = scratch.path("odd.img");
    fs::write(&odd, vec![0u8; 1000]).expect("write a 1000-byte image");
    let mut cmd = ftvm_for_guest(&guest);
    cmd.arg("--drive").arg(format!("file={}", odd.display()));
    let line = &expect_refusal(cmd, "a 1000-byte disk image")[0];
    assert!(
        line.contains(&odd.display().to_string()) && line.contains("not a multiple of 512"),
        "unclear error for a 1000-byte image: {line}"
    );

    let missing = scratch.path("missing.img");
    let mut cmd = ftvm_for_guest(&guest);
    cmd.arg("--drive")
        .arg(format!("file={}", missing.display()));
    let line = &expect_refusal(cmd, "a missing disk image")[0];
    assert!(
        line.contains(&missing.display().to_string()) && line.contains("No such file"),
        "unclear error for a missing image: {line}"
    );

    let empty = scratch.path("empty.img");
    fs::write(&empty, b"").expect("write an empty image");
    let mut cmd = ftvm_for_guest(&guest);
    cmd.arg("--drive").arg(format!("file={}", empty.display()));
    let line = &expect_refusal(cmd, "an empty disk image")[0];
    assert!(
        line.contains("is empty"),
        "unclear error for an empty image: {line}"
    );
}

#[test]
fn busy_or_wrong_tap_is_refused_clearly() {
    if !network_tests_possible("busy_or_wrong_tap_is_refused_clearly") {
        return;
    }
    let guest = guest_dir();

    // A name that cannot be an interface: refused before touching the kernel.
    let mut cmd = ftvm_for_guest(&guest);
    cmd.args(["--net", "tap:name-much-too-long"]);
    let line = &expect_refusal(cmd, "an overlong TAP name")[0];
    assert!(line.contains("invalid TAP device name"), "{line}");

    // A TAP name that does not exist is refused too (tests/virtio_guest.rs
    // checks that without root); here: a TAP already in use, and an
    // interface that is not a TAP.
    let _vm_lock = vm_lock();
    let net = TestNet::up(3);
    let scratch = Scratch::new("tap");
    let disk = scratch.fresh_disk("data.img");
    let mut first = Vm::boot(&net, &guest, &scratch, "first", &disk, "console=ttyS0");
    // The TAP is attached before the machine runs, so console output means
    // the first ftvm holds it.
    first.wait_for("OpenSBI", Duration::from_secs(60));

    let mut cmd = ftvm_in_ns(&net.ns("h1"), &guest);
    cmd.args(["--net", "tap:tap0"]);
    let line = &expect_refusal(cmd, "a TAP another ftvm has open")[0];
    assert!(
        line.contains("\"tap0\" is busy"),
        "unclear error for a busy TAP: {line}"
    );

    let mut cmd = ftvm_in_ns(&net.ns("h1"), &guest);
    cmd.args(["--net", "tap:br0"]);
    let line = &expect_refusal(cmd, "a bridge given as a TAP")[0];
    assert!(
        line.contains("is not a single-queue TAP"),
        "unclear error for a non-TAP: {line}"
    );

    // The disk image is locked while the first ftvm runs.
    let mut cmd = ftvm_for_guest(&guest);
    cmd.arg("--drive").arg(format!("file={}", disk.display()));
    let line = &expect_refusal(cmd, "a disk image another ftvm has open")[0];
    assert!(line.contains("is locked by another process"), "{line}");

    // The first guest is unaffected: it boots and powers off normally.
    first.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    let status = first.poweroff();
    assert!(
        status.success(),
        "ftvm must exit 0 after poweroff, got {status}"
    );
}

/// Record and replay with real network and disk input: a recorded session
/// in which redis-benchmark talks to the guest over the TAP and the guest
/// writes and reads its disk is replayed with every digest verified and
/// the console reproduced byte for byte.
#[test]
fn recorded_network_and_disk_session_replays_exactly() {
    if !network_tests_possible("recorded_network_and_disk_session_replays_exactly") {
        return;
    }
    let _serial = vm_lock();
    let guest = guest_dir();
    let scratch = Scratch::new("record");
    let net = TestNet::up(7);
    let disk = scratch.fresh_disk("record.img");
    let log = scratch.path("session.log");
    let mut vm = Vm::boot_recording(
        &net,
        &guest,
        &scratch,
        "record",
        &disk,
        &redis_append(),
        Some(&log),
    );
    vm.wait_for("ftvm-guest: ready", BOOT_TIMEOUT);
    let bench = net.client(
        &[
            "redis-benchmark",
            "-h",
            GUEST_IP,
            "-t",
            "set,get",
            "-n",
            "2000",
            "-c",
            "4",
            "-q",
        ],
        None,
    );
    assert!(
        bench.status.success(),
        "redis-benchmark failed: {}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let stdin = vm.stdin.as_mut().expect("console input");
    stdin
        .write_all(
            b"dd if=/dev/urandom of=/data/blob bs=64k count=32 2>/dev/null && sync && \
              echo 3 > /proc/sys/vm/drop_caches && md5sum /data/blob && echo disk-done\n",
        )
        .and_then(|_| stdin.flush())
        .expect("type on the console");
    vm.wait_for("disk-done", BOOT_TIMEOUT);
    assert!(vm.poweroff().success(), "ftvm record did not exit cleanly");
    let replay_console = scratch.path("replay.console");
    let out = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["replay", "--log"])
        .arg(&log)
        .arg("--console")
        .arg(format!("file:{}", replay_console.display()))
        .output()
        .expect("run ftvm replay");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && err.contains("replay matched"),
        "replay failed: {err}"
    );
    let recorded = fs::read(&vm.console).expect("recorded console");
    let replayed = fs::read(&replay_console).expect("replayed console");
    assert!(
        recorded == replayed,
        "the replayed console differs from the recorded one ({} vs {} bytes)",
        recorded.len(),
        replayed.len()
    );
    let text = String::from_utf8_lossy(&replayed);
    assert!(
        text.contains("/data/blob") && text.contains("redis ready"),
        "{text}"
    );
}
