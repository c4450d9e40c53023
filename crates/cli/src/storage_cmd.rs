//! `ftvm storage`: runs the shared storage host of an FT pair — the NBD
//! server for the disk images in a directory and the arbiter — from the
//! `ftvm-storage` crate. This module owns the command's options, preparing
//! the directory (creating it, and sparse images asked for with
//! `--create NAME=SIZE`), serving Prometheus metrics on `--metrics`,
//! printing the bound addresses for scripts (`metrics ADDR` after `nbd` and
//! `arbiter` when asked for), and turning SIGINT/SIGTERM into a clean stop.
//! Signals are taken with `sigwait` on a dedicated thread while they are
//! blocked in every other thread: no signal handler is installed at all,
//! so nothing here touches the handlers and stop flag of `driver.rs` (which
//! `ftvm run` installs, and which never run in this process), and nothing
//! runs in signal context.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use ftvm_host::disk::SECTOR;
use ftvm_storage::{Shutdown, StorageConfig, StorageServer};

#[derive(Args, Debug)]
pub struct StorageArgs {
    /// Directory holding the disk images (NAME.img, each served as export
    /// NAME) and the arbiter's state. Created if missing.
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Where the NBD server listens (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10809")]
    pub nbd_listen: SocketAddr,
    /// Where the arbiter listens (port 0: any free port).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:10810")]
    pub arbiter_listen: SocketAddr,
    /// Export every image read-only.
    #[arg(long)]
    pub read_only: bool,
    /// The export a client gets when it asks for the empty name.
    #[arg(long, value_name = "NAME")]
    pub default_export: Option<String>,
    /// Create DIR/NAME.img as a sparse, zero-filled image of SIZE (bytes, or
    /// with a K/M/G/T suffix, a multiple of 512) unless it exists; an
    /// existing image of another size is an error. Repeatable.
    #[arg(long = "create", value_name = "NAME=SIZE")]
    pub create: Vec<CreateSpec>,
    /// TLS on both ports (NBD through NBD_OPT_STARTTLS, the arbiter from
    /// the first byte) with client certificates required and checked
    /// (see docs/security.md), or --insecure.
    #[command(flatten)]
    pub tls: crate::tls_args::TlsArgs,
    /// Serve Prometheus metrics (OpenMetrics text at /metrics) on this
    /// address (port 0: any free port).
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics: Option<SocketAddr>,
}

/// `--create NAME=SIZE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateSpec {
    pub name: String,
    pub size: u64,
}

impl std::str::FromStr for CreateSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, size) = s
            .split_once('=')
            .ok_or_else(|| format!("--create {s:?}: expected NAME=SIZE, e.g. vm1=256M"))?;
        if !ftvm_storage::nbd::valid_export_name(name) {
            return Err(format!(
                "--create {s:?}: {name:?} is not a valid export name (1-255 characters from [A-Za-z0-9._+-], not starting with '.')"
            ));
        }
        let size = parse_disk_size(size).map_err(|e| format!("--create {s:?}: {e}"))?;
        Ok(CreateSpec {
            name: name.to_string(),
            size,
        })
    }
}

/// A disk size: bytes, or a number with a binary K/M/G/T suffix; a non-zero
/// multiple of the 512-byte sector.
pub fn parse_disk_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, shift) = match t.chars().last() {
        Some('k' | 'K') => (&t[..t.len() - 1], 10),
        Some('m' | 'M') => (&t[..t.len() - 1], 20),
        Some('g' | 'G') => (&t[..t.len() - 1], 30),
        Some('t' | 'T') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("bad size {s:?} (expected e.g. 256M, 4G or a byte count)"))?;
    let bytes = n
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size {s:?} is too large"))?;
    if bytes == 0 || bytes % SECTOR != 0 {
        return Err(format!(
            "size {s:?} must be a non-zero multiple of {SECTOR} bytes"
        ));
    }
    Ok(bytes)
}

/// Why the storage directory could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("cannot create storage directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("image {path} exists with {actual} bytes, not the {wanted} asked for by --create; resize or remove it, or change --create")]
    SizeMismatch {
        path: PathBuf,
        actual: u64,
        wanted: u64,
    },
    #[error("{path} exists and is not a regular file; --create only makes image files")]
    NotAFile { path: PathBuf },
    #[error("cannot create image {path}: {source}")]
    CreateImage { path: PathBuf, source: io::Error },
}

