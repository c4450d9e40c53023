//! End-to-end tests of a fault-tolerant pair: real `ftvm storage` (NBD disk
//! and arbiter) in the storage namespace, `ftvm primary` on host 1 and
//! `ftvm backup` on host 2 of the `scripts/netns.sh` lab, each with its own
//! TAP device on the guest network, the guest's redis serving a client in
//! its own namespace (`ftvm-loadgen`: one TCP connection, unique keys, every
//! acknowledged key recorded), and real SIGKILLs.
//!
//! - `primary_killed_*`: SIGKILL the primary at different moments of the
//!   load (every SET is a disk write: redis runs with `appendfsync always`;
//!   one variant adds a bulk writer inside the guest). The client's single
//!   connection must carry on, every acknowledged key must be readable
//!   afterwards, and the arbiter must record exactly one win: the backup's.
//!   Every process serves `--metrics`; these tests scrape them: while
//!   paired the roles, a non-zero lag, held outputs and their hold times,
//!   log traffic, disk and network I/O and digest checks show; after the
//!   kill the survivor counts one failover and is live, and the storage
//!   server counts one test-and-set won.
//! - `backup_killed_primary_goes_on_alone`: the primary wins the arbiter.
//! - `cut_logging_link_leaves_exactly_one`: the logging link is cut while
//!   both run: one halts (exit 4), the other serves.
//! - `backup_without_arbiter_never_goes_live`: the backup's link to the
//!   storage host is cut, then the primary killed: the backup halts after
//!   the arbiter deadline and nobody serves the guest.
//! - `outputs_wait_for_the_backup`: garbage sent to the logging port is
//!   refused and the pair stays paired; then, with the backup frozen
//!   (SIGSTOP), the guest's reply does not reach the client; it does once
//!   the backup runs again — the output rule seen from the wire.
//! - `pair_runs_on_qemu_nbd`: the disk served by `qemu-nbd` (with TLS) instead.
//! - `wrong_peers_are_refused_and_the_pair_serves_under_attack`: backups
//!   with the wrong certificate (an operator's, another VM's host, another
//!   CA's) cannot join; TLS clients with such certificates, a replayed
//!   handshake, garbage instead of or after a handshake are refused on the
//!   logging, join, NBD and arbiter ports, one log line each; then a loop of
//!   such attackers runs during a redis load: every acknowledged write reads
//!   back, no failover, nothing at the arbiter.
//! - `a_backup_from_another_ca_cannot_follow`: the primary dials a backup
//!   whose certificate is from another CA; both refuse, nobody pairs and
//!   nothing reaches the arbiter.
//! - `five_rounds_of_failover_and_rejoin`: kill the process running the
//!   guest, the other goes live, a new backup joins it (`--join`) on the
//!   host that died; five times, under one client connection's load, every
//!   acknowledged write present at the end, one arbiter win per round.
//! - `interrupted_joins_leave_a_working_primary`: joiners killed during the
//!   pre-copy, at the pause (a test switch makes the joiner kill itself the
//!   moment the state arrives) and right after joining; the primary runs
//!   on each time, and a later join succeeds and fails over.
//!
//! Every channel runs over TLS (certificates from `ftvm certs init` in the
//! test's scratch dir: hosts h1 and h2 for vm0, an operator for the
//! arbiter's history; qemu-nbd gets the storage certificate); a test that
//! passes `--insecure` in its extra options runs on plain TCP instead.
//!
//! They need root, `/dev/net/tun`, `redis-cli` and the guest image; without
//! them they print a note and pass. Pairs boot one at a time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

mod common;

use common::lab::*;
use common::{guest_dir, loadgen};

const NBD: &str = "10.79.0.1:10809";
const ARBITER: &str = "10.79.0.1:10810";
const LOG_ADDR: &str = "10.78.0.2:7000";
const STATUS: &str = "127.0.0.1:7100";
/// Every process's `--metrics`, on the loopback of its own namespace.
const METRICS: &str = "127.0.0.1:9464";
const REDIS: &str = "10.77.0.2:6379";

/// How the disk is served.
#[derive(Clone, Copy, PartialEq)]
enum DiskServer {
    Ftvm,
    QemuNbd,
    /// Non-shared disks: each host its own image file (`--local-disks`).
    Local,
}

struct Pair {
    net: TestNet,
    dir: Scratch,
    /// `--drive` argument value, failure timeout and extra options of every
    /// ftvm process of the pair.
    drive: String,
    /// Non-shared disks: `disk-hI.img` in the scratch dir for host I.
    local: bool,
    /// `--failure-timeout-ms`; `None`: ftvm's default.
    failure_timeout_ms: Option<u64>,
    extra: Vec<String>,
    /// The `ftvm certs init` directory; `None` with `--insecure`.
    certs: Option<PathBuf>,
    storage: Child,
    qemu_nbd: Option<Child>,
    primary: Option<Child>,
    backup: Option<Child>,
    /// `--arbiter` of every process: `ftvm storage`'s, or an etcd cluster's.
    arbiter: String,
    /// The etcd members when the pair's arbiter is etcd.
    etcd: Option<ftvm_etcd::local::LocalCluster>,
}

fn in_ns(ns: &str, exe: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(exe);
    c
}

fn ftvm_in(ns: &str) -> Command {
    in_ns(ns, Path::new(env!("CARGO_BIN_EXE_ftvm")))
}

/// The TLS options of identity `who` (`storage`, `host-h1`, `operator-test`)
/// from `certs`, or `--insecure`.
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
        d.join("ca-cert.pem").display().to_string(),
    ]
}

