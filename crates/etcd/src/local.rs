//! A cluster of real `etcd` processes on this host, for tests and the lab:
//! N members, each with its own data directory, client and peer address and
//! optionally its own network namespace (started with `ip netns exec`). It
//! starts them, waits until the cluster has a leader, finds the leader, and
//! kills, stops or resumes single members. Dropping it kills every member.
//! This is test support and drives processes; the arbiter never uses it.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One member to start.
#[derive(Debug, Clone)]
pub struct MemberSpec {
    /// The address the member listens on and advertises (an IP of its
    /// namespace, or 127.0.0.1).
    pub ip: String,
    pub client_port: u16,
    pub peer_port: u16,
    /// Run inside this network namespace, if any.
    pub netns: Option<String>,
}

struct Member {
    name: String,
    spec: MemberSpec,
    child: Option<Child>,
}

/// A running local cluster.
pub struct LocalCluster {
    dir: PathBuf,
    members: Vec<Member>,
}

impl LocalCluster {
    /// `n` members on 127.0.0.1, ports from `base_port` up (2 per member).
    pub fn start_loopback(dir: PathBuf, n: usize, base_port: u16) -> Result<LocalCluster, String> {
        let specs = (0..n)
            .map(|i| MemberSpec {
                ip: "127.0.0.1".into(),
                client_port: base_port + 2 * i as u16,
                peer_port: base_port + 2 * i as u16 + 1,
                netns: None,
            })
            .collect();
        Self::start(dir, specs)
    }

    /// Starts one etcd per spec (a new cluster, fast elections: 50 ms
    /// heartbeats, 500 ms election timeout) and waits up to 30 s for a leader.
    pub fn start(dir: PathBuf, specs: Vec<MemberSpec>) -> Result<LocalCluster, String> {
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let initial: Vec<String> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| format!("m{i}=http://{}:{}", s.ip, s.peer_port))
            .collect();
        let initial = initial.join(",");
        let mut cluster = LocalCluster {
            dir: dir.clone(),
            members: Vec::new(),
        };
        for (i, spec) in specs.into_iter().enumerate() {
            cluster.members.push(Member {
                name: format!("m{i}"),
                spec,
                child: None,
            });
        }
        for i in 0..cluster.members.len() {
            cluster.spawn(i, &initial, "new")?;
        }
        cluster.wait_for_leader(Duration::from_secs(30))?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize, initial: &str, state: &str) -> Result<(), String> {
        let m = &self.members[i];
        let data = self.dir.join(format!("{}.etcd", m.name));
        let log = fs::File::create(self.dir.join(format!("{}.log", m.name)))
            .map_err(|e| format!("etcd log: {e}"))?;
        let client = format!("http://{}:{}", m.spec.ip, m.spec.client_port);
        let peer = format!("http://{}:{}", m.spec.ip, m.spec.peer_port);
        let mut cmd = match &m.spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", "ftvm-local"])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start etcd (apt-get install etcd-server): {e}"))?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// The client endpoints, `IP:PORT`, of every member.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}:{}", m.spec.ip, m.spec.client_port))
            .collect()
    }

    /// `etcd://` address of the given members (all when `which` is empty).
    pub fn target(&self, which: &[usize], prefix: &str) -> String {
        let eps = self.endpoints();
        let chosen: Vec<String> = if which.is_empty() {
            eps
        } else {
            which.iter().map(|&i| eps[i].clone()).collect()
        };
        format!("etcd://{}/{prefix}", chosen.join(","))
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The index of the current leader, as the running members see it.
    pub fn leader(&self) -> Result<usize, String> {
        let mut statuses = Vec::new();
        for (i, m) in self.members.iter().enumerate() {
            if m.child.is_none() {
                continue;
            }
            if let Some((id, leader)) = self.status(i) {
                statuses.push((i, id, leader));
            }
        }
        for &(_, _, leader) in &statuses {
            if leader == 0 {
                continue;
            }
            if let Some(&(i, _, _)) = statuses.iter().find(|s| s.1 == leader) {
                return Ok(i);
            }
        }
        Err("no member reports a reachable leader".into())
    }

    /// (member id, leader id) as member `i` reports them.
    fn status(&self, i: usize) -> Option<(u64, u64)> {
        let m = &self.members[i];
        let ep = format!("http://{}:{}", m.spec.ip, m.spec.client_port);
        let mut cmd = match &m.spec.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcdctl"]);
                c
            }
            None => Command::new("etcdctl"),
        };
        let out = cmd
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &ep, "--command-timeout=1s"])
            .args(["endpoint", "status", "-w", "json"])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let s = v.get(0)?.get("Status")?;
        let id = s.get("header")?.get("member_id")?.as_u64()?;
        let leader = s.get("leader")?.as_u64()?;
        Some((id, leader))
    }

    /// Waits until some member reports a leader that answers.
    pub fn wait_for_leader(&self, limit: Duration) -> Result<usize, String> {
        let start = Instant::now();
        loop {
            match self.leader() {
                Ok(i) => return Ok(i),
                Err(e) if start.elapsed() > limit => {
                    return Err(format!(
                        "{e} after {} s (logs in {})",
                        limit.as_secs(),
                        self.dir.display()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGKILLs member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOPs member `i` (it keeps its sockets but answers nothing).
    pub fn stop(&self, i: usize) {
        self.signal(i, libc_sig::SIGSTOP);
    }

    /// SIGCONTs member `i`.
    pub fn resume(&self, i: usize) {
        self.signal(i, libc_sig::SIGCONT);
    }

    fn signal(&self, i: usize, sig: &str) {
        if let Some(c) = &self.members[i].child {
            // With a netns the child is `ip netns exec`, which execs etcd:
            // the pid is etcd's either way.
            let _ = Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status();
        }
    }
}

mod libc_sig {
    pub const SIGSTOP: &str = "-STOP";
    pub const SIGCONT: &str = "-CONT";
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.resume(i);
            self.kill(i);
        }
    }
}
