//! Record and replay of a whole machine, end to end with the real binary:
//! a Linux session with console input is recorded and replayed with every
//! digest and the console output checked; a snapshot taken mid-way is
//! restored and the rest replayed; an unlogged input injected during replay
//! is caught in the right step range; damaged, foreign and mismatched logs
//! are refused with a clear message.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use common::{ftvm_output, guest_image_args, Guest};

const DIGEST_INTERVAL: u64 = 10_000_000;

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("record_replay");
    std::fs::create_dir_all(&d).expect("tmp dir");
    d.join(name)
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// One recorded Linux session shared by the tests: boot, a few commands
/// typed on the console (including time, md5 and FP work), poweroff.
fn recording() -> &'static (PathBuf, PathBuf) {
    static REC: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    REC.get_or_init(|| {
        let log = tmp("session.log");
        let console = tmp("session.console");
        let mut args = vec![
            "record".to_string(),
            "--log".into(),
            s(&log),
            "--digest-interval".into(),
            DIGEST_INTERVAL.to_string(),
        ];
        args.extend(guest_image_args());
        let mut g = Guest::spawn(&args);
        g.wait_for_shell();
        assert_eq!(g.sh("echo $((6*7))"), "42");
        g.sh("date; md5sum /bin/busybox; awk 'BEGIN { print sin(1) }'; cat /proc/uptime");
        g.sh("dd if=/dev/urandom of=/tmp/r bs=1k count=64 2>/dev/null; md5sum /tmp/r");
        g.send("poweroff");
        assert_eq!(g.wait_exit(Duration::from_secs(120)), 0);
        std::fs::write(&console, g.transcript.as_bytes()).expect("save console");
        (log, console)
    })
}

/// The number in "N digests verified" of a replay's stderr.
fn digests_verified(err: &str) -> u64 {
    err.split(" digests verified")
        .next()
        .and_then(|x| x.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("digest count")
}

fn replay(args: &[String]) -> (i32, String) {
    let out = ftvm_output(args, Duration::from_secs(300));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "ftvm panicked: {err}");
    (out.status.code().unwrap_or(-1), err)
}