/// `ftvm certs init` for a pair of vm0 on hosts h1 and h2.
fn make_certs(dir: &Scratch) -> PathBuf {
    let d = dir.path("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .arg("certs")
        .arg("init")
        .arg(&d)
        .args(["--hosts", "h1,h2,h3", "--vms", "vm0", "--operator", "test"])
        .args(["--host", "h4=vm1"])
        .args(["--server-name", "10.79.0.1"])
        .output()
        .expect("ftvm certs init");
    assert!(
        out.status.success(),
        "ftvm certs init: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d
}

fn log_file(dir: &Scratch, name: &str) -> Stdio {
    Stdio::from(fs::File::create(dir.path(name)).expect("create log file"))
}

impl Pair {
    /// Storage, backup and primary up; returns once redis answers.
    fn start(
        index: u32,
        disk: DiskServer,
        append_extra: &str,
        failure_timeout_ms: Option<u64>,
    ) -> Pair {
        Pair::start_with(index, disk, append_extra, failure_timeout_ms, &[])
    }

    /// Like `start`, with `extra` options for both sides.
    fn start_with(
        index: u32,
        disk: DiskServer,
        append_extra: &str,
        failure_timeout_ms: Option<u64>,
        extra: &[&str],
    ) -> Pair {
        Pair::start_full(index, disk, append_extra, failure_timeout_ms, extra, false)
    }

    /// Like `start_with`; with `etcd`, the arbiter is a 3-member etcd
    /// cluster in the storage namespace instead of `ftvm storage`'s.
    fn start_full(
        index: u32,
        disk: DiskServer,
        append_extra: &str,
        failure_timeout_ms: Option<u64>,
        extra: &[&str],
        etcd: bool,
    ) -> Pair {
        let net = TestNet::up_with_hosts(index, 2);
        let dir = Scratch::new(&format!("ft{index}"));
        let st_dir = dir.path("storage");
        fs::create_dir_all(&st_dir).expect("storage dir");
        let nbd = match disk {
            DiskServer::Ftvm => NBD.to_string(),
            DiskServer::QemuNbd | DiskServer::Local => "10.79.0.1:10811".to_string(),
        };
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if disk == DiskServer::Local {
            for h in ["h1", "h2"] {
                fs::File::create(dir.path(&format!("disk-{h}.img")))
                    .and_then(|f| f.set_len(64 << 20))
                    .expect("create a local disk");
            }
            extra.push("--local-disks".into());
        }
        let certs = if extra.iter().any(|e| e == "--insecure") {
            None
        } else {
            Some(make_certs(&dir))
        };
        let storage = ftvm_in(&net.ns("st"))
            .arg("storage")
            .args(tls_args(certs.as_deref(), "storage"))
            .arg("--dir")
            .arg(&st_dir)
            .args([
                "--nbd-listen",
                NBD,
                "--arbiter-listen",
                ARBITER,
                "--metrics",
                METRICS,
                "--create",
                "vm0=64M",
            ])
            .stdout(log_file(&dir, "storage.out"))
            .stderr(log_file(&dir, "storage.log"))
            .spawn()
            .expect("start ftvm storage");
        let mut qemu_nbd = None;
        if disk == DiskServer::QemuNbd {
            let img = dir.path("qemu-disk.img");
            fs::File::create(&img)
                .and_then(|f| f.set_len(64 << 20))
                .expect("create disk");
            qemu_nbd = Some(
                Command::new("ip")
                    .args([
                        "netns",
                        "exec",
                        &net.ns("st"),
                        "qemu-nbd",
                        "-f",
                        "raw",
                        "-x",
                        "vm0",
                    ])
                    .args([
                        "-b",
                        "10.79.0.1",
                        "-p",
                        "10811",
                        "-t",
                        "--shared=8",
                        "--cache=none",
                    ])
                    .args(certs.iter().flat_map(|c| {
                        [
                            "--object".to_string(),
                            format!(
                                "tls-creds-x509,id=tls0,endpoint=server,dir={}",
                                c.join("storage").display()
                            ),
                            "--tls-creds".to_string(),
                            "tls0".to_string(),
                        ]
                    }))
                    .arg(&img)
                    .stdout(log_file(&dir, "qemu-nbd.out"))
                    .stderr(log_file(&dir, "qemu-nbd.log"))
                    .spawn()
                    .expect("start qemu-nbd"),
            );
        }
        let (arbiter, etcd) = if etcd {
            let specs = (0..3u16)
                .map(|i| ftvm_etcd::local::MemberSpec {
                    ip: "10.79.0.1".into(),
                    client_port: 2379 + 2 * i,
                    peer_port: 2380 + 2 * i,
                    netns: Some(net.ns("st")),
                })
                .collect();
            let cluster = ftvm_etcd::local::LocalCluster::start(dir.path("etcd"), specs)
                .expect("start 3 etcd members in the storage namespace");
            (cluster.target(&[0, 1, 2], "ftvm-test"), Some(cluster))
        } else {
            (ARBITER.to_string(), None)
        };
        let mut pair = Pair {
            arbiter,
            etcd,
            net,
            dir,
            drive: format!("nbd://{nbd}/vm0"),
            local: disk == DiskServer::Local,
            failure_timeout_ms,
            extra,
            certs,
            storage,
            qemu_nbd,
            primary: None,
            backup: None,
        };
        pair.wait_storage();
        if pair.qemu_nbd.is_some() {
            // qemu-nbd loads its TLS credentials before it listens.
            let t = Instant::now();
            while !Command::new("ip")
                .args(["netns", "exec", &pair.net.ns("st"), "bash", "-c"])
                .arg("exec 3<>/dev/tcp/10.79.0.1/10811")
                .status()
                .is_ok_and(|s| s.success())
            {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "qemu-nbd never listened"
                );
                sleep(Duration::from_millis(100));
            }
        }
        pair.backup = Some(pair.spawn_backup("h2", "backup", None));
        let mut p = ftvm_in(&pair.net.ns("h1"));
        // A digest every 5·10⁷ steps (a few a second): every test also
        // checks that the backup's state equals the primary's, and that
        // digests do not stall a side into a false failover.
        p.args([
            "primary",
            "--backup",
            LOG_ADDR,
            "--digest-interval",
            "50000000",
            "--console",
        ])
        .arg(format!(
            "file:{}",
            pair.dir.path("console-primary.txt").display()
        ))
        .args([
            "--append",
            &format!("console=ttyS0 ftvm.ip=10.77.0.2/24 ftvm.redis {append_extra}"),
        ]);
        pair.machine_args(&mut p, "h1");
        pair.primary = Some(
            p.stdout(Stdio::null())
                .stderr(log_file(&pair.dir, "primary.log"))
                .spawn()
                .expect("start the primary"),
        );
        pair.ping(Duration::from_secs(300));
        pair.wait_phase("h2", "following", Duration::from_secs(30));
        pair
    }

    fn drive_for(&self, host: &str) -> String {
        if self.local {
            format!(
                "file={}",
                self.dir.path(&format!("disk-{host}.img")).display()
            )
        } else {
            self.drive.clone()
        }
    }

    /// The options every ftvm process of the pair on `host` gets.
    fn machine_args(&self, c: &mut Command, host: &str) {
        let g = guest_dir();
        let i = &host[1..];
        c.arg("--bios")
            .arg(g.join("fw_jump.bin"))
            .arg("--kernel")
            .arg(g.join("Image"))
            .arg("--initrd")
            .arg(g.join("initrd.cpio.gz"))
            .args(["--drive", &self.drive_for(host), "--net", "tap:tap0"])
            .args([
                "--vm",
                "vm0",
                "--arbiter",
                &self.arbiter,
                "--status",
                STATUS,
                "--metrics",
                METRICS,
            ])
            .args(["--join-listen", &format!("10.78.0.{i}:7001")])
            .args(
                self.failure_timeout_ms
                    .map(|t| ["--failure-timeout-ms".to_string(), t.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra)
            .arg("--no-input");
        if self.certs.is_some() {
            c.args(tls_args(self.certs.as_deref(), &format!("host-{host}")));
        }
    }

    /// `ftvm arbiter ARGS` as the operator (or `--insecure`).
    fn arbiter_cmd(&self, args: &[&str]) -> Command {
        let mut c = ftvm_in(&self.net.ns("h1"));
        c.arg("arbiter")
            .args(tls_args(self.certs.as_deref(), "operator-test"))
            .args(["--arbiter", &self.arbiter])
            .args(args);
        c
    }

    /// Starts `ftvm backup` on `host` (listening on its logging address),
    /// joining the primary at `join` if given; logs to `NAME.log`.
    fn spawn_backup(&self, host: &str, name: &str, join: Option<&str>) -> Child {
        self.spawn_backup_with(host, name, join, &[])
    }

    fn spawn_backup_with(
        &self,
        host: &str,
        name: &str,
        join: Option<&str>,
        more: &[&str],
    ) -> Child {
        let mut b = ftvm_in(&self.net.ns(host));
        b.args([
            "backup",
            "--listen",
            &format!("10.78.0.{}:7000", &host[1..]),
        ])
        .arg("--console")
        .arg(format!(
            "file:{}",
            self.dir.path(&format!("console-{name}.txt")).display()
        ));
        if let Some(j) = join {
            b.args(["--join", j]);
        }
        self.machine_args(&mut b, host);
        b.args(more);
        b.stdout(Stdio::null())
            .stderr(log_file(&self.dir, &format!("{name}.log")))
            .spawn()
            .expect("start a backup")
    }

    fn wait_storage(&mut self) {
        let t = Instant::now();
        loop {
            let out = self
                .arbiter_cmd(&["query", "vm0"])
                .output()
                .expect("ftvm arbiter");
            if out.status.success() {
                return;
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "ftvm storage did not come up: {}",
                self.dump()
            );
            sleep(Duration::from_millis(100));
        }
    }

    /// Everything a failing test should show.
    fn dump(&self) -> String {
        let mut s = String::new();
        for f in [
            "primary.log",
            "backup.log",
            "storage.log",
            "console-primary.txt",
            "console-backup.txt",
        ] {
            let text = fs::read_to_string(self.dir.path(f)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            s += &format!("\n--- {f} (last lines) ---\n");
            for l in tail.iter().rev() {
                s += l;
                s += "\n";
            }
        }
        s
    }

    fn ping(&self, timeout: Duration) {
        let ok = in_ns(&self.net.ns("c"), &loadgen())
            .args(["ping", "--addr", REDIS, "--timeout-ms"])
            .arg(timeout.as_millis().to_string())
            .status()
            .expect("ftvm-loadgen ping");
        assert!(ok.success(), "redis never answered: {}", self.dump());
    }

    fn status(&self, host: &str) -> Option<serde_json::Value> {
        let out = ftvm_in(&self.net.ns(host))
            .args(["status", "--json", STATUS])
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// Waits until `host`'s status report satisfies `ok`.
    fn wait_status(&self, host: &str, timeout: Duration, ok: impl Fn(&serde_json::Value) -> bool) {
        let t = Instant::now();
        loop {
            if self.status(host).is_some_and(|s| ok(&s)) {
                return;
            }
            assert!(
                t.elapsed() < timeout,
                "{host}'s status never got there: {:?}{}",
                self.status(host),
                self.dump()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn wait_phase(&self, host: &str, phase: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        loop {
            if let Some(s) = self.status(host) {
                if s["phase"] == phase {
                    return t.elapsed();
                }
            }
            assert!(
                t.elapsed() < timeout,
                "{host} never reached phase {phase}: {:?}{}",
                self.status(host),
                self.dump()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn kill(child: &mut Option<Child>) {
        if let Some(c) = child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn wait_exit(child: &mut Option<Child>, timeout: Duration) -> Option<ExitStatus> {
        let c = child.as_mut()?;
        let t = Instant::now();
        while t.elapsed() < timeout {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            sleep(Duration::from_millis(50));
        }
        None
    }

    /// The arbiter's wins for vm0, one per line.
    fn arbiter_history(&self) -> Vec<String> {
        let out = self
            .arbiter_cmd(&["history", "vm0"])
            .output()
            .expect("ftvm arbiter history");
        assert!(out.status.success(), "arbiter history failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Starts a loadgen writer for `secs` seconds.
    fn start_load(&self, tag: &str, secs: u32) -> Child {
        in_ns(&self.net.ns("c"), &loadgen())
            .args(["write", "--addr", REDIS, "--prefix", tag, "--duration"])
            .arg(secs.to_string())
            .arg("--acked-file")
            .arg(self.dir.path(&format!("{tag}.acked")))
            .arg("--report")
            .arg(self.dir.path(&format!("{tag}.json")))
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, &format!("{tag}.log")))
            .spawn()
            .expect("start ftvm-loadgen")
    }

    /// Waits for the writer; checks its connection never broke and every
    /// acknowledged key reads back. Returns the report.
    fn finish_load(&self, tag: &str, mut load: Child) -> serde_json::Value {
        let st = load.wait().expect("wait for ftvm-loadgen");
        let report: serde_json::Value = serde_json::from_str(
            &fs::read_to_string(self.dir.path(&format!("{tag}.json"))).unwrap_or_default(),
        )
        .unwrap_or_default();
        assert!(
            st.success() && report["connection_broken"] == false,
            "the client's connection did not survive ({st}): {report}{}",
            self.dump()
        );
        assert!(
            report["ops_acked"].as_u64().unwrap_or(0) > 0,
            "no write was acknowledged: {report}"
        );
        let out = in_ns(&self.net.ns("c"), &loadgen())
            .args(["verify", "--addr", REDIS, "--prefix", tag, "--acked-file"])
            .arg(self.dir.path(&format!("{tag}.acked")))
            .output()
            .expect("ftvm-loadgen verify");
        assert!(
            out.status.success(),
            "acknowledged writes are missing: {}{}",
            String::from_utf8_lossy(&out.stdout),
            self.dump()
        );
        report
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.dump());
        }
        Pair::kill(&mut self.primary);
        Pair::kill(&mut self.backup);
        let _ = self.storage.kill();
        let _ = self.storage.wait();
        if let Some(q) = self.qemu_nbd.as_mut() {
            let _ = q.kill();
            let _ = q.wait();
        }
    }
}

/// One scrape of a `--metrics` endpoint: the OpenMetrics text.
struct Metrics(String);

impl Metrics {
    /// Scrapes `METRICS` in namespace `ns`.
    fn scrape(ns: &str) -> Metrics {
        Metrics(in_netns(ns, || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(METRICS).expect("reach the metrics endpoint");
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: ftvm\r\nConnection: close\r\n\r\n")
                .expect("send a scrape");
            let mut out = String::new();
            s.read_to_string(&mut out).expect("read the scrape");
            assert!(out.starts_with("HTTP/1.1 200"), "scrape failed: {out}");
            out
        }))
    }

    /// The values of the samples `name` whose labels include `labels`.
    fn values<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = f64> + 'a {
        self.0.lines().filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let ok = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            ok.then(|| value.parse::<f64>().ok()).flatten()
        })
    }

    /// The value of the first sample `name` whose labels include `labels`.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.values(name, labels).next()
    }

    /// The sum over the samples of `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.values(name, labels).sum()
    }
}

impl Pair {
    /// While paired under load, the metrics of both sides and of storage
    /// carry what is going on: roles, lag, held outputs, the log, the
    /// guest's disk and network. Returns the primary's last scrape.
    fn metrics_while_paired(&self) -> Metrics {
        let (h1, h2, st) = (self.net.ns("h1"), self.net.ns("h2"), self.net.ns("st"));
        // The lag is a sample: look a few times for a moment it is not 0.
        let t = Instant::now();
        let p = loop {
            let p = Metrics::scrape(&h1);
            if p.get("ftvm_ft_lag_instructions", &[]).unwrap_or(0.0) > 0.0 {
                break p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the primary's lag never showed while paired:\n{}",
                p.0
            );
            sleep(Duration::from_millis(100));
        };
        let b = Metrics::scrape(&h2);
        let s = Metrics::scrape(&st);
        let dump = format!("primary:\n{}\nbackup:\n{}\nstorage:\n{}", p.0, b.0, s.0);
        let vm = ("vm", "vm0");
        assert_eq!(
            p.get("ftvm_ft_phase", &[vm, ("phase", "paired")]),
            Some(1.0),
            "{dump}"
        );
        assert_eq!(p.get("ftvm_ft_connected", &[vm]), Some(1.0), "{dump}");
        assert_eq!(
            b.get("ftvm_ft_phase", &[vm, ("phase", "following")]),
            Some(1.0),
            "{dump}"
        );
        assert_eq!(b.get("ftvm_ft_failovers_total", &[vm]), Some(0.0), "{dump}");
        assert_eq!(
            p.get("ftvm_ft_process_info", &[vm, ("started_as", "primary")]),
            Some(1.0),
            "{dump}"
        );
        assert!(
            p.get("ftvm_ft_generation", &[vm]).unwrap_or(0.0) >= 1.0,
            "{dump}"
        );
        let positive = |m: &Metrics, name: &str, labels: &[(&str, &str)]| {
            assert!(
                m.sum(name, labels) > 0.0,
                "{name}{labels:?} is not positive in\n{dump}"
            );
        };
        positive(&p, "ftvm_guest_instructions_total", &[]);
        positive(&p, "ftvm_guest_exits_total", &[("cause", "output")]);
        positive(&p, "ftvm_ft_output_hold_seconds_count", &[]);
        positive(&p, "ftvm_ft_ack_round_trip_seconds_count", &[]);
        positive(&p, "ftvm_ft_released_outputs_total", &[]);
        positive(&p, "ftvm_ft_log_bytes_total", &[("direction", "tx")]);
        positive(&p, "ftvm_ft_log_entries_total", &[("direction", "tx")]);
        positive(
            &p,
            "ftvm_net_frames_total",
            &[("device", "eth0"), ("direction", "rx")],
        );
        positive(
            &p,
            "ftvm_net_frames_total",
            &[("device", "eth0"), ("direction", "tx")],
        );
        positive(&p, "ftvm_disk_requests_total", &[("device", "vda")]);
        positive(&b, "ftvm_guest_instructions_total", &[]);
        positive(&b, "ftvm_ft_log_entries_total", &[("direction", "rx")]);
        positive(&b, "ftvm_ft_digest_checks_total", &[("result", "passed")]);
        assert_eq!(
            b.get("ftvm_ft_digest_checks_total", &[("result", "failed")]),
            Some(0.0),
            "{dump}"
        );
        positive(&s, "ftvm_storage_nbd_requests_total", &[("export", "vm0")]);
        p
    }
}

fn possible(test: &str) -> bool {
    if !network_tests_possible(test) {
        return false;
    }
    if !guest_dir().join("Image").exists() {
        eprintln!("note: skipping {test}: no guest image");
        return false;
    }
    true
}

/// Kill the primary `kill_after` into a `secs`-second load; the backup takes
/// over and the client sees nothing but a pause.
fn primary_killed(index: u32, kill_after: Duration, append_extra: &str) {
    let _vm = vm_lock();
    let mut pair = Pair::start(index, DiskServer::Ftvm, append_extra, None);
    let load = pair.start_load("k", 12);
    sleep(kill_after);
    // The boot alone spans many digest intervals: the backup has checked
    // its state against the primary's, and no digest stalled either side
    // into a failover (the arbiter history below holds exactly one win).
    let checked = pair.status("h2").map(|s| s["digests_checked"].as_u64());
    assert!(
        matches!(checked, Some(Some(n)) if n > 0),
        "the backup compared no state digest before the kill: {checked:?}"
    );
    let st = pair.net.ns("st");
    let before = Metrics::scrape(&st);
    let paired = pair.metrics_while_paired();
    Pair::kill(&mut pair.primary);
    let live_after = pair.wait_phase("h2", "live", Duration::from_secs(30));
    eprintln!("backup seen live {live_after:?} after the kill");
    // The survivor's metrics tell the same story as its status report.
    let live = Metrics::scrape(&pair.net.ns("h2"));
    assert_eq!(
        live.get("ftvm_ft_failovers_total", &[]),
        Some(1.0),
        "{}",
        live.0
    );
    assert_eq!(
        live.get("ftvm_ft_phase", &[("phase", "live")]),
        Some(1.0),
        "{}",
        live.0
    );
    assert_eq!(
        live.get("ftvm_ft_phase", &[("phase", "following")]),
        Some(0.0),
        "{}",
        live.0
    );
    assert!(
        live.get("ftvm_guest_instructions_total", &[])
            .unwrap_or(0.0)
            >= paired
                .get("ftvm_guest_instructions_total", &[])
                .unwrap_or(0.0),
        "the instruction count went backwards"
    );
    let after = Metrics::scrape(&st);
    let won = |m: &Metrics| {
        m.get(
            "ftvm_storage_arbiter_requests_total",
            &[("request", "test_and_set"), ("result", "won")],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(
        won(&after) - won(&before),
        1.0,
        "one test-and-set won at the arbiter:\n{}",
        after.0
    );
    let report = pair.finish_load("k", load);
    eprintln!("load report: {report}");
    let wins = pair.arbiter_history();
    assert_eq!(wins.len(), 1, "expected exactly one go-live: {wins:?}");
    assert!(
        wins[0].contains("backup"),
        "the backup should hold the VM: {wins:?}"
    );
    // The survivor keeps serving new writes.
    let load = pair.start_load("after", 2);
    pair.finish_load("after", load);
}

/// The pair's arbiter is a 3-member etcd cluster: its leader dies under
/// load, then the primary; the backup wins generation 1 through the two
/// members left and serves, with exactly one win recorded.
#[test]
fn failover_with_the_arbiter_in_etcd() {
    if !possible("failover_with_the_arbiter_in_etcd") {
        return;
    }
    if !Path::new("/usr/bin/etcd").exists() {
        eprintln!(
            "note: skipping failover_with_the_arbiter_in_etcd: etcd is not installed (etcd-server)"
        );
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start_full(8, DiskServer::Ftvm, "", None, &[], true);
    let load = pair.start_load("k", 10);
    sleep(Duration::from_secs(2));
    let etcd = pair.etcd.as_mut().expect("the etcd cluster");
    let leader = etcd
        .wait_for_leader(Duration::from_secs(10))
        .expect("an etcd leader");
    etcd.kill(leader);
    eprintln!("killed etcd member {leader} (the leader)");
    sleep(Duration::from_secs(1));
    Pair::kill(&mut pair.primary);
    let live_after = pair.wait_phase("h2", "live", Duration::from_secs(30));
    eprintln!("backup seen live {live_after:?} after the kill");
    let report = pair.finish_load("k", load);
    eprintln!("load report: {report}");
    let wins = pair.arbiter_history();
    assert_eq!(wins.len(), 1, "expected exactly one go-live: {wins:?}");
    assert!(
        wins[0].contains("backup"),
        "the backup should hold the VM: {wins:?}"
    );
    let load = pair.start_load("after", 2);
    pair.finish_load("after", load);
}

#[test]
fn primary_killed_early_in_the_load() {
    if possible("primary_killed_early_in_the_load") {
        primary_killed(1, Duration::from_millis(1500), "");
    }
}

#[test]
fn primary_killed_late_in_the_load() {
    if possible("primary_killed_late_in_the_load") {
        primary_killed(2, Duration::from_secs(6), "");
    }
}

#[test]
fn primary_killed_during_bulk_disk_writes() {
    if possible("primary_killed_during_bulk_disk_writes") {
        // Inside the guest, a writer streams 4 MiB files to /data with
        // fsync (for as long as the guest runs) while redis serves the client.
        primary_killed(
            3,
            Duration::from_secs(4),
            "ftvm.run=\"while true; do dd if=/dev/zero of=/data/bulk bs=64k count=64 conv=fsync 2>/dev/null; done\"",
        );
    }
}

#[test]
fn backup_killed_primary_goes_on_alone() {
    if !possible("backup_killed_primary_goes_on_alone") {
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start(4, DiskServer::Ftvm, "", None);
    let load = pair.start_load("k", 8);
    sleep(Duration::from_secs(3));
    Pair::kill(&mut pair.backup);
    pair.wait_phase("h1", "alone", Duration::from_secs(30));
    pair.finish_load("k", load);
    let wins = pair.arbiter_history();
    assert_eq!(wins.len(), 1, "expected exactly one win: {wins:?}");
    assert!(wins[0].contains("primary"), "{wins:?}");
}

#[test]
fn cut_logging_link_leaves_exactly_one() {
    if !possible("cut_logging_link_leaves_exactly_one") {
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start(5, DiskServer::Ftvm, "", None);
    let out = Command::new(repo_root_path().join("scripts/netns.sh"))
        .args(["cut-log", &pair.net.prefix])
        .output()
        .expect("netns.sh cut-log");
    assert!(out.status.success(), "cut-log failed");
    // One of them wins the arbiter; the other halts with status 4.
    let t = Instant::now();
    let halted = loop {
        if let Some(st) = Pair::wait_exit(&mut pair.primary, Duration::from_millis(100)) {
            break ("primary", st);
        }
        if let Some(st) = Pair::wait_exit(&mut pair.backup, Duration::from_millis(100)) {
            break ("backup", st);
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "neither side halted after the logging link was cut{}",
            pair.dump()
        );
    };
    assert_eq!(
        halted.1.code(),
        Some(4),
        "{} exited with {}",
        halted.0,
        halted.1
    );
    let survivor = if halted.0 == "primary" { "h2" } else { "h1" };
    let phase = if halted.0 == "primary" {
        "live"
    } else {
        "alone"
    };
    pair.wait_phase(survivor, phase, Duration::from_secs(30));
    // The survivor is still running a few seconds later and serves clients.
    sleep(Duration::from_secs(2));
    let other = if halted.0 == "primary" {
        &mut pair.backup
    } else {
        &mut pair.primary
    };
    assert!(
        Pair::wait_exit(other, Duration::from_millis(10)).is_none(),
        "both sides stopped{}",
        pair.dump()
    );
    let load = pair.start_load("k", 2);
    pair.finish_load("k", load);
    let wins = pair.arbiter_history();
    assert_eq!(wins.len(), 1, "expected exactly one win: {wins:?}");
}

#[test]
fn backup_without_arbiter_never_goes_live() {
    if !possible("backup_without_arbiter_never_goes_live") {
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start_with(
        8,
        DiskServer::Ftvm,
        "",
        None,
        &["--arbiter-deadline-ms", "3000"],
    );
    // Host 2 loses its link to the storage host (and so the arbiter); then
    // the primary dies. The backup must not go live: it halts (status 4)
    // once the arbiter deadline has passed, and the guest stays down.
    let out = Command::new(repo_root_path().join("scripts/netns.sh"))
        .args(["cut", &pair.net.prefix, "storage:2"])
        .output()
        .expect("netns.sh cut");
    assert!(out.status.success(), "cut storage:2 failed");
    Pair::kill(&mut pair.primary);
    let st = Pair::wait_exit(&mut pair.backup, Duration::from_secs(30));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(4),
        "the backup should halt without the arbiter: {st:?}{}",
        pair.dump()
    );
    let backup_log = fs::read_to_string(pair.dir.path("backup.log")).unwrap_or_default();
    assert!(!backup_log.contains("going live"), "{backup_log}");
    let ping = in_ns(&pair.net.ns("c"), &loadgen())
        .args(["ping", "--addr", REDIS, "--timeout-ms", "1500"])
        .stderr(Stdio::null())
        .status()
        .expect("ping");
    assert!(
        !ping.success(),
        "the guest answered although nobody may run it"
    );
    assert!(pair.arbiter_history().is_empty(), "nobody may have won");
}

#[test]
fn outputs_wait_for_the_backup() {
    if !possible("outputs_wait_for_the_backup") {
        return;
    }
    let _vm = vm_lock();
    // A long failure timeout, so freezing the backup is not a failure.
    let pair = Pair::start(6, DiskServer::Ftvm, "", Some(10_000));
    let backup_pid = pair.backup.as_ref().expect("backup").id() as i32;
    let ping = |pair: &Pair| {
        in_ns(&pair.net.ns("c"), &loadgen())
            .args(["ping", "--addr", REDIS, "--timeout-ms", "20000"])
            .spawn()
            .expect("ftvm-loadgen ping")
    };
    // Garbage on the logging port is refused with a log line; the pair's
    // own connection is not disturbed.
    let st = Command::new("ip")
        .args(["netns", "exec", &pair.net.ns("h1"), "bash", "-c"])
        .arg("printf 'GET / HTTP/1.0\\r\\n\\r\\n' > /dev/tcp/10.78.0.2/7000")
        .status()
        .expect("send garbage");
    assert!(
        st.success(),
        "could not connect to the backup's logging port"
    );
    sleep(Duration::from_secs(2));
    let backup_log = fs::read_to_string(pair.dir.path("backup.log")).unwrap_or_default();
    assert!(
        backup_log.contains("refused garbage on the logging connection")
            || (backup_log.contains("refused a connection from 10.78.0.1:")
                && backup_log.contains("logging port: TLS")),
        "no log line about the garbage: {backup_log}"
    );
    let primary_log = fs::read_to_string(pair.dir.path("primary.log")).unwrap_or_default();
    assert_eq!(
        primary_log.matches("paired with the backup").count(),
        1,
        "the primary's connection was disturbed: {primary_log}"
    );
    pair.wait_phase("h1", "paired", Duration::from_secs(5));
    pair.wait_phase("h2", "following", Duration::from_secs(5));
    assert!(pair.status("h1").expect("status")["connected"] == true);
    // Unfrozen: an answer within a second.
    let t = Instant::now();
    let st = ping(&pair).wait().expect("ping");
    assert!(st.success());
    let normal = t.elapsed();
    assert!(normal < Duration::from_secs(2), "PING took {normal:?}");
    // Frozen backup: the guest executes the request and produces the reply,
    // but the primary holds it until the backup acknowledges the log entry
    // after it; it reaches the client only after SIGCONT.
    // SAFETY: kill(2) with a child's pid and a valid signal.
    unsafe { libc::kill(backup_pid, libc::SIGSTOP) };
    let t = Instant::now();
    let mut p = ping(&pair);
    sleep(Duration::from_secs(3));
    let early = p.try_wait().expect("try_wait");
    let resumed = t.elapsed();
    // SAFETY: as above.
    unsafe { libc::kill(backup_pid, libc::SIGCONT) };
    assert!(
        early.is_none(),
        "the reply reached the client while the backup was frozen{}",
        pair.dump()
    );
    let st = p.wait().expect("ping");
    let answered = t.elapsed();
    assert!(st.success(), "no answer after the backup resumed");
    assert!(
        answered >= resumed,
        "answered {answered:?}, resumed {resumed:?}"
    );
    eprintln!("normal PING {normal:?}; with the backup frozen for {resumed:?}: {answered:?}");
    let s = pair.status("h1").expect("primary status");
    assert_eq!(s["phase"], "paired", "{s}");
}

#[test]
fn pair_runs_on_qemu_nbd() {
    if !possible("pair_runs_on_qemu_nbd") {
        return;
    }
    if !Path::new("/usr/bin/qemu-nbd").exists() {
        eprintln!("note: skipping pair_runs_on_qemu_nbd: qemu-nbd is not installed (qemu-utils)");
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start(7, DiskServer::QemuNbd, "", None);
    let load = pair.start_load("k", 8);
    sleep(Duration::from_secs(3));
    Pair::kill(&mut pair.primary);
    pair.wait_phase("h2", "live", Duration::from_secs(30));
    pair.finish_load("k", load);
}

fn repo_root_path() -> PathBuf {
    common::repo_root()
}

/// `rounds` times: kill the process running the guest, wait for the other
/// to go live, start a backup joining it on the host that died. One client
/// connection writes throughout; every acknowledged write is checked at
/// the end, and the arbiter must show one go-live per round. Returns the
/// pair with its two live processes.
fn failover_and_rejoin_rounds(index: u32, disk: DiskServer, rounds: u64) -> Pair {
    let mut pair = Pair::start(index, disk, "", None);
    let stop = pair.dir.path("stop-load");
    let load = in_ns(&pair.net.ns("c"), &loadgen())
        .args([
            "write",
            "--addr",
            REDIS,
            "--prefix",
            "k",
            "--duration",
            "600",
        ])
        .arg("--until-file")
        .arg(&stop)
        .arg("--acked-file")
        .arg(pair.dir.path("k.acked"))
        .arg("--report")
        .arg(pair.dir.path("k.json"))
        .stdout(Stdio::null())
        .stderr(log_file(&pair.dir, "k.log"))
        .spawn()
        .expect("start ftvm-loadgen");
    // The process running the guest, and the one following it, by host.
    let mut active = ("h1", pair.primary.take().expect("primary"));
    let mut standby = ("h2", pair.backup.take().expect("backup"));
    for round in 1..=rounds {
        sleep(Duration::from_secs(2));
        let _ = active.1.kill();
        let _ = active.1.wait();
        pair.wait_phase(standby.0, "live", Duration::from_secs(30));
        // A new backup on the host that just died joins the survivor.
        let host = active.0;
        let join = format!("10.78.0.{}:7001", &standby.0[1..]);
        let joiner = pair.spawn_backup(host, &format!("joiner{round}"), Some(&join));
        let t = Instant::now();
        pair.wait_phase(host, "following", Duration::from_secs(60));
        pair.wait_phase(standby.0, "paired", Duration::from_secs(10));
        eprintln!("round {round}: joined in {:?}", t.elapsed());
        active = std::mem::replace(&mut standby, (host, joiner));
    }
    fs::write(&stop, b"").expect("stop the load");
    let report = pair.finish_load("k", load);
    eprintln!("load report: {report}");
    let wins = pair.arbiter_history();
    assert_eq!(wins.len() as u64, rounds, "one go-live per round: {wins:?}");
    for (i, w) in wins.iter().enumerate() {
        let gen: u64 = w
            .split('\t')
            .next()
            .and_then(|g| g.parse().ok())
            .unwrap_or(0);
        assert_eq!(gen, i as u64 + 1, "{wins:?}");
        assert!(w.contains("backup"), "{wins:?}");
    }
    pair.primary = Some(active.1);
    pair.backup = Some(standby.1);
    pair
}

#[test]
fn five_rounds_of_failover_and_rejoin() {
    if possible("five_rounds_of_failover_and_rejoin") {
        let _vm = vm_lock();
        failover_and_rejoin_rounds(9, DiskServer::Ftvm, 5);
    }
}

#[test]
fn five_rounds_with_non_shared_disks() {
    if !possible("five_rounds_with_non_shared_disks") {
        return;
    }
    let _vm = vm_lock();
    let pair = failover_and_rejoin_rounds(5, DiskServer::Local, 5);
    // With the guest quiescent, the two sides' own disks are the same
    // bytes (the backup trails by a few ms: retry for a while).
    let t = Instant::now();
    loop {
        let a = fs::read(pair.dir.path("disk-h1.img")).expect("read disk-h1");
        let b = fs::read(pair.dir.path("disk-h2.img")).expect("read disk-h2");
        if a == b {
            break;
        }
        let first = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the two disks differ (first at byte {first}){}",
            pair.dump()
        );
        sleep(Duration::from_millis(500));
    }
}

#[test]
fn interrupted_joins_leave_a_working_primary() {
    if !possible("interrupted_joins_leave_a_working_primary") {
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start(0, DiskServer::Ftvm, "", None);
    let load = pair.start_load("k", 30);
    sleep(Duration::from_secs(1));
    Pair::kill(&mut pair.backup);
    pair.wait_phase("h1", "alone", Duration::from_secs(30));
    let join = "10.78.0.1:7001";
    // 1. The joiner dies during the pre-copy.
    let mut j = Some(pair.spawn_backup("h2", "joiner1", Some(join)));
    sleep(Duration::from_millis(300));
    Pair::kill(&mut j);
    sleep(Duration::from_secs(1));
    pair.wait_phase("h1", "alone", Duration::from_secs(10));
    // 2. The joiner dies the moment the state arrives, while the primary
    //    pauses to form the pair (a test switch: the pause lasts a few ms).
    let mut j = Some(pair.spawn_backup_with(
        "h2",
        "joiner-pause",
        Some(join),
        &["--test-die-at-join-state"],
    ));
    let st = Pair::wait_exit(&mut j, Duration::from_secs(60));
    assert!(st.is_some(), "the joiner did not die at the join state");
    // The pair of generation 2 formed; its backup never spoke: the primary
    // goes on alone at generation 2.
    pair.wait_status("h1", Duration::from_secs(30), |s| {
        s["phase"] == "alone" && s["generation"] == 2
    });
    // 3. The joiner dies as soon as it has joined (the first log seconds).
    let mut j = Some(pair.spawn_backup("h2", "joiner2", Some(join)));
    pair.wait_phase("h2", "following", Duration::from_secs(60));
    Pair::kill(&mut j);
    pair.wait_status("h1", Duration::from_secs(30), |s| {
        s["phase"] == "alone" && s["generation"] == 3
    });
    // 4. A later join succeeds, and that pair fails over cleanly.
    pair.backup = Some(pair.spawn_backup("h2", "joiner3", Some(join)));
    pair.wait_phase("h2", "following", Duration::from_secs(60));
    pair.wait_phase("h1", "paired", Duration::from_secs(10));
    Pair::kill(&mut pair.primary);
    pair.wait_phase("h2", "live", Duration::from_secs(30));
    pair.finish_load("k", load);
    let wins = pair.arbiter_history();
    // Generation 1: the primary alone; 2 and 3: the primary again after
    // the joiners that died at and after the pause; 4: the last joiner's
    // go-live.
    assert_eq!(wins.len(), 4, "{wins:?}");
    assert!(wins[..3].iter().all(|w| w.contains("primary")), "{wins:?}");
    assert!(wins[3].starts_with("4\tbackup"), "{wins:?}");
}

/// A primary that stalls (SIGSTOP) past the failure timeout and then
/// resumes is a false suspicion: the backup goes live, and the primary,
/// once it runs again, must halt (it loses the arbiter) without letting
/// anything out that the backup does not have. The client's connection
/// survives and every write it saw acknowledged is on the survivor.
#[test]
fn stalled_primary_halts_and_the_backup_serves() {
    if !possible("stalled_primary_halts_and_the_backup_serves") {
        return;
    }
    let _vm = vm_lock();
    let mut pair = Pair::start(3, DiskServer::Ftvm, "", None);
    let load = pair.start_load("s", 8);
    sleep(Duration::from_secs(3));
    let pid = pair.primary.as_ref().expect("primary").id() as i32;
    // SAFETY: kill(2) on a child of ours with valid signals.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    // Twice the default failure timeout of 100 ms.
    sleep(Duration::from_millis(200));
    let live_after = pair.wait_phase("h2", "live", Duration::from_secs(10));
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    eprintln!("backup seen live {live_after:?} after the stall began + 200 ms");
    let st = Pair::wait_exit(&mut pair.primary, Duration::from_secs(10));
    assert_eq!(
        st.and_then(|s| s.code()),
        Some(4),
        "the resumed primary should halt (lost arbiter): {st:?}{}",
        pair.dump()
    );
    let primary_log = fs::read_to_string(pair.dir.path("primary.log")).unwrap_or_default();
    assert!(
        !primary_log.contains("running alone"),
        "the stalled primary went on alone: {primary_log}"
    );
    let report = pair.finish_load("s", load);
    eprintln!("load report: {report}");
    let wins = pair.arbiter_history();
    assert_eq!(wins.len(), 1, "expected exactly one go-live: {wins:?}");
    assert!(wins[0].contains("backup"), "{wins:?}");
    let s = pair.status("h2").expect("backup status");
    assert!(
        s["failover"]["first_output_ms"].is_u64(),
        "the survivor's status has no failover timeline: {s}"
    );
    let backup_log = fs::read_to_string(pair.dir.path("backup.log")).unwrap_or_default();
    assert!(
        backup_log.contains("failover timeline: backup went live"),
        "{backup_log}"
    );
}

/// Long test (`FTVM_HOG_SECS=600 cargo test --release -p ftvm --test
/// ft_failover -- --ignored cpu_hog`): the pair, with the default failure
/// timeout, under one client connection while two busy loops compete for
/// both cores. Every failover here is a false one; each is counted, the
/// process that lost is replaced by a backup joining the survivor, and at
/// the end every acknowledged write must still be there and the client's
/// connection unbroken.
#[test]
#[ignore = "long: FTVM_HOG_SECS (default 600) of a CPU hog on both cores"]
fn cpu_hog_false_failovers_lose_nothing() {
    if !possible("cpu_hog_false_failovers_lose_nothing") {
        return;
    }
    let secs: u64 = std::env::var("FTVM_HOG_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let _vm = vm_lock();
    let mut pair = Pair::start(8, DiskServer::Ftvm, "", None);
    let stop = pair.dir.path("stop-load");
    let load = in_ns(&pair.net.ns("c"), &loadgen())
        .args(["write", "--addr", REDIS, "--prefix", "h", "--duration"])
        .arg((secs + 600).to_string())
        .arg("--until-file")
        .arg(&stop)
        .arg("--acked-file")
        .arg(pair.dir.path("h.acked"))
        .arg("--report")
        .arg(pair.dir.path("h.json"))
        .stdout(Stdio::null())
        .stderr(log_file(&pair.dir, "h.log"))
        .spawn()
        .expect("start ftvm-loadgen");
    let hogs: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .spawn()
                .expect("start a CPU hog")
        })
        .collect();
    let mut sides = [
        ("h1", pair.primary.take().expect("primary")),
        ("h2", pair.backup.take().expect("backup")),
    ];
    let start = Instant::now();
    let mut false_failovers = 0u32;
    let mut round = 0u32;
    while start.elapsed() < Duration::from_secs(secs) {
        sleep(Duration::from_millis(200));
        // A side that exited lost a (false) failover: the other runs the
        // guest alone; a new backup on the same host joins it.
        for i in 0..2 {
            let Ok(Some(st)) = sides[i].1.try_wait() else {
                continue;
            };
            false_failovers += 1;
            round += 1;
            let (dead, survivor) = (sides[i].0, sides[1 - i].0);
            eprintln!(
                "cpu hog: false failover {false_failovers} at {:?}: {dead} exited ({st}), {survivor} runs alone",
                start.elapsed()
            );
            let t = Instant::now();
            loop {
                let s = pair.status(survivor);
                let phase = s
                    .as_ref()
                    .and_then(|s| s["phase"].as_str().map(String::from));
                if matches!(phase.as_deref(), Some("live") | Some("alone")) {
                    break;
                }
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "{survivor} never ran alone after {dead} exited: {s:?}{}",
                    pair.dump()
                );
                sleep(Duration::from_millis(50));
            }
            let join = format!("10.78.0.{}:7001", &survivor[1..]);
            let joiner = pair.spawn_backup(dead, &format!("hogjoin{round}"), Some(&join));
            sides[i] = (dead, joiner);
            pair.wait_phase(dead, "following", Duration::from_secs(120));
        }
    }
    for mut h in hogs {
        let _ = h.kill();
        let _ = h.wait();
    }
    fs::write(&stop, b"").expect("stop the load");
    let report = pair.finish_load("h", load);
    let wins = pair.arbiter_history();
    eprintln!(
        "cpu hog: {secs} s under two busy loops with the default failure timeout: {false_failovers} false failovers, arbiter wins {wins:?}; load report: {report}"
    );
    assert_eq!(
        wins.len() as u32,
        false_failovers,
        "every false failover is one arbiter win: {wins:?}"
    );
    let [a, b] = sides;
    pair.primary = Some(a.1);
    pair.backup = Some(b.1);
}

/// Runs `f` on a thread inside network namespace `ns` (sockets it creates
/// live there).
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).expect("open the namespace");
        // SAFETY: setns(2) on a valid namespace descriptor, for this thread.
        let r = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// A TLS client setup of identity `who` from `certs`, expecting servers of `role`.
fn client_tls(certs: &Path, who: &str, role: ftvm_tls::Role) -> ftvm_tls::ClientTls {
    let f = ftvm_tls::TlsFiles {
        cert: certs.join(who).join("client-cert.pem"),
        key: certs.join(who).join("client-key.pem"),
        ca: certs.join("ca-cert.pem"),
    };
    ftvm_tls::ClientTls::load(&f, role).expect("load client TLS")
}

const JOIN_ADDR: &str = "10.78.0.1:7001";

/// One round of attacks from the current namespace; returns how many
/// connections were made. None may get a frame back.
fn attack_round(certs: &Path, other_ca: &Path, recorded: &[u8]) -> usize {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let mut n = 0;
    let deadline = || Instant::now() + Duration::from_secs(3);
    let read_all = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(4))).ok();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        got
    };
    // Garbage instead of a handshake, on every port.
    for addr in [LOG_ADDR, JOIN_ADDR, NBD, ARBITER] {
        if let Ok(mut s) = TcpStream::connect(addr) {
            n += 1;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n\x16\x03\x01garbage garbage");
            let got = read_all(s);
            assert!(
                !got.windows(4).any(|w| w == b"FTAB"),
                "an arbiter frame for garbage"
            );
        }
    }
    // Handshakes with the wrong certificates.
    let wrong = [
        client_tls(certs, "operator-test", ftvm_tls::Role::Host),
        client_tls(certs, "host-h4", ftvm_tls::Role::Host),
        client_tls(other_ca, "host-h2", ftvm_tls::Role::Host),
    ];
    for tls in &wrong {
        for addr in [LOG_ADDR, JOIN_ADDR] {
            let Ok(sock) = TcpStream::connect(addr) else {
                continue;
            };
            n += 1;
            if let Ok((mut s, _)) = ftvm_tls::ClientStream::connect(tls, sock, deadline()) {
                // Our side finished; the server checks us now and closes.
                let _ = s.write_all(b"garbage after the handshake");
                let mut buf = [0u8; 64];
                s.socket()
                    .set_read_timeout(Some(Duration::from_secs(4)))
                    .ok();
                let r = s.read(&mut buf);
                assert!(
                    !matches!(r, Ok(k) if k > 0),
                    "a refused peer got data from {addr}"
                );
            }
        }
    }
    // The arbiter, with another CA's host certificate.
    if let Ok(sock) = TcpStream::connect(ARBITER) {
        n += 1;
        let tls = client_tls(other_ca, "host-h1", ftvm_tls::Role::Storage);
        assert!(
            ftvm_tls::ClientStream::connect(&tls, sock, deadline()).is_err(),
            "the arbiter accepted another CA"
        );
    }
    // A replayed handshake, whole, and its first flight followed by garbage.
    if !recorded.is_empty() {
        for tail in [
            &b""[..],
            b"\x17\x03\x03\x00\x20 this is not a TLS record at all",
        ] {
            if let Ok(mut s) = TcpStream::connect(LOG_ADDR) {
                n += 1;
                let mut bytes = recorded.to_vec();
                if !tail.is_empty() {
                    // The ClientHello record only.
                    let len = 5 + u16::from_be_bytes([recorded[3], recorded[4]]) as usize;
                    bytes.truncate(len.min(recorded.len()));
                    bytes.extend_from_slice(tail);
                }
                let _ = s.write_all(&bytes);
                let got = read_all(s);
                // A server hello and alert at most: no application data.
                assert!(got.len() < 4096, "a replay got {} bytes", got.len());
            }
        }
    }
    n
}

/// Records the bytes a real host-of-vm0 client sends in its handshake to
/// the backup's logging port (through a relay), from the current namespace.
fn record_handshake(certs: &Path) -> Vec<u8> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let relay = TcpListener::bind("127.0.0.1:0").expect("relay");
    let relay_addr = relay.local_addr().expect("addr");
    let recorder = std::thread::spawn(move || {
        let (mut client, _) = relay.accept().expect("accept");
        let mut server = TcpStream::connect(LOG_ADDR).expect("connect to the backup");
        let mut back = server.try_clone().expect("clone");
        let mut client_back = client.try_clone().expect("clone");
        let t = std::thread::spawn(move || {
            let _ = std::io::copy(&mut back, &mut client_back);
            let _ = client_back.shutdown(std::net::Shutdown::Both);
        });
        let mut recorded = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.read(&mut buf) {
            if n == 0 {
                break;
            }
            recorded.extend_from_slice(&buf[..n]);
            if server.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server.shutdown(std::net::Shutdown::Both);
        let _ = t.join();
        recorded
    });
    let tls = client_tls(certs, "host-h3", ftvm_tls::Role::Host);
    let sock = TcpStream::connect(relay_addr).expect("connect to the relay");
    let (mut s, id) =
        ftvm_tls::ClientStream::connect(&tls, sock, Instant::now() + Duration::from_secs(5))
            .expect("a valid host's handshake");
    assert!(id.is_host_of("vm0"), "{id}");
    // It never sends a Hello: the backup drops it, the pair untouched.
    s.close();
    let recorded = recorder.join().expect("recorder");
    assert!(recorded.len() > 500, "recorded {} bytes", recorded.len());
    recorded
}

/// `ftvm backup --join` on h2 with `tls` options, `vm` and its own disk
/// file; returns its exit status and stderr.
fn wrong_joiner(pair: &Pair, name: &str, vm: &str, tls: Vec<String>) -> (ExitStatus, String) {
    let g = guest_dir();
    let disk = pair.dir.path(&format!("{name}.img"));
    fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("a disk");
    let mut c = ftvm_in(&pair.net.ns("h2"));
    c.args(["backup", "--vm", vm, "--arbiter", ARBITER])
        .args(["--listen", "10.78.0.2:7005", "--join", JOIN_ADDR])
        .args(["--console", "null", "--no-input"])
        .arg("--bios")
        .arg(g.join("fw_jump.bin"))
        .arg("--kernel")
        .arg(g.join("Image"))
        .arg("--initrd")
        .arg(g.join("initrd.cpio.gz"))
        .arg("--drive")
        .arg(format!("file={}", disk.display()))
        .args(tls)
        .stdout(Stdio::null())
        .stderr(log_file(&pair.dir, &format!("{name}.log")));
    let mut child = Some(c.spawn().expect("start a wrong backup"));
    let st = Pair::wait_exit(&mut child, Duration::from_secs(30));
    if st.is_none() {
        Pair::kill(&mut child);
    }
    let log = fs::read_to_string(pair.dir.path(&format!("{name}.log"))).unwrap_or_default();
    (st.expect("the wrong backup did not give up"), log)
}

fn other_ca(dir: &Scratch) -> PathBuf {
    let d = dir.path("other-ca");
    let out = Command::new(env!("CARGO_BIN_EXE_ftvm"))
        .args(["certs", "init"])
        .arg(&d)
        .args(["--hosts", "h1,h2", "--vms", "vm0"])
        .output()
        .expect("ftvm certs init");
    assert!(out.status.success());
    d
}

#[test]
fn wrong_peers_are_refused_and_the_pair_serves_under_attack() {
    if !possible("wrong_peers_are_refused_and_the_pair_serves_under_attack") {
        return;
    }
    let _vm = vm_lock();
    let pair = Pair::start(4, DiskServer::Ftvm, "", None);
    let certs = pair.certs.clone().expect("a TLS pair");
    let other = other_ca(&pair.dir);
    let primary_log = || fs::read_to_string(pair.dir.path("primary.log")).unwrap_or_default();
    let backup_log = || fs::read_to_string(pair.dir.path("backup.log")).unwrap_or_default();
    let storage_log = || fs::read_to_string(pair.dir.path("storage.log")).unwrap_or_default();
    let join_refusals = || {
        primary_log()
            .lines()
            .filter(|l| {
                l.contains("refused a connection from 10.78.0.2:") && l.contains("join port")
            })
            .count()
    };

    // Real backups with the wrong certificate cannot join.
    let (st, log) = wrong_joiner(&pair, "op", "vm0", tls_args(Some(&certs), "operator-test"));
    assert!(!st.success() && log.contains("not a host of VM"), "{log}");
    let (st, log) = wrong_joiner(&pair, "vm1", "vm1", tls_args(Some(&certs), "host-h4"));
    assert!(!st.success(), "{log}");
    let (st, log) = wrong_joiner(&pair, "ca2", "vm0", tls_args(Some(&other), "host-h2"));
    assert!(!st.success(), "{log}");
    sleep(Duration::from_millis(500));
    let p = primary_log();
    assert!(
        p.lines().any(|l| l.contains("join port")
            && l.contains("host h4 (VMs vm1) is not a host of VM \"vm0\"")),
        "no refusal naming the vm1 host: {p}"
    );
    assert_eq!(join_refusals(), 2, "one line per refused joiner: {p}");

    // TLS clients with the wrong certificates, garbage, a replayed handshake.
    let c = certs.clone();
    let recorded = in_netns(&pair.net.ns("h2"), move || record_handshake(&c));
    let (c, o, r) = (certs.clone(), other.clone(), recorded.clone());
    let made = in_netns(&pair.net.ns("h2"), move || attack_round(&c, &o, &r));
    sleep(Duration::from_secs(1));
    let b = backup_log();
    let logging_refusals: Vec<&str> = b
        .lines()
        .filter(|l| l.contains("refused a connection from") && l.contains("logging port"))
        .collect();
    // Garbage, 3 wrong certificates, the replay, hello + garbage.
    assert!(
        logging_refusals.len() >= 6,
        "{made} attacks, logging refusals: {logging_refusals:#?}"
    );
    assert!(
        logging_refusals
            .iter()
            .any(|l| l.contains("operator test is not a host")),
        "{b}"
    );
    assert!(
        logging_refusals
            .iter()
            .any(|l| l.contains("is not a host") && l.contains("h4")),
        "{b}"
    );
    assert!(join_refusals() >= 6, "{}", primary_log());
    let st = storage_log();
    assert!(
        st.contains("refused"),
        "the storage host logged no refusal: {st}"
    );
    // The pair was not disturbed.
    assert_eq!(
        primary_log().matches("paired with the backup").count(),
        1,
        "{}",
        primary_log()
    );
    pair.wait_phase("h1", "paired", Duration::from_secs(5));
    pair.wait_phase("h2", "following", Duration::from_secs(5));

    // Attackers in a loop during a redis load.
    let load = pair.start_load("attacked", 15);
    let (c, o, r) = (certs.clone(), other.clone(), recorded.clone());
    let attacks = in_netns(&pair.net.ns("h2"), move || {
        let t = Instant::now();
        let mut n = 0;
        while t.elapsed() < Duration::from_secs(13) {
            n += attack_round(&c, &o, &r);
        }
        n
    });
    let report = pair.finish_load("attacked", load);
    eprintln!("{attacks} attacking connections during the load: {report}");
    assert!(attacks > 20, "only {attacks} attacks");
    assert!(pair.arbiter_history().is_empty(), "a failover happened");
    assert_eq!(primary_log().matches("paired with the backup").count(), 1);
    pair.wait_phase("h1", "paired", Duration::from_secs(5));
    pair.wait_phase("h2", "following", Duration::from_secs(5));
    let refusals = backup_log().matches("refused a connection from").count()
        + primary_log().matches("refused a connection from").count();
    assert!(
        refusals > attacks / 2,
        "{refusals} refusals logged for {attacks} attacks"
    );
}

#[test]
fn a_backup_from_another_ca_cannot_follow() {
    if !possible("a_backup_from_another_ca_cannot_follow") {
        return;
    }
    let _vm = vm_lock();
    let net = TestNet::up_with_hosts(3, 2);
    let dir = Scratch::new("ft-ca2");
    let certs = make_certs(&dir);
    let other = other_ca(&dir);
    let st_dir = dir.path("storage");
    fs::create_dir_all(&st_dir).expect("storage dir");
    let mut storage = Some(
        ftvm_in(&net.ns("st"))
            .arg("storage")
            .args(tls_args(Some(&certs), "storage"))
            .arg("--dir")
            .arg(&st_dir)
            .args(["--nbd-listen", NBD, "--arbiter-listen", ARBITER])
            .args(["--create", "vm0=64M"])
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "storage.log"))
            .spawn()
            .expect("start ftvm storage"),
    );
    let g = guest_dir();
    let images = |c: &mut Command| {
        c.arg("--bios")
            .arg(g.join("fw_jump.bin"))
            .arg("--kernel")
            .arg(g.join("Image"))
            .arg("--initrd")
            .arg(g.join("initrd.cpio.gz"))
            .args(["--vm", "vm0", "--arbiter", ARBITER, "--no-input"])
            .args(["--console", "null"]);
    };
    let disk = dir.path("b.img");
    fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .expect("disk");
    let mut b = ftvm_in(&net.ns("h2"));
    b.args(["backup", "--listen", LOG_ADDR]);
    images(&mut b);
    b.arg("--drive")
        .arg(format!("file={}", disk.display()))
        .args(tls_args(Some(&other), "host-h2"));
    let mut backup = Some(
        b.stdout(Stdio::null())
            .stderr(log_file(&dir, "backup.log"))
            .spawn()
            .expect("backup"),
    );
    sleep(Duration::from_secs(1));
    let mut p = ftvm_in(&net.ns("h1"));
    p.args([
        "primary",
        "--backup",
        LOG_ADDR,
        "--startup-timeout-ms",
        "60000",
    ]);
    images(&mut p);
    p.args(["--drive", &format!("nbd://{NBD}/vm0")])
        .args(tls_args(Some(&certs), "host-h1"));
    let mut primary = Some(
        p.stdout(Stdio::null())
            .stderr(log_file(&dir, "primary.log"))
            .spawn()
            .expect("primary"),
    );
    sleep(Duration::from_secs(8));
    let plog = fs::read_to_string(dir.path("primary.log")).unwrap_or_default();
    let blog = fs::read_to_string(dir.path("backup.log")).unwrap_or_default();
    let arbiter = ftvm_in(&net.ns("h1"))
        .arg("arbiter")
        .args(tls_args(Some(&certs), "operator-test"))
        .args(["--arbiter", ARBITER, "query", "vm0"])
        .output()
        .expect("arbiter query");
    Pair::kill(&mut primary);
    Pair::kill(&mut backup);
    Pair::kill(&mut storage);
    assert_eq!(
        plog.matches("refused the backup at 10.78.0.2:7000").count(),
        1,
        "one line, however often the primary redials: {plog}"
    );
    assert!(!plog.contains("paired with"), "{plog}");
    assert!(
        blog.contains("refused a connection from 10.78.0.1:") && blog.contains("logging port"),
        "{blog}"
    );
    assert!(!blog.contains("following the primary"), "{blog}");
    assert_eq!(
        String::from_utf8_lossy(&arbiter.stdout),
        "generation 0\nholder -\nwins 0\n",
        "nothing reached the arbiter"
    );
    drop(net);
}
