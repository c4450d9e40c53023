//! ftvm-storage: the shared storage host of an FT pair (`ftvm storage`). It
//! serves each VM's raw disk images (`DIR/<name>.img`) over the NBD protocol
//! — fixed-newstyle handshake, named exports, READ/WRITE/FLUSH/TRIM/
//! WRITE_ZEROES with FUA, so standard tools such as `qemu-img`, `qemu-io` and
//! `nbd-client` work against it — and acknowledges a write only once it is
//! durable (fdatasync before every write reply). On a second port it serves
//! the arbiter, the atomic generation-scoped test-and-set that decides which
//! side of a pair may act alone, persisted with fsync and atomic rename before
//! any answer leaves. The crate also holds the client libraries the FT
//! processes use: [`NbdClient`], which rides out storage restarts by
//! reconnecting and re-sending unacknowledged requests, and [`ArbiterClient`].
//! Servers use one thread per connection with blocking sockets; nothing here
//! needs an async runtime. With [`StorageConfig::metrics`] set, both servers
//! count what they serve into [`ftvm_metrics::StorageMetrics`] (requests,
//! bytes and errors per export, arbiter answers, connections, refusals);
//! without it nothing is counted. `docs/storage.md` describes both protocols.
//!
//! ```no_run
//! use ftvm_storage::{serve, Shutdown, StorageConfig};
//!
//! let config = StorageConfig::new(
//!     "/var/lib/ftvm".into(),
//!     "127.0.0.1:10809".parse().unwrap(),
//!     "127.0.0.1:10810".parse().unwrap(),
//! );
//! let shutdown = Shutdown::new();
//! // Call shutdown.trigger() from a signal handler thread to stop.
//! serve(config, shutdown).unwrap();
//! ```

pub mod arbiter;
mod authz;
mod conn;
mod error;
pub mod nbd;
mod sys;
mod transport;

pub use arbiter::wire::{Outcome, VmStatus, Win};
pub use arbiter::{ArbiterClient, VmRecord};
pub use error::{ArbiterError, NbdError, StorageError};
pub use nbd::{NbdClient, NbdClientOptions};

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ftvm_metrics::storage::Channel;
use tracing::{error, info, warn};

/// Configuration of the storage server.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// Directory holding the export images (`<name>.img`) and the arbiter
    /// state (`arbiter.state`, `arbiter.lock`). Must exist.
    pub dir: PathBuf,
    /// Where the NBD server listens (port 0 picks a free port).
    pub nbd_listen: SocketAddr,
    /// Where the arbiter listens (port 0 picks a free port).
    pub arbiter_listen: SocketAddr,
    /// Export every image read-only.
    pub read_only: bool,
    /// Export these images read-only.
    pub read_only_exports: Vec<String>,
    /// The export a client gets when it asks for the empty name.
    pub default_export: Option<String>,
    /// Limit for each step of the NBD handshake.
    pub handshake_timeout: Duration,
    /// Close an NBD connection with no request for this long (`None`: never;
    /// a quiet guest disk is normal).
    pub idle_timeout: Option<Duration>,
    /// Close an arbiter connection with no request for this long.
    pub arbiter_idle_timeout: Option<Duration>,
    /// Once a frame has started, each further byte must arrive within this;
    /// also the send timeout towards clients.
    pub stall_timeout: Duration,
    /// Connections served at once on each port; more are refused.
    pub max_connections: usize,
    /// TLS for both ports (NBD via NBD_OPT_STARTTLS, the arbiter from the
    /// first byte), with every client authenticated and each request
    /// checked against its identity; `None` serves plain TCP to anyone.
    pub tls: Option<ftvm_tls::ServerTls>,
    /// Where to count what is served (`ftvm storage --metrics`); `None`
    /// counts nothing.
    pub metrics: Option<ftvm_metrics::StorageMetrics>,
}

