//! `./run.sh` without root: `ftvm demo --auto` run by an unprivileged user
//! (uid 65534, `nobody`) through `scripts/rootless.sh`, which gives it a
//! user namespace of its own with a private network stack and `/run`. The
//! whole demo — namespaces, bridge, veths, TAP devices, storage, primary,
//! backup, the SIGKILL, the replacement backup's join — must run and pass
//! its own checks, and leave nothing in the machine's namespaces.
//!
//! The test itself starts as root only to become `nobody` (setpriv) and to
//! give `/dev/net/tun` Debian's default mode, 0666 (udev's rule), for its
//! duration when the machine has a stricter one (containers often do); the
//! old mode is put back afterwards. Without root, setpriv, unshare or the
//! guest image it prints a note and passes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

mod common;

use common::lab::*;
use common::{guest_dir, loadgen};

const NOBODY: &str = "65534";

/// Gives `/dev/net/tun` mode 0666 while alive, then its old mode back.
struct TunMode(Option<u32>);

impl TunMode {
    fn open_to_all() -> TunMode {
        let p = Path::new("/dev/net/tun");
        let old = fs::metadata(p)
            .expect("stat /dev/net/tun")
            .permissions()
            .mode()
            & 0o7777;
        if old & 0o006 == 0o006 {
            return TunMode(None);
        }
        eprintln!("note: /dev/net/tun has mode {old:o}; 0666 (Debian's) for this test");
        fs::set_permissions(p, fs::Permissions::from_mode(0o666)).expect("chmod /dev/net/tun");
        TunMode(Some(old))
    }
}

impl Drop for TunMode {
    fn drop(&mut self) {
        if let Some(old) = self.0 {
            let _ = fs::set_permissions("/dev/net/tun", fs::Permissions::from_mode(old));
        }
    }
}

/// Whether `dir` and every parent can be entered by anyone.
fn traversable(dir: &Path) -> bool {
    dir.ancestors()
        .all(|d| fs::metadata(d).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

#[test]
fn the_demo_runs_as_a_user_without_root() {
    let test = "the_demo_runs_as_a_user_without_root";
    if !network_tests_possible(test) {
        return;
    }
    for tool in ["setpriv", "unshare"] {
        if !on_path(tool) {
            eprintln!("note: skipping {test}: `{tool}` is not installed (util-linux)");
            return;
        }
    }
    if !guest_dir().join("Image").exists() {
        eprintln!("note: skipping {test}: no guest image");
        return;
    }
    let exe = Path::new(env!("CARGO_BIN_EXE_ftvm"));
    let root = common::repo_root();
    if !traversable(exe.parent().expect("bin dir")) || !traversable(&root) {
        eprintln!("note: skipping {test}: the build directory is not readable by other users");
        return;
    }
    let _vm = vm_lock();
    loadgen();
    // The user's world: a home, and a copy of the guest image it can read
    // (root's cache is not).
    let dir = Scratch::new("rootless");
    let home = dir.path("home");
    let guest = dir.path("guest");
    fs::create_dir_all(&home).expect("home");
    fs::create_dir_all(&guest).expect("guest dir");
    for f in ["fw_jump.bin", "Image", "initrd.cpio.gz"] {
        fs::copy(guest_dir().join(f), guest.join(f)).expect("copy the guest image");
    }
    for p in [&dir.0, &guest] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let chown = Command::new("chown")
        .args(["-R", &format!("{NOBODY}:{NOBODY}")])
        .arg(&home)
        .status()
        .expect("chown");
    assert!(chown.success());
    let _tun = TunMode::open_to_all();
    let t = Instant::now();
    let out = Command::new("timeout")
        .args([
            "600",
            "setpriv",
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
        ])
        .arg("env")
        .arg(format!("HOME={}", home.display()))
        .arg(format!("FTVM_GUEST_DIR={}", guest.display()))
        .arg(root.join("scripts/rootless.sh"))
        .arg(exe)
        .args(["demo", "--auto", "--prefix", "rlt", "--dir"])
        .arg(home.join("demo"))
        .stdin(Stdio::null())
        .output()
        .expect("run the demo as nobody");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "rootless demo finished in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "the rootless demo failed: {}\n{text}",
        out.status
    );
    for want in [
        "the backup is live",
        "every acknowledged write readable from the new primary: yes",
        "protected again",
        "failover was transparent to the client",
        "Rootless: the lab lives in this demo's user namespace",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    // Nothing of it is in the machine's own namespaces.
    let list = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns");
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(
        !list.contains("rlt-"),
        "the rootless demo left namespaces behind:\n{list}"
    );
}
