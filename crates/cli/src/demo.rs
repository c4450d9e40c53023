//! `ftvm demo`: a fault-tolerant redis on this one machine. It builds the
//! network lab of `scripts/netns.sh` (embedded in the binary) with two VM
//! hosts, starts `ftvm storage` (the VM's disk over NBD and the arbiter) in
//! the storage namespace, `ftvm backup` on host 2 and `ftvm primary` on host
//! 1, waits for redis in the guest, and tells the user how to reach it and
//! how to kill the primary. It watches the pair and reports a failover when
//! it happens. With `--auto` (the default when stdin is not a terminal) it
//! runs the demonstration itself: a client writes keys over one TCP
//! connection, the primary gets SIGKILL, and the demo shows the connection
//! carried on and every acknowledged write is there. Everything it created
//! is removed on exit, also on Ctrl-C. Every channel — NBD, the arbiter,
//! the logging and join channels — runs over mutual TLS 1.3 with
//! certificates the demo makes for itself (`ftvm certs init`'s code) in
//! `DIR/certs`: hosts h1 and h2 for vm0, the storage host, an operator for
//! the arbiter's history; `--insecure` runs it all on plain TCP instead.

use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use ftvm_node::driver::{install_signal_handlers, STOP_REQUESTED};
use ftvm_node::guest;

/// The lab script, so that the demo works from an installed binary too.
const NETNS_SH: &str = include_str!("../../../scripts/netns.sh");
const GUEST_IP: &str = "10.77.0.2";
const NBD: &str = "10.79.0.1:10809";
const ARBITER: &str = "10.79.0.1:10810";
const STATUS: &str = "127.0.0.1:7100";
/// Each VM process's Prometheus endpoint, on its namespace's loopback.
const METRICS: &str = "127.0.0.1:9464";
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// Host `h1` or `h2`'s logging address (`--listen`) and join address
/// (`--join-listen`).
fn log_addr(host: &str) -> String {
    format!("10.78.0.{}:7000", &host[1..])
}
fn join_addr(host: &str) -> String {
    format!("10.78.0.{}:7001", &host[1..])
}
fn other(host: &str) -> &'static str {
    if host == "h1" {
        "h2"
    } else {
        "h1"
    }
}

/// What every VM process of the demo is started with.
struct VmArgs {
    guest: PathBuf,
    dir: PathBuf,
    memory: String,
    /// The certificates' directory; `None` with `--insecure`.
    certs: Option<PathBuf>,
}

/// The TLS options of identity `who` (`storage`, `host-h1`,
/// `operator-demo`), or `--insecure`.
fn tls_args(certs: Option<&Path>, who: &str) -> Vec<String> {
    let Some(d) = certs else {
        return vec!["--insecure".into()];
    };
    let kind = if who == "storage" { "server" } else { "client" };
    let f = |name: String| d.join(who).join(name).display().to_string();
    vec![
        "--tls-cert".into(),
        f(format!("{kind}-cert.pem")),
        "--tls-key".into(),
        f(format!("{kind}-key.pem")),
        "--tls-ca".into(),
        d.join(ftvm_tls::lab::CA_CERT).display().to_string(),
    ]
}

impl VmArgs {
    /// `ftvm primary|backup ...` for a process on `host`; a backup with
    /// `join` joins the process running the guest there.
    fn for_process(&self, role: &str, host: &str, join: Option<&str>) -> Vec<String> {
        let g = &self.guest;
        let mut v: Vec<String> = vec![
            role.into(),
            "--vm".into(),
            "vm0".into(),
            "--arbiter".into(),
            ARBITER.into(),
            "--status".into(),
            STATUS.into(),
            "--metrics".into(),
            METRICS.into(),
            "--join-listen".into(),
            join_addr(host),
            "--console".into(),
            format!(
                "file:{}",
                self.dir.join(format!("console-{host}.txt")).display()
            ),
            "--no-input".into(),
            "--bios".into(),
            g.join("fw_jump.bin").display().to_string(),
            "--kernel".into(),
            g.join("Image").display().to_string(),
            "--initrd".into(),
            g.join("initrd.cpio.gz").display().to_string(),
            "--memory".into(),
            self.memory.clone(),
            "--drive".into(),
            format!("nbd://{NBD}/vm0"),
            "--net".into(),
            "tap:tap0".into(),
        ];
        v.extend(tls_args(self.certs.as_deref(), &format!("host-{host}")));
        if role == "backup" {
            v.extend(["--listen".into(), log_addr(host)]);
            if let Some(j) = join {
                v.extend(["--join".into(), j.to_string()]);
            }
        } else {
            v.extend([
                "--backup".into(),
                log_addr(other(host)),
                "--append".into(),
                format!("console=ttyS0 quiet ftvm.ip={GUEST_IP}/24 ftvm.redis"),
            ]);
        }
        v
    }
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Prefix of the network namespaces the demo creates (PREFIX-h1, -h2, -c, -st, -sw).
    #[arg(long, default_value = "ftdemo")]
    pub prefix: String,
    /// Directory for the disk image, logs and consoles (default /tmp/ftvm-demo-PREFIX).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run the demonstration unattended (client load, SIGKILL of the
    /// primary, checks) and exit; the default when stdin is not a terminal.
    #[arg(long)]
    pub auto: bool,
    /// Stay up for interactive use even when stdin is not a terminal.
    #[arg(long, conflicts_with = "auto")]
    pub interactive: bool,
    /// Guest RAM.
    #[arg(long, short = 'm', default_value = "256M")]
    pub memory: String,
    /// Run every channel on plain TCP instead of TLS (the demo otherwise
    /// makes its own certificates in DIR/certs).
    #[arg(long)]
    pub insecure: bool,
    /// Serve the live dashboard (`ftvm dashboard`) of the pair here, in
    /// this namespace; "off" for none.
    #[arg(long, value_name = "HOST:PORT|off", default_value = "127.0.0.1:8080")]
    pub dashboard: String,
}