impl StorageConfig {
    /// A configuration with the default limits.
    pub fn new(dir: PathBuf, nbd_listen: SocketAddr, arbiter_listen: SocketAddr) -> StorageConfig {
        StorageConfig {
            dir,
            nbd_listen,
            arbiter_listen,
            read_only: false,
            read_only_exports: Vec::new(),
            default_export: None,
            handshake_timeout: Duration::from_secs(30),
            idle_timeout: None,
            arbiter_idle_timeout: Some(Duration::from_secs(600)),
            stall_timeout: Duration::from_secs(30),
            max_connections: 256,
            tls: None,
            metrics: None,
        }
    }
}

#[derive(Debug, Default)]
struct ShutdownInner {
    flag: AtomicBool,
    lock: Mutex<()>,
    cond: Condvar,
}

/// A cloneable stop signal for the server: trigger it from anywhere (a
/// signal-watching thread, a test) and [`serve`] returns once every
/// connection thread has finished, within a fraction of a second.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(Arc<ShutdownInner>);

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks the server to stop.
    pub fn trigger(&self) {
        self.0.flag.store(true, Ordering::SeqCst);
        let _guard = self.0.lock.lock();
        self.0.cond.notify_all();
    }

    /// Whether stop has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.0.flag.load(Ordering::SeqCst)
    }

    /// Blocks until [`trigger`](Self::trigger) is called.
    pub fn wait(&self) {
        let mut guard = match self.0.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        while !self.is_triggered() {
            guard = match self.0.cond.wait_timeout(guard, Duration::from_millis(200)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// Runs the storage server until `shutdown` is triggered.
pub fn serve(config: StorageConfig, shutdown: Shutdown) -> Result<(), StorageError> {
    let server = StorageServer::start(config, shutdown)?;
    server.wait();
    Ok(())
}

/// A running storage server (both ports). Dropping it stops it.
#[derive(Debug)]
pub struct StorageServer {
    nbd_addr: SocketAddr,
    arbiter_addr: SocketAddr,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

type Handler = Arc<dyn Fn(TcpStream, SocketAddr) + Send + Sync>;

impl StorageServer {
    /// Binds both ports, loads the arbiter state and starts serving in
    /// background threads. Fails if the directory is missing, already served,
    /// or holds a corrupt arbiter state file.
    pub fn start(config: StorageConfig, shutdown: Shutdown) -> Result<StorageServer, StorageError> {
        if !config.dir.is_dir() {
            return Err(StorageError::NoDirectory { dir: config.dir });
        }
        if config.max_connections == 0 {
            return Err(StorageError::Config(
                "max_connections must be at least 1".into(),
            ));
        }
        if let Some(d) = &config.default_export {
            if !nbd::valid_export_name(d) {
                return Err(StorageError::Config(format!(
                    "default export {d:?} is not a valid export name"
                )));
            }
        }
        let store = arbiter::store::Store::open(&config.dir)?;
        let bind = |what: &'static str, addr: SocketAddr| {
            let l = TcpListener::bind(addr).map_err(|source| StorageError::Bind {
                what,
                addr,
                source,
            })?;
            l.set_nonblocking(true)
                .map_err(|source| StorageError::Bind { what, addr, source })?;
            let local =
                l.local_addr()
                    .map_err(|source| StorageError::Bind { what, addr, source })?;
            Ok::<_, StorageError>((l, local))
        };
        let (nbd_listener, nbd_addr) = bind("NBD", config.nbd_listen)?;
        let (arb_listener, arbiter_addr) = bind("the arbiter", config.arbiter_listen)?;

        let nbd_settings = Arc::new(nbd::server::NbdSettings {
            catalog: nbd::export::Catalog {
                dir: config.dir.clone(),
                read_only: config.read_only,
                read_only_exports: config.read_only_exports.clone(),
                default_export: config.default_export.clone(),
            },
            handshake_timeout: config.handshake_timeout,
            idle_timeout: config.idle_timeout,
            stall_timeout: config.stall_timeout,
            tls: config.tls.clone(),
            metrics: config.metrics.clone(),
        });
        let arb_shared = Arc::new(arbiter::server::ArbiterShared {
            store: Mutex::new(store),
            idle_timeout: config.arbiter_idle_timeout,
            stall_timeout: config.stall_timeout,
            tls: config.tls.clone(),
            handshake_timeout: config.handshake_timeout,
            metrics: config.metrics.clone(),
        });

        let sd = shutdown.clone();
        let nbd_handler: Handler = Arc::new(move |stream, peer| {
            nbd::server::serve_connection(stream, peer, nbd_settings.clone(), sd.clone())
        });
        let sd = shutdown.clone();
        let arb_handler: Handler = Arc::new(move |stream, peer| {
            arbiter::server::serve_connection(stream, peer, arb_shared.clone(), sd.clone())
        });

        let mut server = StorageServer {
            nbd_addr,
            arbiter_addr,
            shutdown: shutdown.clone(),
            threads: Vec::new(),
        };
        for (name, channel, listener, handler) in [
            ("nbd", Channel::Nbd, nbd_listener, nbd_handler),
            ("arbiter", Channel::Arbiter, arb_listener, arb_handler),
        ] {
            let sd = shutdown.clone();
            let max = config.max_connections;
            let refused = config.metrics.clone().map(|m| (m, channel));
            let t = std::thread::Builder::new()
                .name(format!("ftvm-{name}-accept"))
                .spawn(move || accept_loop(listener, name, sd, max, handler, refused))
                .map_err(StorageError::Thread)?;
            server.threads.push(t);
        }
        info!(
            dir = %config.dir.display(),
            nbd = %nbd_addr,
            arbiter = %arbiter_addr,
            "storage: serving"
        );
        Ok(server)
    }

    /// The address the NBD server listens on.
    pub fn nbd_addr(&self) -> SocketAddr {
        self.nbd_addr
    }

    /// The address the arbiter listens on.
    pub fn arbiter_addr(&self) -> SocketAddr {
        self.arbiter_addr
    }

    /// The server's stop signal.
    pub fn shutdown_handle(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Blocks until the stop signal is triggered, then until every thread ended.
    pub fn wait(mut self) {
        self.shutdown.wait();
        self.join_all();
    }

    /// Stops the server and waits for every thread to end. After this the
    /// ports are closed and the directory lock is released.
    pub fn stop(mut self) {
        self.shutdown.trigger();
        self.join_all();
    }

    fn join_all(&mut self) {
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                error!("storage: an accept thread panicked");
            }
        }
        info!("storage: stopped");
    }
}

impl Drop for StorageServer {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.shutdown.trigger();
            self.join_all();
        }
    }
}