#[test]
fn replay_matches_the_recording_and_its_console() {
    let (log, _) = recording();
    let console = tmp("replay.console");
    let (code, err) = replay(&[
        "replay".into(),
        "--log".into(),
        s(log),
        "--console".into(),
        format!("file:{}", s(&console)),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("replay matched the recording"), "{err}");
    let digests = digests_verified(&err);
    assert!(digests >= 5, "only {digests} digests checked: {err}");
    // The replayed console is the recorded one, byte for byte.
    let replayed = std::fs::read_to_string(&console).expect("replayed console");
    let recorded = std::fs::read_to_string(&recording().1).expect("recorded console");
    assert!(
        replayed.contains("42") && replayed.contains("busybox"),
        "{replayed}"
    );
    assert!(
        replayed == recorded,
        "console differs:\n--- recorded\n{recorded}\n--- replayed\n{replayed}"
    );
}

#[test]
fn snapshot_mid_way_then_replay_the_rest() {
    let (log, _) = recording();
    let snap = tmp("mid.snap");
    let at = 3 * DIGEST_INTERVAL + 123_457; // not on a digest or input boundary
    let (code, err) = replay(&[
        "replay".into(),
        "--log".into(),
        s(log),
        "--console".into(),
        "null".into(),
        "--snapshot-at".into(),
        at.to_string(),
        "--snapshot-out".into(),
        s(&snap),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(&format!("saved snapshot at step {at}")),
        "{err}"
    );
    let (code, err) = replay(&[
        "replay".into(),
        "--log".into(),
        s(log),
        "--console".into(),
        "null".into(),
        "--restore".into(),
        s(&snap),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("restored at step {at}")), "{err}");
    assert!(err.contains("replay matched the recording"), "{err}");
}

#[test]
fn an_unlogged_input_is_caught_in_the_right_range() {
    let (log, _) = recording();
    let inject = 2 * DIGEST_INTERVAL + 5_000_000;
    let (code, err) = replay(&[
        "replay".into(),
        "--log".into(),
        s(log),
        "--console".into(),
        "null".into(),
        "--inject-unlogged-time-at".into(),
        inject.to_string(),
    ]);
    assert_eq!(code, 3, "divergence exits with 3: {err}");
    let range = err
        .split("diverged between step ")
        .nth(1)
        .unwrap_or_else(|| panic!("no divergence report: {err}"));
    let mut nums = range
        .split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .map(|x| x.parse::<u64>().expect("step"));
    let (from, to) = (nums.next().expect("from"), nums.next().expect("to"));
    assert!(
        from <= inject && inject < to,
        "injected at {inject}, reported {from}..{to}: {err}"
    );
    assert!(
        to - from <= DIGEST_INTERVAL,
        "range wider than one digest interval: {err}"
    );
}

#[test]
fn damaged_foreign_and_mismatched_logs_are_refused() {
    let (log, _) = recording();
    let bytes = std::fs::read(log).expect("log");
    let check = |name: &str, data: &[u8], extra: &[String], needle: &str| {
        let p = tmp(name);
        std::fs::write(&p, data).expect("write");
        let mut args = vec![
            "replay".to_string(),
            "--log".into(),
            s(&p),
            "--console".into(),
            "null".into(),
        ];
        args.extend_from_slice(extra);
        let (code, err) = replay(&args);
        assert_ne!(code, 0, "{name}: accepted: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "{name}: expected {needle:?} in: {err}"
        );
    };
    // Cut inside the header: nothing to replay.
    check("trunc-header.log", &bytes[..20], &[], "truncated");
    // One bit flipped in the middle of the entries.
    let mut flipped = bytes.clone();
    let mid = bytes.len() / 2;
    flipped[mid] ^= 0x10;
    check("flip.log", &flipped, &[], "checksum mismatch");
    // Zeros that are followed by data are damage, not a cut.
    let mut garbage = bytes[..mid].to_vec();
    garbage.extend_from_slice(&[0; 4096]);
    garbage.extend_from_slice(&[0xa5; 64]);
    check("garbage-tail.log", &garbage, &[], "damaged");
    // Not a log at all.
    check(
        "foreign.log",
        b"this is not an ftvm log, just some text",
        &[],
        "not",
    );
    // Recorded with a different initrd.
    let mut initrd = std::fs::read(common::guest_dir().join("initrd.cpio.gz")).expect("initrd");
    initrd.push(0);
    let other = tmp("other-initrd.cpio.gz");
    std::fs::write(&other, &initrd).expect("write");
    check(
        "images.log",
        &bytes,
        &["--initrd".into(), s(&other)],
        "different machine or images",
    );
}

/// A log cut short (the recorder SIGKILLed, its host crashed) replays up to
/// its last complete frame with exit status 5 and says where it stopped; a
/// tail of zero bytes (file extended, data never written) counts as a cut.
#[test]
fn a_log_cut_short_replays_to_its_last_complete_frame() {
    let (log, _) = recording();
    let bytes = std::fs::read(log).expect("log");
    let mut reached = Vec::new();
    let mut zero_tail = bytes[..bytes.len() / 2].to_vec();
    zero_tail.extend_from_slice(&[0; 4096]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "cut-early.log",
            bytes[..bytes.len() / 10].to_vec(),
            "incomplete",
        ),
        (
            "cut-mid.log",
            bytes[..bytes.len() / 2].to_vec(),
            "incomplete",
        ),
        (
            "cut-end.log",
            bytes[..bytes.len() - 3].to_vec(),
            "incomplete",
        ),
        ("cut-zeros.log", zero_tail, "never written"),
    ];
    for (name, data, tail) in cases {
        let p = tmp(name);
        std::fs::write(&p, &data).expect("write");
        let (code, err) = replay(&[
            "replay".to_string(),
            "--log".into(),
            s(&p),
            "--console".into(),
            "null".into(),
        ]);
        assert_eq!(code, 5, "{name}: {err}");
        assert!(
            err.contains("cut short") && err.contains(tail),
            "{name}: {err}"
        );
        let step: u64 = err
            .split("to step ")
            .nth(1)
            .and_then(|r| r.split(';').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: no step in {err}"));
        reached.push(step);
    }
    // Longer prefixes reach further; the zero tail reaches what its prefix does.
    assert!(
        reached[0] < reached[1] && reached[1] < reached[2],
        "{reached:?}"
    );
    assert_eq!(reached[3], reached[1], "{reached:?}");
}

/// `ftvm record` SIGKILLed in the middle of a console session: the log it
/// leaves replays to the last command typed (the recorder writes its log at
/// least every 50 ms), and the replayed console shows that command's output.
#[test]
fn a_sigkilled_recording_replays_to_the_last_command() {
    let log = tmp("killed.log");
    let console = tmp("killed.console");
    let mut args = vec!["record".to_string(), "--log".into(), s(&log)];
    args.extend(guest_image_args());
    let mut g = Guest::spawn(&args);
    g.wait_for_shell();
    assert_eq!(g.sh("echo $((6*7))"), "42");
    g.send("echo last-command-$((1000+337))");
    g.expect("last-command-1337", Duration::from_secs(60));
    // Well past one flush interval, then no chance to write an end record.
    std::thread::sleep(Duration::from_millis(300));
    g.child.kill().expect("SIGKILL the recorder");
    let _ = g.child.wait();
    let (code, err) = replay(&[
        "replay".to_string(),
        "--log".into(),
        s(&log),
        "--console".into(),
        format!("file:{}", s(&console)),
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("cut short"), "{err}");
    let replayed = std::fs::read_to_string(&console).expect("replayed console");
    assert!(
        replayed.contains("last-command-1337"),
        "the replay stops before the last command's output:\n{replayed}"
    );
}

#[test]
fn bare_metal_program_replays_exactly() {
    let elf_dir = tmp("cpubench");
    let status = std::process::Command::new(common::repo_root().join("bench/cpu/build.sh"))
        .arg(&elf_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("build cpubench");
    assert!(status.success());
    let log = tmp("cpubench.log");
    let elf = s(&elf_dir.join("cpubench.elf"));
    let out = ftvm_output(
        &[
            "record".into(),
            "--log".into(),
            s(&log),
            "--digest-interval".into(),
            "20000000".into(),
            "--bios".into(),
            "none".into(),
            "--kernel".into(),
            elf,
            "--memory".into(),
            "64M".into(),
            "--no-input".into(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, err) = replay(&[
        "replay".into(),
        "--log".into(),
        s(&log),
        "--console".into(),
        "null".into(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("replay matched"), "{err}");
}

#[test]
fn an_idle_guest_sleeps_and_logs_little() {
    // With no console input and no network, nothing but the guest's own
    // timer wakes the driver: it must sleep between wake-ups, not spin.
    let log = tmp("idle.log");
    let mut args = vec![
        "record".to_string(),
        "--log".into(),
        s(&log),
        "--no-input".into(),
        "--console".into(),
        "null".into(),
        "--append".into(),
        "console=ttyS0 ftvm.run=\"sleep 3\"".into(),
    ];
    args.extend(guest_image_args());
    let t = std::time::Instant::now();
    let out = ftvm_output(&args, Duration::from_secs(120));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        t.elapsed() >= Duration::from_secs(3),
        "the guest's sleep took less than 3 s"
    );
    let size = std::fs::metadata(&log).expect("log").len();
    assert!(
        size < 64 * 1024,
        "an idle guest produced {size} bytes of log in 3 s"
    );
}

/// A session recorded with each engine (boot, a redis PING, md5sum of 4 MiB
/// of random data) replays digest-identical with the other: the engine is a
/// host setting, not machine state.
#[test]
fn a_log_recorded_with_one_engine_replays_with_the_other() {
    for (rec, rep) in [("interp", "jit"), ("jit", "interp")] {
        let log = tmp(&format!("cross-{rec}.log"));
        let console = tmp(&format!("cross-{rec}.console"));
        let mut args = vec![
            "record".to_string(),
            "--cpu".into(),
            rec.into(),
            "--log".into(),
            s(&log),
            "--digest-interval".into(),
            "5000000".into(),
            "--no-input".into(),
            "--console".into(),
            format!("file:{}", s(&console)),
        ];
        args.extend(guest_image_args());
        args.extend([
            "--append".into(),
            "console=ttyS0 ftvm.run=\"redis-cli ping; dd if=/dev/urandom of=/tmp/r bs=1M count=4 2>/dev/null; md5sum /tmp/r; md5sum /tmp/r\"".into(),
        ]);
        let out = ftvm_output(&args, Duration::from_secs(300));
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(0), "record --cpu {rec}: {err}");
        let recorded = std::fs::read_to_string(&console).expect("recorded console");
        assert!(recorded.contains("/tmp/r"), "no md5sum output: {recorded}");
        let replayed_console = tmp(&format!("cross-{rec}-{rep}.console"));
        let (code, err) = replay(&[
            "replay".into(),
            "--cpu".into(),
            rep.into(),
            "--log".into(),
            s(&log),
            "--console".into(),
            format!("file:{}", s(&replayed_console)),
            "--stats".into(),
        ]);
        assert_eq!(code, 0, "recorded with {rec}, replayed with {rep}: {err}");
        assert!(err.contains("end: PowerOff"), "{err}");
        let digests = digests_verified(&err);
        assert!(digests >= 10, "only {digests} digests checked: {err}");
        let replayed = std::fs::read_to_string(&replayed_console).expect("replayed console");
        assert_eq!(replayed, recorded, "console differs ({rec} -> {rep})");
    }
}
