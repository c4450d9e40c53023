//! Shared helpers for the storage integration tests: scratch directories,
//! image files, an in-process server on 127.0.0.1 with port 0, and a few raw
//! NBD protocol helpers for tests that speak the protocol byte by byte.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use ftvm_storage::nbd::proto::*;
use ftvm_storage::{Shutdown, StorageConfig, StorageServer};

pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "ftvm-storage-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates `DIR/<name>.img` of `size` bytes filled with `fill`.
pub fn make_image(dir: &Path, name: &str, size: usize, fill: u8) -> PathBuf {
    let p = dir.join(format!("{name}.img"));
    std::fs::write(&p, vec![fill; size]).unwrap();
    p
}

pub fn config(dir: &Path) -> StorageConfig {
    let mut c = StorageConfig::new(
        dir.to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    c.stall_timeout = Duration::from_secs(2);
    c.handshake_timeout = Duration::from_secs(5);
    c
}

pub fn start(dir: &Path) -> StorageServer {
    start_with(config(dir))
}

pub fn start_with(c: StorageConfig) -> StorageServer {
    init_tracing();
    StorageServer::start(c, Shutdown::new()).unwrap()
}

pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

pub fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).unwrap();
    b
}

pub fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}
pub fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes(b[i..i + 4].try_into().unwrap())
}
pub fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(b[i..i + 8].try_into().unwrap())
}

/// Reads the greeting and sends client flags; returns the handshake flags.
pub fn greet(s: &mut TcpStream, client_flags: u32) -> u16 {
    let g = read_n(s, 18);
    assert_eq!(&g[0..8], b"NBDMAGIC");
    assert_eq!(&g[8..16], b"IHAVEOPT");
    s.write_all(&client_flags.to_be_bytes()).unwrap();
    u16_at(&g, 16)
}

/// One fixed-newstyle option reply: (option, reply type, data).
pub fn read_opt_reply(s: &mut TcpStream) -> (u32, u32, Vec<u8>) {
    let h = read_n(s, 20);
    assert_eq!(u64_at(&h, 0), OPT_REPLY_MAGIC, "option reply magic");
    let len = u32_at(&h, 16) as usize;
    (u32_at(&h, 8), u32_at(&h, 12), read_n(s, len))
}

/// Handshakes into transmission with NBD_OPT_GO; returns (size, flags).
pub fn go(s: &mut TcpStream, export: &str) -> (u64, u16) {
    greet(s, FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES);
    go_after_greet(s, export)
}

/// NBD_OPT_GO on a connection already past the greeting.
pub fn go_after_greet(s: &mut TcpStream, export: &str) -> (u64, u16) {
    s.write_all(&option_request(OPT_GO, &go_data(export, &[])))
        .unwrap();
    let mut size_flags = None;
    loop {
        let (opt, rep, data) = read_opt_reply(s);
        assert_eq!(opt, OPT_GO);
        match rep {
            REP_INFO => {
                if u16_at(&data, 0) == INFO_EXPORT {
                    size_flags = Some((u64_at(&data, 2), u16_at(&data, 10)));
                }
            }
            REP_ACK => return size_flags.expect("NBD_INFO_EXPORT before ACK"),
            other => panic!(
                "GO failed: reply 0x{other:08x} {:?}",
                String::from_utf8_lossy(&data)
            ),
        }
    }
}

/// Sends a request (with payload for writes).
pub fn send_req(
    s: &mut TcpStream,
    cmd: u16,
    flags: u16,
    handle: u64,
    offset: u64,
    len: u32,
    payload: &[u8],
) {
    let r = Request {
        flags,
        command: cmd,
        handle,
        offset,
        length: len,
    };
    let mut b = r.encode().to_vec();
    b.extend_from_slice(payload);
    s.write_all(&b).unwrap();
}

/// Reads a simple reply header; returns (errno, handle).
pub fn read_reply(s: &mut TcpStream) -> (u32, u64) {
    let h = read_n(s, 16);
    assert_eq!(u32_at(&h, 0), SIMPLE_REPLY_MAGIC, "simple reply magic");
    (u32_at(&h, 4), u64_at(&h, 8))
}

/// Whether the server has closed the connection (EOF or reset within 5 s).
pub fn is_closed(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut b = [0u8; 1];
    loop {
        match s.read(&mut b) {
            Ok(0) => return true,
            Ok(_) => continue, // drain whatever was sent before closing
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Whether `tool` is on PATH; prints a skip note when it is not.
pub fn have_tool(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        eprintln!("note: {tool} not installed, skipping (apt-get install qemu-utils nbd-client libnbd-bin)");
    }
    found
}
