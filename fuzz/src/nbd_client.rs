//! ftvm's NBD client (`ftvm_storage::NbdClient`), what a VM host reads from
//! its storage server: the input is everything a hostile server sends on a
//! connection (greeting, option replies, then transmission replies) before
//! it closes. The client connects, reads, writes, flushes and trims; every
//! answer must be a value or an error, promptly.

use std::io::{Read, Write};
use std::net::{Shutdown as SockShutdown, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ftvm_storage::{NbdClient, NbdClientOptions};

struct FakeServer {
    addr: SocketAddr,
    script: Arc<Mutex<Vec<u8>>>,
}

fn fake_server() -> &'static FakeServer {
    static SERVER: OnceLock<FakeServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        crate::ignore_sigpipe();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("listener address");
        let script = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::clone(&script);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let bytes = shared.lock().map(|b| b.clone()).unwrap_or_default();
                let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
                let _ = conn.write_all(&bytes);
                let _ = conn.shutdown(SockShutdown::Write);
                // Drain what the client says until it closes.
                let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                let mut sink = [0u8; 16 << 10];
                while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
            }
        });
        FakeServer { addr, script }
    })
}

pub fn run(data: &[u8]) {
    let s = fake_server();
    if let Ok(mut script) = s.script.lock() {
        script.clear();
        script.extend_from_slice(data);
    }
    let opts = NbdClientOptions {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        backoff_initial: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
        retry_for: Some(Duration::ZERO),
        tls: None,
    };
    let Ok(client) = NbdClient::connect_with(s.addr, "disk", opts) else {
        return;
    };
    let size = client.size();
    let _ = client.is_read_only();
    let _ = client.transmission_flags();
    let mut buf = vec![0u8; 4096];
    let _ = client.read_at(0, &mut buf);
    let _ = client.write_at(size.saturating_sub(512), &[0xa5; 512], true);
    let _ = client.flush();
    let _ = client.trim(0, 4096);
    client.disconnect();
}
