//! The lab a trial runs in: `scripts/netns.sh` under the campaign's prefix
//! (two VM hosts, storage, client), the ftvm processes started inside it
//! (storage, primary, backups and joiners), the commands run in its
//! namespaces (`tc`, link cuts, the client's `ftvm-loadgen`, the arbiter's
//! history), and a status monitor: one thread per VM host that enters the
//! host's network namespace (`setns`) and reads the status endpoint of the
//! process there every few tens of milliseconds, so the trial always knows
//! each host's phase and can tell if two hosts ever ran the guest on at
//! once. Dropping the lab removes the namespaces and everything in them.
//! Every channel runs over TLS, with certificates the lab makes with `ftvm
//! certs init` in `DIR/certs` (hosts h1 and h2 for vm0, an operator for the
//! arbiter's history); `FTVM_LAB_INSECURE=1` runs it all on plain TCP
//! (`--insecure`) instead.

use std::fs;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub const NBD: &str = "10.79.0.1:10809";
pub const ARBITER: &str = "10.79.0.1:10810";
pub const REDIS: &str = "10.77.0.2:6379";
const STATUS_PORT: u16 = 7100;
/// How often the monitor reads each host's status.
const MONITOR_EVERY: Duration = Duration::from_millis(40);
/// A status sample older than this says nothing about the present.
pub const FRESH: Duration = Duration::from_millis(300);
/// Guest disk size (the guest formats it at boot).
const DISK_BYTES: u64 = 64 << 20;

/// Where the programs and the guest image are.
#[derive(Clone, Debug)]
pub struct Tools {
    pub ftvm: PathBuf,
    pub loadgen: PathBuf,
    pub netns: PathBuf,
    pub guest: PathBuf,
}