/// Creates the directory and the `--create` images that are missing.
/// Returns the images it created.
pub fn prepare_dir(dir: &Path, create: &[CreateSpec]) -> Result<Vec<PathBuf>, PrepareError> {
    std::fs::create_dir_all(dir).map_err(|source| PrepareError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut created = Vec::new();
    for c in create {
        let path = dir.join(format!("{}.img", c.name));
        match std::fs::metadata(&path) {
            Ok(m) if !m.is_file() => return Err(PrepareError::NotAFile { path }),
            Ok(m) if m.len() != c.size => {
                return Err(PrepareError::SizeMismatch {
                    path,
                    actual: m.len(),
                    wanted: c.size,
                })
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(PrepareError::CreateImage { path, source }),
        }
        let create_err = |source| PrepareError::CreateImage {
            path: path.clone(),
            source,
        };
        // create_new: never truncate an image someone made meanwhile.
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(create_err)?;
        // set_len makes a hole: the image takes no space until written.
        if let Err(e) = f.set_len(c.size).and_then(|()| f.sync_all()) {
            drop(f);
            let _ = std::fs::remove_file(&path);
            return Err(create_err(e));
        }
        created.push(path);
    }
    Ok(created)
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread
/// it starts afterwards) and starts a thread that waits for them with
/// `sigwait` and then triggers `shutdown`. Must run before the server
/// threads are started.
fn stop_on_signals(shutdown: Shutdown) -> Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t we own; the signal numbers are valid.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
    }
    // SAFETY: `set` is initialised; a null old-set pointer is allowed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc)).context("cannot block SIGINT/SIGTERM");
    }
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || loop {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` and `sig` are valid for the call; the signals
            // are blocked in every thread, so only sigwait receives them.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                eprintln!("ftvm storage: signal {sig}: stopping");
                shutdown.trigger();
                return;
            }
        })
        .context("cannot start the signal-watching thread")?;
    Ok(())
}

pub fn storage(args: StorageArgs) -> Result<u8> {
    if let Some(d) = &args.default_export {
        if !ftvm_storage::nbd::valid_export_name(d) {
            anyhow::bail!("--default-export {d:?} is not a valid export name (1-255 characters from [A-Za-z0-9._+-], not starting with '.')");
        }
    }
    let tls = args.tls.server("storage")?;
    for path in prepare_dir(&args.dir, &args.create)? {
        eprintln!("ftvm storage: created {}", path.display());
    }
    let shutdown = Shutdown::new();
    stop_on_signals(shutdown.clone())?;
    let mut config = StorageConfig::new(args.dir, args.nbd_listen, args.arbiter_listen);
    config.read_only = args.read_only;
    config.default_export = args.default_export;
    config.tls = tls;
    let metrics = args.metrics.map(|addr| {
        let mut registry = ftvm_metrics::Registry::default();
        config.metrics = Some(ftvm_metrics::StorageMetrics::register(&mut registry));
        (addr, registry)
    });
    let server = StorageServer::start(config, shutdown)?;
    let metrics = match metrics {
        Some((addr, registry)) => {
            let ep =
                ftvm_metrics::serve(addr, registry).context("cannot start the metrics endpoint")?;
            tracing::info!(metrics = %ep.addr, "storage: serving metrics at /metrics");
            Some(ep.addr)
        }
        None => None,
    };
    // Machine-readable, for scripts and tests that listen on port 0.
    let mut out = io::stdout().lock();
    writeln!(out, "nbd {}", server.nbd_addr())
        .and_then(|()| writeln!(out, "arbiter {}", server.arbiter_addr()))
        .and_then(|()| match metrics {
            Some(addr) => writeln!(out, "metrics {addr}"),
            None => Ok(()),
        })
        .and_then(|()| out.flush())
        .context("cannot write the listening addresses to stdout")?;
    drop(out);
    server.wait();
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_create_specs() {
        let c: CreateSpec = "vm1-disk0=256M".parse().unwrap();
        assert_eq!(c.name, "vm1-disk0");
        assert_eq!(c.size, 256 << 20);
        assert_eq!("a=4096".parse::<CreateSpec>().unwrap().size, 4096);
        assert_eq!("a=2g".parse::<CreateSpec>().unwrap().size, 2 << 30);
        assert!("a".parse::<CreateSpec>().is_err());
        assert!("a=0".parse::<CreateSpec>().is_err());
        assert!("a=1000".parse::<CreateSpec>().is_err());
        assert!("a=xM".parse::<CreateSpec>().is_err());
        assert!("a=99999999999T".parse::<CreateSpec>().is_err());
        assert!(".hidden=1M".parse::<CreateSpec>().is_err());
        assert!("a/b=1M".parse::<CreateSpec>().is_err());
        assert!("=1M".parse::<CreateSpec>().is_err());
    }

    #[test]
    fn prepare_creates_sparse_images_and_checks_sizes() {
        let dir = std::env::temp_dir().join(format!("ftvm-prepare-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sub = dir.join("store");
        let spec = |s: &str| s.parse::<CreateSpec>().unwrap();
        let made = prepare_dir(&sub, &[spec("a=1M"), spec("b=4096")]).unwrap();
        assert_eq!(made.len(), 2);
        let a = sub.join("a.img");
        assert_eq!(std::fs::metadata(&a).unwrap().len(), 1 << 20);
        // Existing with the same size: kept as it is.
        std::fs::write(sub.join("b.img"), vec![7u8; 4096]).unwrap();
        assert!(prepare_dir(&sub, &[spec("b=4096")]).unwrap().is_empty());
        assert_eq!(std::fs::read(sub.join("b.img")).unwrap(), vec![7u8; 4096]);
        // Existing with another size: an error, and the file is untouched.
        let err = prepare_dir(&sub, &[spec("b=8192")]).unwrap_err();
        assert!(matches!(
            err,
            PrepareError::SizeMismatch {
                actual: 4096,
                wanted: 8192,
                ..
            }
        ));
        assert_eq!(std::fs::metadata(sub.join("b.img")).unwrap().len(), 4096);
        std::fs::create_dir(sub.join("c.img")).unwrap();
        assert!(matches!(
            prepare_dir(&sub, &[spec("c=4096")]).unwrap_err(),
            PrepareError::NotAFile { .. }
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