/// The lab and every process the demo started; all gone on drop.
struct Lab {
    prefix: String,
    dir: PathBuf,
    procs: Vec<(String, Child)>,
}

impl Lab {
    fn netns(&self, args: &[&str]) -> Result<std::process::Output> {
        let mut child = Command::new("bash")
            .args(["-s", "--"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run bash for the network lab")?;
        if let Some(mut w) = child.stdin.take() {
            w.write_all(NETNS_SH.as_bytes())
                .context("cannot feed the lab script to bash")?;
        }
        child
            .wait_with_output()
            .context("cannot run the network lab script")
    }

    fn ns(&self, node: &str) -> String {
        format!("{}-{node}", self.prefix)
    }

    /// `ip netns exec PREFIX-node exe args...`, output to `log` in the dir.
    fn spawn(
        &mut self,
        name: &str,
        node: &str,
        exe: &Path,
        args: &[String],
        log: &str,
    ) -> Result<u32> {
        let out = fs::File::create(self.dir.join(log))
            .with_context(|| format!("cannot create {}", self.dir.join(log).display()))?;
        let err = out.try_clone()?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        let pid = child.id();
        self.procs.push((name.to_string(), child));
        Ok(pid)
    }

    fn output_in(&self, node: &str, exe: &Path, args: &[&str]) -> Option<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.ns(node)])
            .arg(exe)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn proc_mut(&mut self, name: &str) -> Option<&mut Child> {
        self.procs
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    fn phase(&self, exe: &Path, node: &str) -> Option<String> {
        let json = self.output_in(node, exe, &["status", "--json", STATUS])?;
        let v: serde_json::Value = serde_json::from_str(&json).ok()?;
        v["phase"].as_str().map(str::to_string)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (_, c) in self.procs.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        match self.netns(&["down", &self.prefix, "--kill"]) {
            Ok(o) if o.status.success() => {
                eprintln!("ftvm demo: removed the network lab {}-*", self.prefix)
            }
            _ => eprintln!(
                "ftvm demo: could not remove the network lab; run `scripts/netns.sh down {} --kill`",
                self.prefix
            ),
        }
    }
}

/// Starts the dashboard of the pair in this process (its pollers enter the
/// hosts' namespaces); returns its URL. A dashboard that cannot start is
/// a warning, not the end of the demo.
fn start_dashboard(args: &DemoArgs) -> Option<String> {
    if args.dashboard == "off" {
        return None;
    }
    let p = &args.prefix;
    let start = || -> Result<String> {
        let listen = args
            .dashboard
            .parse()
            .with_context(|| format!("--dashboard {:?} is not HOST:PORT", args.dashboard))?;
        let targets = ["h1", "h2"]
            .iter()
            .map(|h| format!("{h}=netns:{p}-{h}/{STATUS}").parse())
            .collect::<Result<Vec<ftvm_dashboard::Target>, _>>()?;
        let d = ftvm_dashboard::start(listen, vec![targets])?;
        Ok(format!("http://{}/", d.addr))
    };
    match start() {
        Ok(url) => Some(url),
        Err(e) => {
            eprintln!("ftvm demo: no dashboard: {e:#}");
            None
        }
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub fn demo(args: DemoArgs) -> Result<u8> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("ftvm demo needs root: it creates network namespaces and TAP devices (try sudo, or scripts/rootless.sh to run it in a user namespace of your own)");
    }
    if !args.prefix.chars().all(|c| c.is_ascii_alphanumeric()) || args.prefix.len() > 12 {
        bail!("--prefix must be 1 to 12 letters or digits");
    }
    let auto = args.auto || (!args.interactive && !std::io::stdin().is_terminal());
    let exe = std::env::current_exe().context("cannot find the ftvm binary")?;
    let loadgen = exe.with_file_name("ftvm-loadgen");
    if auto && !loadgen.exists() {
        bail!(
            "{} is missing; build it with `cargo build --release -p ftvm-loadgen`",
            loadgen.display()
        );
    }
    let gdir = guest::default_dir()?;
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("ftvm-demo-{}", args.prefix)));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(dir.join("storage"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    install_signal_handlers();

    let mut lab = Lab {
        prefix: args.prefix.clone(),
        dir: dir.clone(),
        procs: Vec::new(),
    };
    eprintln!(
        "ftvm demo: building the network lab {}-* (2 VM hosts, client, storage)",
        args.prefix
    );
    let _ = lab.netns(&["down", &args.prefix, "--kill"]);
    let up = lab.netns(&["up", &args.prefix, "2"])?;
    if !up.status.success() {
        bail!(
            "the network lab could not be built: {}",
            String::from_utf8_lossy(&up.stderr).trim()
        );
    }

    let certs = if args.insecure {
        None
    } else {
        let d = dir.join("certs");
        let plan = ftvm_tls::lab::LabPlan {
            hosts: vec![
                ("h1".into(), vec!["vm0".into()]),
                ("h2".into(), vec!["vm0".into()]),
            ],
            operators: vec!["demo".into()],
            storage: "storage".into(),
            server_names: vec!["10.79.0.1".into(), "localhost".into()],
            days: 2,
        };
        ftvm_tls::lab::init(&d, &plan).context("cannot make the demo's certificates")?;
        eprintln!(
            "ftvm demo: every channel over TLS 1.3, certificates in {}",
            d.display()
        );
        Some(d)
    };
    let mut storage_args: Vec<String> = vec!["storage".into()];
    storage_args.extend(tls_args(certs.as_deref(), "storage"));
    storage_args.extend(
        [
            "--dir",
            &dir.join("storage").display().to_string(),
            "--nbd-listen",
            NBD,
            "--arbiter-listen",
            ARBITER,
            "--create",
            "vm0=256M",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    lab.spawn("storage", "st", &exe, &storage_args, "storage.log")?;
    let operator = tls_args(certs.as_deref(), "operator-demo");
    let arbiter_args = |op: &str| -> Vec<String> {
        let mut a = vec!["arbiter".to_string()];
        a.extend(operator.iter().cloned());
        a.extend(["--arbiter", ARBITER, op, "vm0"].map(String::from));
        a
    };
    let query = arbiter_args("query");
    let query: Vec<&str> = query.iter().map(String::as_str).collect();
    let t = Instant::now();
    while lab.output_in("h1", &exe, &query).is_none() {
        if t.elapsed() > Duration::from_secs(20) {
            bail!(
                "ftvm storage did not come up:\n{}",
                tail(&dir.join("storage.log"), 20)
            );
        }
        sleep(Duration::from_millis(100));
    }

    let vm_args = VmArgs {
        guest: gdir.clone(),
        dir: dir.clone(),
        memory: args.memory.clone(),
        certs: certs.clone(),
    };
    let backup_pid = lab.spawn(
        "backup",
        "h2",
        &exe,
        &vm_args.for_process("backup", "h2", None),
        "h2.log",
    )?;
    let primary_pid = lab.spawn(
        "primary",
        "h1",
        &exe,
        &vm_args.for_process("primary", "h1", None),
        "h1.log",
    )?;
    eprintln!("ftvm demo: primary (pid {primary_pid}) on {}-h1, backup (pid {backup_pid}) on {}-h2; booting the guest...", args.prefix, args.prefix);
    let dashboard = start_dashboard(&args);

    let t = Instant::now();
    loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            return Ok(130);
        }
        if fs::read_to_string(dir.join("console-h1.txt"))
            .unwrap_or_default()
            .contains("redis ready")
        {
            break;
        }
        if let Some(c) = lab.proc_mut("primary") {
            if let Ok(Some(st)) = c.try_wait() {
                bail!(
                    "the primary exited ({st}):\n{}",
                    tail(&dir.join("h1.log"), 20)
                );
            }
        }
        if t.elapsed() > BOOT_TIMEOUT {
            bail!(
                "the guest did not start redis in time:\n{}",
                tail(&dir.join("console-h1.txt"), 20)
            );
        }
        sleep(Duration::from_millis(200));
    }
    let exe_s = exe.display().to_string();
    let p = &args.prefix;
    println!();
    println!(
        "ftvm demo: a fault-tolerant redis is running (booted in {:.1} s).",
        t.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "  The guest is {GUEST_IP}; redis listens on 6379. Reach it from the client namespace:"
    );
    println!("      ip netns exec {p}-c redis-cli -h {GUEST_IP}");
    println!("      ip netns exec {p}-c redis-benchmark -h {GUEST_IP} -t set,get -n 20000");
    println!();
    println!("  Kill the primary (host {p}-h1) and watch the backup (host {p}-h2) take over:");
    println!("      kill -9 {primary_pid}");
    println!();
    println!("  Status of each side, and the arbiter's record:");
    println!("      ip netns exec {p}-h1 {exe_s} status {STATUS}");
    println!("      ip netns exec {p}-h2 {exe_s} status {STATUS}");
    println!(
        "      ip netns exec {p}-h1 {exe_s} {}",
        arbiter_args("history").join(" ")
    );
    println!("  Prometheus metrics of each side (docs/operations.md lists them):");
    println!("      ip netns exec {p}-h1 curl -s http://{METRICS}/metrics");
    println!();
    if let Some(url) = &dashboard {
        println!("  The live dashboard (roles, lag, log bandwidth, hold time, failovers):");
        println!("      {url}");
        println!();
    }
    if std::env::var_os("FTVM_ROOTLESS").is_some() {
        // scripts/rootless.sh: the namespaces live in a user namespace
        // of this user's; another terminal enters it first.
        println!("  Rootless: the lab lives in this demo's user namespace; from another terminal");
        println!(
            "  enter it first: nsenter --preserve-credentials -U -m -n -t {}",
            std::process::id()
        );
        println!();
    }
    println!("  Consoles and logs: {}", dir.display());
    if auto {
        println!();
        return run_auto(&mut lab, &exe, &loadgen, &vm_args);
    }
    println!("  After a failover the demo starts a replacement backup that joins the survivor.");
    println!("  Press Ctrl-C to stop the demo and remove everything.");
    watch(&mut lab, &exe, &vm_args)
}

/// Starts a new backup on `host` that joins the process running the guest
/// on the other host, and waits until the pair is formed.
fn replace_backup(lab: &mut Lab, exe: &Path, vm: &VmArgs, host: &str, n: u32) -> Result<()> {
    let args = vm.for_process("backup", host, Some(&join_addr(other(host))));
    let name = format!("backup-{host}-{n}");
    let pid = lab.spawn(&name, host, exe, &args, &format!("{name}.log"))?;
    println!("ftvm demo: starting a replacement backup (pid {pid}) on {}-{host}; it joins the running guest", lab.prefix);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(120) {
        if lab.phase(exe, host).as_deref() == Some("following")
            && lab.phase(exe, other(host)).as_deref() == Some("paired")
        {
            println!(
                "ftvm demo: protected again ({:.1} s after the replacement started)",
                t.elapsed().as_secs_f64()
            );
            return Ok(());
        }
        sleep(Duration::from_millis(100));
    }
    bail!(
        "the replacement backup did not join:\n{}",
        tail(&lab.dir.join(format!("{name}.log")), 20)
    )
}

/// Reports the pair's fate until Ctrl-C, starting a replacement backup
/// after every failover.
fn watch(lab: &mut Lab, exe: &Path, vm: &VmArgs) -> Result<u8> {
    // The process on each host.
    let mut on_host: Vec<(&str, String)> = vec![("h1", "primary".into()), ("h2", "backup".into())];
    let mut n = 0;
    loop {
        if STOP_REQUESTED.load(Ordering::SeqCst) {
            println!("\nftvm demo: stopping");
            return Ok(0);
        }
        for k in 0..on_host.len() {
            let (host, name) = (on_host[k].0, on_host[k].1.clone());
            let exited = lab
                .proc_mut(&name)
                .and_then(|c| c.try_wait().ok().flatten());
            let Some(st) = exited else { continue };
            println!(
                "ftvm demo: the process on {}-{host} exited ({st})",
                lab.prefix
            );
            let t = Instant::now();
            let mut solo = false;
            while t.elapsed() < Duration::from_secs(30) {
                match lab.phase(exe, other(host)).as_deref() {
                    Some(ph @ ("live" | "alone")) => {
                        println!(
                            "ftvm demo: the other side is {ph} ({:.0} ms after we noticed); the guest carries on",
                            t.elapsed().as_secs_f64() * 1e3
                        );
                        solo = true;
                        break;
                    }
                    _ => sleep(Duration::from_millis(50)),
                }
            }
            if !solo {
                println!(
                    "ftvm demo: nobody took over; see the logs in {}",
                    lab.dir.display()
                );
                return Ok(1);
            }
            n += 1;
            replace_backup(lab, exe, vm, host, n)?;
            on_host[k].1 = format!("backup-{host}-{n}");
            let survivor = on_host[1 - k].1.clone();
            if let Some(pid) = lab.proc_mut(&survivor).map(|c| c.id()) {
                println!(
                    "ftvm demo: the guest now runs on {}-{}: `kill -9 {pid}` to go round again",
                    lab.prefix,
                    other(host)
                );
            }
        }
        sleep(Duration::from_millis(250));
    }
}

/// The unattended demonstration.
fn run_auto(lab: &mut Lab, exe: &Path, loadgen: &Path, vm: &VmArgs) -> Result<u8> {
    let dir = lab.dir.clone();
    println!("ftvm demo --auto: a client writes unique keys over ONE TCP connection for 10 s;");
    println!("                  the primary gets SIGKILL after 4 s.");
    let acked = dir.join("acked.txt");
    let report = dir.join("client.json");
    let client_args: Vec<String> = [
        "write",
        "--addr",
        &format!("{GUEST_IP}:6379"),
        "--prefix",
        "demo",
        "--duration",
        "10",
        "--acked-file",
        &acked.display().to_string(),
        "--report",
        &report.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    lab.spawn("client", "c", loadgen, &client_args, "client.log")?;
    sleep(Duration::from_secs(4));
    if let Some(c) = lab.proc_mut("primary") {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("ftvm demo --auto: SIGKILL sent to the primary");
    let t = Instant::now();
    let mut live = false;
    while t.elapsed() < Duration::from_secs(30) {
        if lab.phase(exe, "h2").as_deref() == Some("live") {
            println!(
                "ftvm demo --auto: the backup is live ({:.0} ms after the kill)",
                t.elapsed().as_secs_f64() * 1e3
            );
            live = true;
            break;
        }
        sleep(Duration::from_millis(50));
    }
    if !live {
        println!(
            "ftvm demo --auto: the backup did not go live:\n{}",
            tail(&dir.join("h2.log"), 20)
        );
        return Ok(1);
    }
    let client_ok = match lab.proc_mut("client") {
        Some(c) => c.wait().map(|s| s.success()).unwrap_or(false),
        None => false,
    };
    let r: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&report).unwrap_or_default()).unwrap_or_default();
    println!(
        "ftvm demo --auto: client: {} writes acknowledged, connection {} (local port {}), longest pause {} ms",
        r["ops_acked"],
        if r["connection_broken"] == false && client_ok { "never broke" } else { "BROKE" },
        r["local_port"],
        r["max_gap_ms"]
    );
    let verify = lab.output_in(
        "c",
        loadgen,
        &[
            "verify",
            "--addr",
            &format!("{GUEST_IP}:6379"),
            "--prefix",
            "demo",
            "--acked-file",
            &acked.display().to_string(),
        ],
    );
    println!(
        "ftvm demo --auto: every acknowledged write readable from the new primary: {}",
        if verify.is_some() { "yes" } else { "NO" }
    );
    let mut history_args = vec!["arbiter".to_string()];
    history_args.extend(tls_args(vm.certs.as_deref(), "operator-demo"));
    history_args.extend(["--arbiter", ARBITER, "history", "vm0"].map(String::from));
    let history_args: Vec<&str> = history_args.iter().map(String::as_str).collect();
    let history = lab.output_in("h2", exe, &history_args).unwrap_or_default();
    println!("ftvm demo --auto: the arbiter's record (generation, winner, time):");
    for l in history.lines() {
        println!("      {l}");
    }
    if let Err(e) = replace_backup(lab, exe, vm, "h1", 1) {
        println!("ftvm demo --auto: {e:#}");
        return Ok(1);
    }
    let ok = client_ok
        && r["connection_broken"] == false
        && verify.is_some()
        && history.lines().count() == 1;
    println!(
        "ftvm demo --auto: {}",
        if ok {
            "failover was transparent to the client"
        } else {
            "FAILED (see the logs above)"
        }
    );
    Ok(if ok { 0 } else { 1 })
}
