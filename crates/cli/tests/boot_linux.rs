//! End-to-end: boot the real guest (Debian's OpenSBI, Linux 6.1, busybox)
//! on ftvm, type commands on the console, check the answers, power off and
//! check the exit status.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{guest_image_args, repo_root, Guest};

#[test]
fn boots_linux_to_a_shell_and_answers() {
    let mut args = vec!["run".to_string()];
    args.extend(guest_image_args());
    let mut g = Guest::spawn(&args);
    g.wait_for_shell();
    assert_eq!(g.sh("echo $((6*7))"), "42");
    assert_eq!(g.sh("uname -m"), "riscv64");
    // The same file's md5 computed on the host from the recipe's copy.
    let host = Command::new("md5sum")
        .arg(repo_root().join("guest/rootfs/etc/ftvm-test.txt"))
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
    g.send("poweroff");
    assert_eq!(
        g.wait_exit(Duration::from_secs(60)),
        0,
        "poweroff must exit with status 0"
    );
}

#[test]
fn bad_images_give_one_clear_error() {
    let dir = std::env::temp_dir().join(format!("ftvm-badimg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty");
    std::fs::write(&empty, b"").unwrap();
    let garbage_elf = dir.join("garbage.elf");
    std::fs::write(
        &garbage_elf,
        b"\x7fELF\x02\x01\x01garbage-garbage-garbage-garbage-garbage-garbage-garbage",
    )
    .unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "run".into(),
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                "/nonexistent/kernel".into(),
            ],
            "cannot read kernel",
        ),
        (
            vec![
                "run".into(),
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                empty.display().to_string(),
            ],
            "is empty",
        ),
        (
            vec![
                "run".into(),
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                garbage_elf.display().to_string(),
            ],
            "not a usable ELF",
        ),
        (
            vec![
                "run".into(),
                "--bios".into(),
                "/nonexistent/fw_jump.bin".into(),
                "--kernel".into(),
                garbage_elf.display().to_string(),
            ],
            "cannot read firmware",
        ),
        (
            vec![
                "run".into(),
                "--bios".into(),
                "none".into(),
                "--kernel".into(),
                garbage_elf.display().to_string(),
                "--memory".into(),
                "3K".into(),
            ],
            "multiple of 1 MiB",
        ),
    ];
    for (args, needle) in cases {
        let out = common::ftvm_output(&args, Duration::from_secs(20));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err:?}"
        );
        assert_eq!(
            err.trim().lines().count(),
            1,
            "{args:?}: one line, got {err:?}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A harness that keeps stdin open (an expect-style script, a test driver)
/// must not hold up the exit: `ftvm run` and `ftvm record` exit as soon as
/// the guest powers off, while the pipe is still open and silent.
#[test]
fn exits_at_poweroff_while_stdin_stays_open() {
    let log = std::env::temp_dir().join(format!("ftvm-stdin-{}.log", std::process::id()));
    for command in ["run", "record"] {
        let mut args = vec![command.to_string()];
        if command == "record" {
            args.extend(["--log".to_string(), log.display().to_string()]);
        }
        args.extend(guest_image_args());
        let mut g = Guest::spawn(&args);
        g.wait_for_shell();
        g.send("poweroff -f");
        g.expect("reboot: Power down", Duration::from_secs(60));
        let down = std::time::Instant::now();
        // The stdin pipe stays open (held by `g`) and nothing more is sent.
        assert_eq!(g.wait_exit(Duration::from_secs(30)), 0, "{command}");
        let after = down.elapsed();
        assert!(
            after < Duration::from_secs(5),
            "ftvm {command} took {after:?} to exit after the guest powered off"
        );
    }
    let _ = std::fs::remove_file(&log);
}

/// `ftvm.redis.args=` passes options to the guest's redis-server; without
/// it redis keeps its safe default (DEBUG refused).
#[test]
fn redis_options_come_from_the_kernel_command_line() {
    for (extra, debug_allowed) in [
        ("", false),
        (" ftvm.redis.args=\"--enable-debug-command yes\"", true),
    ] {
        let mut args = vec!["run".to_string()];
        args.extend(guest_image_args());
        args.extend([
            "--append".to_string(),
            format!("console=ttyS0 ftvm.redis{extra}"),
        ]);
        let mut g = Guest::spawn(&args);
        g.expect("ftvm-guest: redis ready", Duration::from_secs(120));
        g.wait_for_shell();
        let answer = g.sh("redis-cli debug sleep 0");
        if debug_allowed {
            assert_eq!(answer, "OK", "with {extra:?}");
        } else {
            assert!(
                answer.contains("DEBUG command not allowed"),
                "DEBUG must stay off by default: {answer:?}"
            );
        }
        g.send("poweroff");
        assert_eq!(g.wait_exit(Duration::from_secs(60)), 0);
    }
}
