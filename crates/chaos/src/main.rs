//! ftvm-chaos: a fault campaign against real FT pairs. Each trial starts a
//! fresh pair in the `scripts/netns.sh` lab (shared NBD disks or
//! `--local-disks`, chosen by the seed), drives redis with `ftvm-loadgen`
//! from the client namespace, injects 1–4 seeded faults (kills, stalls,
//! link cuts, shaping, joins, and `--test-fault` at an exact guest
//! instruction) and checks that no acknowledged write was lost, no two VMs
//! ran at once, nothing diverged or panicked, and the client's connection
//! survived. Trial K of seed S is a function of (S, K) alone, so
//! `ftvm-chaos --seed S --trial K` reruns it. The campaign cleans up its
//! namespaces and processes on exit, on SIGINT/SIGTERM, and at start (what
//! an interrupted run left behind).
//!
//! Exit status: 0 every trial passed; 1 a trial failed; 2 the campaign
//! could not run (not root, missing tools, bad options); 130 interrupted.

mod lab;
mod plan;
mod report;
mod rng;
mod trial;

use std::fs;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Parser;

use lab::Tools;
use plan::{DiskChoice, Kind, Plan, ALL_KINDS};
use report::Summary;

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[derive(Parser, Debug)]
#[command(
    name = "ftvm-chaos",
    version,
    about = "Seeded fault campaign against real ftvm pairs in the netns lab (needs root)",
    after_help = "Fault kinds (--faults): kill-primary kill-backup kill-storage kill-joiner \
stall-primary stall-backup cut-log shape-log shape-storage cut-storage-failover join \
join-failover step-die step-stall step-drop step-corrupt.\n\
A failing trial prints the command that reruns it alone. Exit status: 0 all passed, \
1 a trial failed, 2 the campaign could not run, 130 interrupted."
)]
struct Cli {
    /// How many trials to run.
    #[arg(long, default_value_t = 10)]
    trials: u64,
    /// Campaign seed: trial K's schedule is a function of (seed, K).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Index of the first trial (to resume a campaign, or run a slice of it).
    #[arg(long, default_value_t = 0)]
    start_trial: u64,
    /// Run only trial K (the same as --start-trial K --trials 1).
    #[arg(long, value_name = "K")]
    trial: Option<u64>,
    /// Comma-separated fault kinds to draw from (default: all).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    faults: Vec<String>,
    /// Append each trial's line, and the summary, to this file.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Append each trial's result as one line of JSON to this file
    /// (several runs appending to one file can be summed with --summarize).
    #[arg(long, value_name = "FILE")]
    jsonl: Option<PathBuf>,
    /// Print the summary of a --jsonl file and exit.
    #[arg(long, value_name = "FILE")]
    summarize: Option<PathBuf>,
    /// Every trial with non-shared disks (instead of the seed's choice).
    #[arg(long, conflicts_with = "shared_disks")]
    local_disks: bool,
    /// Every trial with shared NBD disks.
    #[arg(long)]
    shared_disks: bool,
    /// Namespace prefix of the lab (must not collide with other labs).
    #[arg(long, default_value = "chaos")]
    prefix: String,
    /// Where trial files go; a failed trial's stay there.
    #[arg(long, value_name = "DIR", default_value = "/tmp/ftvm-chaos")]
    work_dir: PathBuf,
    /// Hold flock(2) on FILE while trials run, released every --chunk trials.
    #[arg(long, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Trials per hold of --lock.
    #[arg(long, default_value_t = 20)]
    chunk: u64,
    /// The ftvm binary (default: next to this one).
    #[arg(long)]
    ftvm: Option<PathBuf>,
    /// The ftvm-loadgen binary (default: next to this one).
    #[arg(long)]
    loadgen: Option<PathBuf>,
    /// The guest image directory (default: $FTVM_GUEST_DIR, else ~/.cache/ftvm/guest/latest).
    #[arg(long)]
    guest_dir: Option<PathBuf>,
    /// Stop at the first failing trial.
    #[arg(long)]
    fail_fast: bool,
    /// Keep the files of passed trials too.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("ftvm-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let dir = me.parent().context("this program has no directory")?;
    // Test binaries live in target/*/deps; the programs one level up.
    for d in [dir, dir.parent().unwrap_or(dir)] {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("cannot find {name} next to {}", me.display())
}

fn tools(cli: &Cli) -> Result<Tools> {
    let ftvm = match &cli.ftvm {
        Some(p) => p.clone(),
        None => sibling("ftvm")?,
    };
    let loadgen = match &cli.loadgen {
        Some(p) => p.clone(),
        None => sibling("ftvm-loadgen")?,
    };
    let guest = match (&cli.guest_dir, std::env::var_os("FTVM_GUEST_DIR")) {
        (Some(g), _) => g.clone(),
        (None, Some(g)) => PathBuf::from(g),
        (None, None) => {
            let home = std::env::var_os("HOME").context("HOME is unset; give --guest-dir")?;
            PathBuf::from(home).join(".cache/ftvm/guest/latest")
        }
    };
    if !guest.join("Image").is_file() {
        bail!(
            "no guest image in {} (run guest/build.sh, or give --guest-dir)",
            guest.display()
        );
    }
    let netns = repo_root().join("scripts/netns.sh");
    if !netns.is_file() {
        bail!("cannot find {}", netns.display());
    }
    Ok(Tools {
        ftvm,
        loadgen,
        netns,
        guest,
    })
}

/// The repository (for scripts/netns.sh): compiled in, overridable.
fn repo_root() -> PathBuf {
    match std::env::var_os("FTVM_REPO") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

fn kinds(cli: &Cli) -> Result<Vec<Kind>> {
    if cli.faults.is_empty() {
        return Ok(ALL_KINDS.to_vec());
    }
    cli.faults
        .iter()
        .map(|s| {
            Kind::parse(s.trim()).with_context(|| {
                let names: Vec<&str> = ALL_KINDS.iter().map(|k| k.name()).collect();
                format!("unknown fault kind {s:?}; use {}", names.join(", "))
            })
        })
        .collect()
}

/// The exclusive hold of a lock file (flock), released on drop.
struct Lock(fs::File);

impl Lock {
    fn take(path: &Path) -> Result<Lock> {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open the lock {}", path.display()))?;
        loop {
            // SAFETY: flock(2) on a descriptor we own.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(Lock(f));
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted || STOP.load(Ordering::SeqCst) {
                bail!("cannot lock {}: {e}", path.display());
            }
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Claims the prefix: refuses if a live ftvm-chaos holds it, removes what
/// a dead one left behind.
fn claim_prefix(cli: &Cli, tools: &Tools) -> Result<PathBuf> {
    let reg = std::env::temp_dir().join("ftvm-chaos-prefixes");
    fs::create_dir_all(&reg).context("cannot create the prefix registry")?;
    let rec = reg.join(&cli.prefix);
    if let Ok(s) = fs::read_to_string(&rec) {
        if let Ok(pid) = s.trim().parse::<u32>() {
            if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
                bail!(
                    "another ftvm-chaos (pid {pid}) uses the prefix {:?}; give --prefix",
                    cli.prefix
                );
            }
            eprintln!(
                "ftvm-chaos: removing what an interrupted run (pid {pid}) left under {:?}",
                cli.prefix
            );
        }
    }
    fs::write(&rec, std::process::id().to_string()).context("cannot record the prefix")?;
    let out = std::process::Command::new(&tools.netns)
        .args(["down", &cli.prefix, "--kill"])
        .output()
        .context("cannot run scripts/netns.sh")?;
    if !out.status.success() {
        bail!(
            "cannot remove leftovers of prefix {}: {}",
            cli.prefix,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(rec)
}

fn rerun_command(cli: &Cli, trial: u64) -> String {
    let mut c = format!("ftvm-chaos --seed {} --trial {trial}", cli.seed);
    if !cli.faults.is_empty() {
        c += &format!(" --faults {}", cli.faults.join(","));
    }
    if cli.local_disks {
        c += " --local-disks";
    }
    if cli.shared_disks {
        c += " --shared-disks";
    }
    c
}

fn append(path: &Option<PathBuf>, text: &str) -> Result<()> {
    if let Some(p) = path {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .with_context(|| format!("cannot open {}", p.display()))?;
        f.write_all(text.as_bytes())
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(())
}

fn run(cli: Cli) -> Result<u8> {
    if let Some(p) = &cli.summarize {
        let s = Summary::from_jsonl(p)?;
        print!("{}", s.render());
        return Ok(0);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root (network namespaces, TAP devices, tc)");
    }
    let kinds = kinds(&cli)?;
    let tools = tools(&cli)?;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    let rec = claim_prefix(&cli, &tools)?;
    let disks = if cli.local_disks {
        DiskChoice::Local
    } else if cli.shared_disks {
        DiskChoice::Shared
    } else {
        DiskChoice::Seeded
    };
    let (first, n) = match cli.trial {
        Some(k) => (k, 1),
        None => (cli.start_trial, cli.trials),
    };
    let started = Instant::now();
    let mut summary = Summary::default();
    let mut lock: Option<Lock> = None;
    let mut in_chunk = 0;
    let mut failed = false;
    for k in first..first + n {
        if STOP.load(Ordering::SeqCst) {
            break;
        }
        if let Some(path) = &cli.lock {
            if in_chunk == cli.chunk {
                lock = None;
                in_chunk = 0;
            }
            if lock.is_none() {
                lock = Some(Lock::take(path)?);
            }
            in_chunk += 1;
        }
        let plan = Plan::new(cli.seed, k, &kinds, disks);
        eprintln!(
            "ftvm-chaos: trial {k} (seed {}): {}",
            cli.seed,
            plan.describe()
        );
        let dir = cli.work_dir.join(format!("seed{}-trial{k}", cli.seed));
        let _ = fs::remove_dir_all(&dir);
        let ctx = trial::Ctx {
            tools: &tools,
            prefix: &cli.prefix,
            dir: dir.clone(),
            stop: &STOP,
        };
        let res = trial::run(&ctx, &plan);
        let mut line = report::line(&res);
        if res.interrupted {
            line += "\n";
        } else if !res.passed() {
            failed = true;
            line += &format!(
                "\n  rerun: {}\n  files: {}\n",
                rerun_command(&cli, k),
                dir.display()
            );
        } else {
            if !cli.keep {
                trial::clean(&dir);
            }
            line += "\n";
        }
        print!("{line}");
        let _ = std::io::stdout().flush();
        append(&cli.report, &line)?;
        if !res.interrupted {
            append(
                &cli.jsonl,
                &format!(
                    "{}\n",
                    serde_json::to_string(&res).context("cannot encode a result")?
                ),
            )?;
            summary.add(&res);
        }
        if failed && cli.fail_fast {
            break;
        }
    }
    drop(lock);
    let _ = fs::remove_file(&rec);
    summary.wall_s = started.elapsed().as_secs_f64();
    let text = format!(
        "summary (seed {}, trials {}..{}):\n{}",
        cli.seed,
        first,
        first + n,
        summary.render()
    );
    print!("{text}");
    append(&cli.report, &text)?;
    if STOP.load(Ordering::SeqCst) {
        eprintln!("ftvm-chaos: interrupted; the lab is removed");
        return Ok(130);
    }
    Ok(if summary.failed > 0 { 1 } else { 0 })
}
