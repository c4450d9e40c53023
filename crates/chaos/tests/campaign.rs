//! The short fault campaign `./test.sh` runs: 30 trials of `ftvm-chaos`
//! from a fixed seed, every fault kind in the draw, against real pairs in
//! the netns lab. It passes only with zero failed trials: no lost
//! acknowledged write, no two VMs live, no divergence or panic, every
//! process ending with a documented status, the client's connection
//! unbroken. Needs root, /dev/net/tun, `tc` and the guest image; without
//! them it prints a note and passes. It takes the bench lock
//! (/tmp/ftvm-bench.lock) per chunk of trials, like the FT e2e tests'
//! callers are asked to.
//!
//! Regression seeds: `SEED 12` trial 1 was where a startup false failover
//! (the backup's machine build plus a loaded host exceeding the 100 ms
//! failure timeout) first showed; trial 4 of seed 11 is a step fault that
//! kills a primary left alone (classified as "VM lost by plan").

use std::path::{Path, PathBuf};
use std::process::Command;

fn chaos() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ftvm-chaos"))
}

fn possible(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: skipping {test}: needs root");
        return false;
    }
    if !Path::new("/dev/net/tun").exists() || !Path::new("/usr/sbin/tc").exists() {
        eprintln!("note: skipping {test}: needs /dev/net/tun and tc");
        return false;
    }
    let guest = std::env::var_os("FTVM_GUEST_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ftvm/guest/latest"))
        });
    if !guest.is_some_and(|g| g.join("Image").exists()) {
        eprintln!("note: skipping {test}: no guest image");
        return false;
    }
    let ftvm = chaos().parent().map(|d| d.join("ftvm"));
    let loadgen = chaos().parent().map(|d| d.join("ftvm-loadgen"));
    for p in [ftvm, loadgen].into_iter().flatten() {
        if !p.exists() {
            let st = Command::new(env!("CARGO"))
                .args(["build", "--release", "-p", "ftvm", "-p", "ftvm-loadgen"])
                .status()
                .expect("cargo build");
            assert!(st.success(), "cannot build ftvm and ftvm-loadgen");
            break;
        }
    }
    true
}

/// One campaign at a time (both tests run in one process; a prefix is
/// claimed by one ftvm-chaos at a time).
static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn campaign(args: &[&str]) {
    let _one = ONE.lock().unwrap_or_else(|e| e.into_inner());
    let work = std::env::temp_dir().join(format!("ftvm-chaos-test-{}", std::process::id()));
    let out = Command::new(chaos())
        .args(args)
        .args(["--prefix", &format!("fct{}", std::process::id() % 100_000)])
        .arg("--work-dir")
        .arg(&work)
        .args(["--lock", "/tmp/ftvm-bench.lock", "--chunk", "10"])
        .output()
        .expect("run ftvm-chaos");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the campaign failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn short_campaign_loses_nothing() {
    if possible("short_campaign_loses_nothing") {
        campaign(&["--seed", "2026", "--trials", "30"]);
    }
}

#[test]
fn regression_seeds() {
    if possible("regression_seeds") {
        campaign(&["--seed", "12", "--trial", "1"]);
        campaign(&[
            "--seed",
            "11",
            "--trial",
            "4",
            "--faults",
            "step-die,step-stall,step-drop,step-corrupt",
        ]);
    }
}