/// One ftvm process of a trial.
pub struct Proc {
    pub name: String,
    /// 1 or 2 for VM hosts, 0 for storage.
    pub host: usize,
    pub child: Child,
    pub exited: Option<ExitStatus>,
    /// The campaign sent it SIGKILL on purpose.
    pub killed: bool,
    /// It may kill itself (`--test-fault STEP:die`).
    pub may_die: bool,
    pub log: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Reaps it if it ended; whether it still runs.
    pub fn alive(&mut self) -> bool {
        if self.exited.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.exited = Some(st);
            }
        }
        self.exited.is_none()
    }

    pub fn signal(&self, sig: i32) {
        if self.exited.is_none() {
            // SAFETY: kill(2) on a child we have not reaped, valid signal.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGKILL on purpose, and reap.
    pub fn kill(&mut self) {
        if self.alive() {
            self.killed = true;
            let _ = self.child.kill();
            if let Ok(st) = self.child.wait() {
                self.exited = Some(st);
            }
        }
    }
}

pub struct Lab {
    pub prefix: String,
    pub dir: PathBuf,
    pub tools: Tools,
    pub local_disks: bool,
    /// Plain TCP (`--insecure`) instead of TLS.
    pub insecure: bool,
}

impl Lab {
    /// Builds the network (any leftover of the prefix removed first).
    pub fn up(prefix: &str, dir: &Path, tools: &Tools, local_disks: bool) -> Result<Lab> {
        let lab = Lab {
            prefix: prefix.to_string(),
            dir: dir.to_path_buf(),
            tools: tools.clone(),
            local_disks,
            insecure: std::env::var_os("FTVM_LAB_INSECURE").is_some_and(|v| v == "1"),
        };
        lab.netns(&["down", prefix, "--kill"])?;
        lab.netns(&["up", prefix, "2"])?;
        fs::create_dir_all(dir.join("storage")).context("cannot create the storage dir")?;
        if !lab.insecure && !dir.join("certs").join("ca-cert.pem").exists() {
            let out = Command::new(&lab.tools.ftvm)
                .args(["certs", "init"])
                .arg(dir.join("certs"))
                .args(["--hosts", "h1,h2", "--vms", "vm0", "--operator", "lab"])
                .stdin(Stdio::null())
                .output()
                .context("cannot run ftvm certs init")?;
            if !out.status.success() {
                bail!(
                    "ftvm certs init failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        if local_disks {
            for h in 1..=2 {
                fs::File::create(dir.join(format!("disk-h{h}.img")))
                    .and_then(|f| f.set_len(DISK_BYTES))
                    .context("cannot create a local disk")?;
            }
        }
        Ok(lab)
    }

    pub fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// Runs `scripts/netns.sh ARGS`; fails with its stderr.
    pub fn netns(&self, args: &[&str]) -> Result<()> {
        let out = Command::new(&self.tools.netns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("cannot run scripts/netns.sh")?;
        if !out.status.success() {
            bail!(
                "netns.sh {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// `ip netns exec PREFIX-NODE PROGRAM`.
    pub fn cmd_in(&self, node: &str, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(node)]).arg(program);
        c.stdin(Stdio::null());
        c
    }

    /// Runs a command in a namespace to completion; fails with its stderr.
    pub fn run_in(&self, node: &str, program: &str, args: &[&str]) -> Result<String> {
        let out = self
            .cmd_in(node, Path::new(program))
            .args(args)
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} in {node} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn log_file(&self, name: &str) -> Result<(PathBuf, Stdio)> {
        let p = self.dir.join(format!("{name}.log"));
        let f = fs::File::create(&p).with_context(|| format!("cannot create {}", p.display()))?;
        Ok((p, Stdio::from(f)))
    }

    /// The TLS options of identity `who` (`storage`, `host-h1`,
    /// `operator-lab`), or `--insecure`.
    pub fn tls_args(&self, who: &str) -> Vec<String> {
        if self.insecure {
            return vec!["--insecure".into()];
        }
        let d = self.dir.join("certs");
        let kind = if who == "storage" { "server" } else { "client" };
        vec![
            "--tls-cert".into(),
            d.join(who)
                .join(format!("{kind}-cert.pem"))
                .display()
                .to_string(),
            "--tls-key".into(),
            d.join(who)
                .join(format!("{kind}-key.pem"))
                .display()
                .to_string(),
            "--tls-ca".into(),
            d.join("ca-cert.pem").display().to_string(),
        ]
    }

    /// `ftvm arbiter OP vm0` as the lab's operator.
    fn arbiter_cmd(&self, op: &str) -> Result<String> {
        let ftvm = self.tools.ftvm.display().to_string();
        let mut args = vec!["arbiter".to_string()];
        args.extend(self.tls_args("operator-lab"));
        args.extend(["--arbiter", ARBITER, op, "vm0"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run_in("st", &ftvm, &args)
    }

    pub fn spawn_storage(&self, name: &str) -> Result<Proc> {
        let mut c = self.cmd_in("st", &self.tools.ftvm);
        c.arg("storage")
            .args(self.tls_args("storage"))
            .arg("--dir")
            .arg(self.dir.join("storage"))
            .args(["--nbd-listen", NBD, "--arbiter-listen", ARBITER])
            .args(["--create", "vm0=64M"]);
        self.start(name, 0, c)
    }

    /// Starts `c` as the process `name` on `host` (0: the storage node),
    /// its stderr in `DIR/NAME.log`.
    fn start(&self, name: &str, host: usize, mut c: Command) -> Result<Proc> {
        let (log, err) = self.log_file(name)?;
        let child = c
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc {
            name: name.into(),
            host,
            child,
            exited: None,
            killed: false,
            may_die: false,
            log,
        })
    }

    /// Waits until the arbiter answers.
    pub fn wait_arbiter(&self, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if self.arbiter_cmd("query").is_ok() {
                return Ok(());
            }
            if t.elapsed() > timeout {
                bail!("ftvm storage did not come up within {timeout:?}");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The arbiter's record for vm0: (generation, winner) per line.
    pub fn arbiter_history(&self) -> Result<Vec<(u64, String)>> {
        let out = self.arbiter_cmd("history")?;
        Ok(out
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| {
                let mut it = l.split('\t');
                let g = it.next()?.trim().parse().ok()?;
                Some((g, it.next().unwrap_or("").to_string()))
            })
            .collect())
    }

    fn machine_args(&self, c: &mut Command, host: usize) {
        let g = &self.tools.guest;
        c.arg("--bios")
            .arg(g.join("fw_jump.bin"))
            .arg("--kernel")
            .arg(g.join("Image"))
            .arg("--initrd")
            .arg(g.join("initrd.cpio.gz"));
        if self.local_disks {
            c.arg("--drive").arg(format!(
                "file={}",
                self.dir.join(format!("disk-h{host}.img")).display()
            ));
            c.arg("--local-disks");
        } else {
            c.args(["--drive", &format!("nbd://{NBD}/vm0")]);
        }
        c.args(["--net", "tap:tap0", "--vm", "vm0", "--arbiter", ARBITER])
            .args(["--status", &format!("127.0.0.1:{STATUS_PORT}")])
            .args(["--join-listen", &format!("10.78.0.{host}:7001")])
            .args(self.tls_args(&format!("host-h{host}")))
            .arg("--no-input");
    }

    /// `ftvm primary` on host 1, its backup on host 2.
    pub fn spawn_primary(&self, test_fault: Option<&str>) -> Result<Proc> {
        let mut c = self.cmd_in("h1", &self.tools.ftvm);
        c.args(["primary", "--backup", "10.78.0.2:7000", "--console"])
            .arg(format!(
                "file:{}",
                self.dir.join("console-primary.txt").display()
            ))
            .args(["--append", "console=ttyS0 ftvm.ip=10.77.0.2/24 ftvm.redis"]);
        self.machine_args(&mut c, 1);
        if let Some(tf) = test_fault {
            c.args(["--test-fault", tf]);
        }
        self.start("primary", 1, c)
    }

    /// `ftvm backup` on `host`, joining the process on `join_host` if given.
    pub fn spawn_backup(
        &self,
        name: &str,
        host: usize,
        join_host: Option<usize>,
        test_fault: Option<&str>,
    ) -> Result<Proc> {
        let mut c = self.cmd_in(&format!("h{host}"), &self.tools.ftvm);
        c.args(["backup", "--listen", &format!("10.78.0.{host}:7000")])
            .arg("--console")
            .arg(format!(
                "file:{}",
                self.dir.join(format!("console-{name}.txt")).display()
            ));
        if let Some(j) = join_host {
            c.args(["--join", &format!("10.78.0.{j}:7001")]);
        }
        self.machine_args(&mut c, host);
        if let Some(tf) = test_fault {
            c.args(["--test-fault", tf]);
        }
        self.start(name, host, c)
    }

    /// `tc ARGS` in a namespace.
    pub fn tc(&self, node: &str, args: &[&str]) -> Result<()> {
        self.run_in(node, "tc", args).map(|_| ())
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.netns(&["down", &self.prefix, "--kill"]) {
            eprintln!("ftvm-chaos: {e:#}");
        }
    }
}

/// What a host's status endpoint said, when.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub phase: String,
    pub generation: u64,
    pub icount: u64,
}

/// Phases in which a process lets the guest's outputs out on its own.
pub fn is_solo(phase: &str) -> bool {
    phase == "alone" || phase == "live"
}

/// Phases in which a process runs the guest.
pub fn is_active(phase: &str) -> bool {
    is_solo(phase) || phase == "paired"
}

#[derive(Default)]
struct Shared {
    latest: [Option<Sample>; 2],
    /// Moments two hosts both reported running the guest alone.
    split: Vec<String>,
}

/// The per-host status readers.
pub struct Monitor {
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Monitor {
    pub fn start(lab: &Lab) -> Result<Monitor> {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        let mut threads = Vec::new();
        for host in 1..=2usize {
            let path = PathBuf::from(format!("/run/netns/{}", lab.ns(&format!("h{host}"))));
            let ns =
                fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let (shared, stop) = (shared.clone(), stop.clone());
            threads.push(
                thread::Builder::new()
                    .name(format!("monitor-h{host}"))
                    .spawn(move || monitor(host, ns, shared, stop, start))
                    .context("cannot start a monitor thread")?,
            );
        }
        Ok(Monitor {
            shared,
            stop,
            threads,
        })
    }

    /// The latest fresh sample of `host` (1 or 2).
    pub fn phase(&self, host: usize) -> Option<Sample> {
        let s = self.shared.lock().ok()?;
        s.latest[host - 1]
            .clone()
            .filter(|s| s.at.elapsed() < FRESH)
    }

    pub fn split_brains(&self) -> Vec<String> {
        self.shared
            .lock()
            .map(|s| s.split.clone())
            .unwrap_or_default()
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn monitor(
    host: usize,
    ns: fs::File,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    start: Instant,
) {
    // SAFETY: setns(2) with a namespace file we opened; it changes only
    // this thread's network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        eprintln!(
            "ftvm-chaos: monitor h{host}: setns failed: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], STATUS_PORT));
    while !stop.load(Ordering::SeqCst) {
        let at = Instant::now();
        let sample = read_status(addr, at);
        if sample.is_none() {
            // Nobody answers (gone, or stopped): nothing known any more.
            if let Ok(mut sh) = shared.lock() {
                sh.latest[host - 1] = None;
            }
        }
        if let Some(s) = sample {
            if let Ok(mut sh) = shared.lock() {
                let other = &sh.latest[2 - host];
                if let Some(o) = other {
                    if is_solo(&s.phase) && is_solo(&o.phase) && o.at.elapsed() < FRESH {
                        let line = format!(
                            "at {} ms: h{host} {} (generation {}) while h{} {} (generation {})",
                            start.elapsed().as_millis(),
                            s.phase,
                            s.generation,
                            3 - host,
                            o.phase,
                            o.generation
                        );
                        sh.split.push(line);
                    }
                }
                sh.latest[host - 1] = Some(s);
            }
        }
        thread::sleep(MONITOR_EVERY.saturating_sub(at.elapsed()));
    }
}

fn read_status(addr: SocketAddr, at: Instant) -> Option<Sample> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(200))).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    let v: serde_json::Value = serde_json::from_str(body.trim()).ok()?;
    Some(Sample {
        at,
        phase: v["phase"].as_str()?.to_string(),
        generation: v["generation"].as_u64().unwrap_or(0),
        icount: v["icount"].as_u64().unwrap_or(0),
    })
}
