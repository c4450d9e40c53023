//! Interoperability with standard NBD tools: `qemu-img info` sees the right
//! size, `qemu-io` writes and reads through the server and its bytes land in
//! the image file, `qemu-io` reads what the Rust client wrote, `nbdinfo`
//! (libnbd) lists the exports with their features and `nbd-client -l` lists
//! them too. A kernel-level `nbd-client` attach runs only if the nbd module
//! is loaded. Each test prints a note and passes if its tool is missing.

mod common;

use std::process::{Command, Output};

use common::*;
use ftvm_storage::NbdClient;

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("tool runs");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

#[test]
fn qemu_img_info_shows_the_size() {
    if !have_tool("qemu-img") {
        return;
    }
    let dir = TempDir::new("qemu-img");
    make_image(dir.path(), "vm1-disk0", 48 << 20, 0);
    let srv = start(dir.path());
    let url = format!("nbd://{}/vm1-disk0", srv.nbd_addr());
    let out = run(Command::new("qemu-img").args(["info", "--output=json", &url]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("\"virtual-size\": {}", 48u64 << 20)),
        "qemu-img info says: {text}"
    );
}

#[test]
fn qemu_io_writes_and_reads_and_bytes_land_in_the_file() {
    if !have_tool("qemu-io") {
        return;
    }
    let dir = TempDir::new("qemu-io");
    let img = make_image(dir.path(), "disk", 4 << 20, 0);
    let srv = start(dir.path());
    let url = format!("nbd://{}/disk", srv.nbd_addr());
    let out = run(Command::new("qemu-io").args([
        "-f",
        "raw",
        &url,
        "-c",
        "write -P 0xab 0 64k",
        "-c",
        "read -P 0xab 0 64k",
        "-c",
        "write -P 0xcd 1m 1m",
        "-c",
        "read -P 0xcd 1m 1m",
        "-c",
        "write -z 3m 64k",
        "-c",
        "aio_write -P 0x11 2m 4k",
        "-c",
        "aio_write -P 0x22 2052k 4k",
        "-c",
        "aio_flush",
        "-c",
        "flush",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed"), "{text}");
    let file = std::fs::read(&img).unwrap();
    assert!(file[..65536].iter().all(|&b| b == 0xab));
    assert!(file[65536..1 << 20].iter().all(|&b| b == 0));
    assert!(file[1 << 20..2 << 20].iter().all(|&b| b == 0xcd));
    assert!(file[2 << 20..(2 << 20) + 4096].iter().all(|&b| b == 0x11));
    assert!(file[(2 << 20) + 4096..(2 << 20) + 8192]
        .iter()
        .all(|&b| b == 0x22));
    assert!(file[3 << 20..(3 << 20) + 65536].iter().all(|&b| b == 0));
}

#[test]
fn qemu_io_reads_what_the_rust_client_wrote() {
    if !have_tool("qemu-io") {
        return;
    }
    let dir = TempDir::new("qemu-io-read");
    make_image(dir.path(), "disk", 1 << 20, 0);
    let srv = start(dir.path());
    let c = NbdClient::connect(srv.nbd_addr(), "disk").unwrap();
    c.write_at(128 << 10, &[0x5c; 128 << 10], true).unwrap();
    let url = format!("nbd://{}/disk", srv.nbd_addr());
    let out = run(Command::new("qemu-io").args([
        "-f",
        "raw",
        "-r",
        &url,
        "-c",
        "read -P 0x5c 128k 128k",
        "-c",
        "read -P 0 0 128k",
    ]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("Pattern verification failed"), "{text}");
    assert_eq!(
        text.matches("read 131072/131072 bytes").count(),
        2,
        "{text}"
    );
}

#[test]
fn qemu_img_convert_into_an_export() {
    if !have_tool("qemu-img") {
        return;
    }
    let dir = TempDir::new("qemu-convert");
    let target = make_image(dir.path(), "target", 2 << 20, 0xff);
    let src = dir.path().join("source.raw");
    let mut content = vec![0u8; 2 << 20];
    for (i, b) in content.iter_mut().enumerate().take(1 << 20) {
        *b = (i % 253) as u8;
    }
    std::fs::write(&src, &content).unwrap();
    let srv = start(dir.path());
    let url = format!("nbd://{}/target", srv.nbd_addr());
    run(Command::new("qemu-img").args([
        "convert",
        "-n",
        "-f",
        "raw",
        "-O",
        "raw",
        src.to_str().unwrap(),
        &url,
    ]));
    assert!(std::fs::read(&target).unwrap() == content);
}

#[test]
fn nbdinfo_lists_exports_and_features() {
    if !have_tool("nbdinfo") {
        return;
    }
    let dir = TempDir::new("nbdinfo");
    make_image(dir.path(), "one", 1 << 20, 0);
    make_image(dir.path(), "two", 2 << 20, 0);
    let mut cfg = config(dir.path());
    cfg.read_only_exports = vec!["two".into()];
    let srv = start_with(cfg);
    let out = run(Command::new("nbdinfo").args(["--list", &format!("nbd://{}", srv.nbd_addr())]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("export=\"one\""), "{text}");
    assert!(text.contains("export=\"two\""), "{text}");
    let out = run(Command::new("nbdinfo").arg(format!("nbd://{}/two", srv.nbd_addr())));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("export-size: 2097152"), "{text}");
    assert!(text.contains("is_read_only: true"), "{text}");
    let out = run(Command::new("nbdinfo").arg(format!("nbd://{}/one", srv.nbd_addr())));
    let text = String::from_utf8_lossy(&out.stdout);
    for feature in [
        "can_flush: true",
        "can_fua: true",
        "can_trim: true",
        "can_zero: true",
    ] {
        assert!(text.contains(feature), "missing {feature}: {text}");
    }
}

#[test]
fn nbd_client_lists_exports() {
    let tool = if std::path::Path::new("/usr/sbin/nbd-client").exists() {
        "/usr/sbin/nbd-client"
    } else if have_tool("nbd-client") {
        "nbd-client"
    } else {
        return;
    };
    let dir = TempDir::new("nbd-client");
    make_image(dir.path(), "listed", 4096, 0);
    let srv = start(dir.path());
    let addr = srv.nbd_addr();
    let out =
        run(Command::new(tool).args(["-l", &addr.ip().to_string(), &addr.port().to_string()]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("listed"), "{text}");
}

#[test]
fn kernel_nbd_attach_when_available() {
    let loaded = std::path::Path::new("/sys/module/nbd").exists()
        && std::path::Path::new("/dev/nbd0").exists();
    if !loaded || !std::path::Path::new("/usr/sbin/nbd-client").exists() {
        eprintln!("note: kernel nbd module or nbd-client missing, skipping the kernel attach test");
        return;
    }
    let dir = TempDir::new("kernel-nbd");
    let img = make_image(dir.path(), "k", 1 << 20, 0);
    let srv = start(dir.path());
    let addr = srv.nbd_addr();
    let dev = "/dev/nbd0";
    let attach = Command::new("/usr/sbin/nbd-client")
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            dev,
            "-N",
            "k",
        ])
        .output()
        .unwrap();
    if !attach.status.success() {
        eprintln!(
            "note: cannot attach {dev} ({}), skipping",
            String::from_utf8_lossy(&attach.stderr).trim()
        );
        return;
    }
    let written = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(&[0x42; 4096])?;
            f.sync_all()
        });
    let _ = Command::new("/usr/sbin/nbd-client")
        .args(["-d", dev])
        .output();
    written.unwrap();
    assert!(std::fs::read(&img).unwrap()[..4096]
        .iter()
        .all(|&b| b == 0x42));
}
