//! A hostile guest driver against the virtio-blk device: the bare-metal
//! program `tests/virtio/bad_queue.S` hands the device rings outside RAM, a
//! looping descriptor chain and a data buffer outside RAM, checks that the
//! device reports each as the virtio spec says, then reads a sector through
//! the host disk backend. The host process must survive all of it.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Assembles tests/virtio/bad_queue.S; returns (scratch dir, ELF path).
fn bad_queue_elf() -> (PathBuf, PathBuf) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("virtio_guest");
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let root = common::repo_root();
    let elf = dir.join("bad_queue.elf");
    let cc = std::env::var("RISCV_CC").unwrap_or_else(|_| "riscv64-linux-gnu-gcc".into());
    let status = Command::new(&cc)
        .args([
            "-march=rv64gc",
            "-mabi=lp64d",
            "-nostdlib",
            "-nostartfiles",
            "-static",
            "-T",
        ])
        .arg(root.join("tests/isa/link.ld"))
        .arg("-I")
        .arg(root.join("tests/isa/common"))
        .arg("-o")
        .arg(&elf)
        .arg(root.join("tests/virtio/bad_queue.S"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} (scripts/host-deps.sh installs it): {e}"));
    assert!(status.success(), "assembling bad_queue.S failed");
    (dir, elf)
}

#[test]
fn a_misprogrammed_queue_gets_device_errors_not_a_host_crash() {
    let (dir, elf) = bad_queue_elf();
    let disk = dir.join("disk.img");
    let mut data = b"FTVM".to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&disk, &data).expect("disk image");
    let out = common::ftvm_output(
        &[
            "run".into(),
            "--bios".into(),
            "none".into(),
            "--kernel".into(),
            elf.display().to_string(),
            "--memory".into(),
            "64M".into(),
            "--drive".into(),
            format!("file={}", disk.display()),
            "--no-input".into(),
            "--no-rng".into(),
        ],
        Duration::from_secs(60),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "console: {stdout}\nstderr: {stderr}"
    );
    assert!(stdout.contains("PASS bad_queue"), "{stdout}");
}

#[test]
fn a_missing_tap_device_is_a_clear_error() {
    let (_, elf) = bad_queue_elf();
    let out = common::ftvm_output(
        &[
            "run".into(),
            "--bios".into(),
            "none".into(),
            "--kernel".into(),
            elf.display().to_string(),
            "--net".into(),
            "tap:ftvmnosuch0".into(),
            "--no-input".into(),
        ],
        Duration::from_secs(20),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not exist") && err.trim().lines().count() == 1,
        "{err}"
    );
}
