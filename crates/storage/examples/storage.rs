//! A stand-alone `ftvm storage` until the command line wires it up: serves
//! the images of a directory over NBD and the arbiter on a second port,
//! prints the bound addresses, and stops cleanly on SIGINT or SIGTERM.
//!
//! ```text
//! cargo run -p ftvm-storage --example storage -- --dir /tmp/disks \
//!     --nbd 127.0.0.1:10809 --arbiter 127.0.0.1:10810 [--read-only]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use ftvm_storage::{Shutdown, StorageConfig, StorageServer};

static SIGNALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    SIGNALLED.store(true, Ordering::SeqCst);
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: storage --dir DIR [--nbd ADDR] [--arbiter ADDR] [--read-only] [--default-export NAME]\n\
         defaults: --nbd 127.0.0.1:10809 --arbiter 127.0.0.1:10810"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut dir: Option<PathBuf> = None;
    let mut nbd: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 10809));
    let mut arbiter: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 10810));
    let mut read_only = false;
    let mut default_export = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed: Result<(), String> = match a.as_str() {
            "--dir" => value("--dir").map(|v| dir = Some(v.into())),
            "--nbd" => value("--nbd").and_then(|v| {
                v.parse()
                    .map(|x| nbd = x)
                    .map_err(|e| format!("--nbd {v}: {e}"))
            }),
            "--arbiter" => value("--arbiter").and_then(|v| {
                v.parse()
                    .map(|x| arbiter = x)
                    .map_err(|e| format!("--arbiter {v}: {e}"))
            }),
            "--default-export" => value("--default-export").map(|v| default_export = Some(v)),
            "--read-only" => {
                read_only = true;
                Ok(())
            }
            "-h" | "--help" => return usage(),
            other => Err(format!("unknown argument {other:?}")),
        };
        if let Err(e) = parsed {
            eprintln!("storage: {e}");
            return usage();
        }
    }
    let Some(dir) = dir else {
        return usage();
    };

    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
    let shutdown = Shutdown::new();
    let watcher = shutdown.clone();
    std::thread::spawn(move || loop {
        if SIGNALLED.load(Ordering::SeqCst) {
            watcher.trigger();
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });

    let mut config = StorageConfig::new(dir, nbd, arbiter);
    config.read_only = read_only;
    config.default_export = default_export;
    let server = match StorageServer::start(config, shutdown) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("storage: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Machine-readable for scripts and tests that start us with port 0.
    println!("nbd {}", server.nbd_addr());
    println!("arbiter {}", server.arbiter_addr());
    server.wait();
    ExitCode::SUCCESS
}
