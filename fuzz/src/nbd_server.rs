//! The two ports of a real `ftvm storage` server (NBD: the option haggling
//! and the transmission phase; the arbiter: framing and request handling),
//! in this process on loopback, each input one client connection. The first
//! byte picks the port, the rest is what the client sends before it closes
//! its side. The server must answer and then close the connection; a
//! connection still open five seconds after the client's EOF is a hang.

use std::io::{Read, Write};
use std::net::{Shutdown as SockShutdown, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ftvm_storage::{Shutdown, StorageConfig, StorageServer};

struct Server {
    nbd: SocketAddr,
    arbiter: SocketAddr,
}

/// The export directory, under `TMPDIR` (scripts/fuzz.sh points it at its
/// scratch directory in /dev/shm and removes that afterwards).
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("ftvm-fuzz-storage-{}", std::process::id()))
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        crate::ignore_sigpipe();
        let dir = scratch_dir();
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        std::fs::write(dir.join("disk.img"), vec![0u8; 1 << 20]).expect("create disk.img");
        std::fs::write(dir.join("ro.img"), vec![0x5au8; 64 << 10]).expect("create ro.img");
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("loopback address");
        let mut cfg = StorageConfig::new(dir, loopback, loopback);
        cfg.read_only_exports = vec!["ro".into()];
        cfg.default_export = Some("disk".into());
        cfg.handshake_timeout = Duration::from_secs(2);
        cfg.stall_timeout = Duration::from_secs(2);
        let server = StorageServer::start(cfg, Shutdown::new()).expect("start the storage server");
        let s = Server {
            nbd: server.nbd_addr(),
            arbiter: server.arbiter_addr(),
        };
        // The server runs for the life of the fuzzing process.
        std::mem::forget(server);
        s
    })
}

pub fn run(data: &[u8]) {
    let s = server();
    let Some((&sel, bytes)) = data.split_first() else {
        return;
    };
    let addr = if sel & 1 == 0 { s.nbd } else { s.arbiter };
    let Ok(mut conn) = TcpStream::connect(addr) else {
        return;
    };
    let _ = conn.set_write_timeout(Some(Duration::from_secs(5)));
    // The server may close early (a refused option, a bad frame): ignore
    // the write error and read what it said.
    let _ = conn.write_all(bytes);
    let _ = conn.shutdown(SockShutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
    let start = Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the server kept the connection open 5 s after the client's EOF"
                );
            }
            Err(_) => return,
        }
    }
}