/// How often an idle accept loop looks at the shutdown flag.
const ACCEPT_POLL: Duration = Duration::from_millis(100);

fn accept_loop(
    listener: TcpListener,
    what: &'static str,
    shutdown: Shutdown,
    max: usize,
    handler: Handler,
    refused: Option<(ftvm_metrics::StorageMetrics, Channel)>,
) {
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    let mut next_id = 0u64;
    while !shutdown.is_triggered() {
        match listener.accept() {
            Ok((stream, peer)) => {
                let (done, live): (Vec<_>, Vec<_>) =
                    workers.into_iter().partition(|h| h.is_finished());
                workers = live;
                for h in done {
                    if h.join().is_err() {
                        error!("{what}: a connection thread panicked");
                    }
                }
                if workers.len() >= max {
                    warn!(%peer, "{what}: refusing connection: {max} connections already open");
                    if let Some((m, channel)) = &refused {
                        m.refused(*channel);
                    }
                    drop(stream);
                    continue;
                }
                next_id += 1;
                let h = handler.clone();
                match std::thread::Builder::new()
                    .name(format!("ftvm-{what}-{next_id}"))
                    .spawn(move || h(stream, peer))
                {
                    Ok(j) => workers.push(j),
                    Err(e) => warn!(%peer, "{what}: cannot start a connection thread: {e}"),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Wake as soon as a client connects (a sleep here cost every
                // connection, NBD reconnects after a failover included, up
                // to ACCEPT_POLL); the timeout is for the shutdown check.
                if sys::wait_readable(&listener, ACCEPT_POLL).is_err() {
                    std::thread::sleep(ACCEPT_POLL);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: back off rather than spin.
                warn!("{what}: accept failed: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    drop(listener);
    for h in workers {
        if h.join().is_err() {
            error!("{what}: a connection thread panicked");
        }
    }
}
