//! The drivers' side of the arbiter: each `TestAndSet` the core asks for
//! runs on a thread of its own against the arbiter — `ftvm storage`'s
//! built-in one (`--arbiter HOST:PORT`) or an etcd cluster (`--arbiter
//! etcd://…`, the same rules as one etcd transaction) — so the machine loop
//! never waits on the network, and comes back as exactly one
//! `FtEvent::Arbiter` answer. Anything but a definite Won or Lost — a
//! refused connection, a timeout, a protocol error — is `Unreachable`, which
//! the core never acts on: a process that cannot reach the arbiter does not
//! go live.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ftvm_etcd::{EtcdArbiter, EtcdTarget};
use ftvm_ft::{ArbiterResult, Generation, Role};
use ftvm_storage::{ArbiterClient, Outcome, VmStatus};

use crate::events::{EventSender, FtEvent, HostEvent};

/// Limit for one test-and-set round trip (the core retries after
/// `arbiter_retry_ms` until its deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Where the arbiter is: `HOST:PORT` of `ftvm storage --arbiter-listen`, or
/// `etcd://HOST:PORT[,HOST:PORT…]/PREFIX` (plain HTTP to etcd).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArbiterAddr {
    Builtin(SocketAddr),
    Etcd(EtcdTarget),
}

impl FromStr for ArbiterAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if EtcdTarget::is_etcd(s) {
            return EtcdTarget::parse(s)
                .map(ArbiterAddr::Etcd)
                .map_err(|e| e.to_string());
        }
        s.parse().map(ArbiterAddr::Builtin).map_err(|e| {
            format!("{s:?} is neither HOST:PORT (an IP address and port) nor etcd://HOST:PORT[,…]/PREFIX: {e}")
        })
    }
}

impl fmt::Display for ArbiterAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArbiterAddr::Builtin(a) => write!(f, "{a}"),
            ArbiterAddr::Etcd(t) => write!(f, "{t}"),
        }
    }
}

/// One arbiter client of either kind, with the calls the drivers use.
#[derive(Debug, Clone)]
pub enum ArbiterBackend {
    Builtin(Arc<ArbiterClient>),
    Etcd(Arc<EtcdArbiter>),
}

impl ArbiterBackend {
    /// A client of `addr`; TLS applies to the built-in arbiter only.
    pub fn new(addr: &ArbiterAddr, tls: Option<ftvm_tls::ClientTls>) -> anyhow::Result<Self> {
        Ok(match addr {
            ArbiterAddr::Builtin(a) => {
                let mut client = ArbiterClient::new(*a);
                if let Some(tls) = tls {
                    client = client.with_tls(tls);
                }
                ArbiterBackend::Builtin(Arc::new(client))
            }
            ArbiterAddr::Etcd(t) => ArbiterBackend::Etcd(Arc::new(EtcdArbiter::new(t.clone())?)),
        })
    }

    pub fn test_and_set(
        &self,
        vm: &str,
        generation: u64,
        claimant: &str,
        timeout: Duration,
    ) -> Result<Outcome, String> {
        match self {
            ArbiterBackend::Builtin(c) => c
                .test_and_set(vm, generation, claimant, timeout)
                .map_err(|e| e.to_string()),
            ArbiterBackend::Etcd(c) => c
                .test_and_set(vm, generation, claimant, timeout)
                .map_err(|e| e.to_string()),
        }
    }

    pub fn query(&self, vm: &str, timeout: Duration) -> Result<VmStatus, String> {
        match self {
            ArbiterBackend::Builtin(c) => c.query(vm, timeout).map_err(|e| e.to_string()),
            ArbiterBackend::Etcd(c) => c.query(vm, timeout).map_err(|e| e.to_string()),
        }
    }

    pub fn advance(&self, vm: &str, generation: u64, timeout: Duration) -> Result<(), String> {
        match self {
            ArbiterBackend::Builtin(c) => c
                .advance(vm, generation, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string()),
            ArbiterBackend::Etcd(c) => c
                .advance(vm, generation, timeout)
                .map(|_| ())
                .map_err(|e| e.to_string()),
        }
    }
}

pub struct Arbiter {
    client: ArbiterBackend,
    addr: ArbiterAddr,
    vm: String,
}

impl Arbiter {
    /// An arbiter at `addr` for `vm`, over TLS when `tls` is given (the
    /// built-in arbiter only; etcd is spoken in plain HTTP).
    pub fn new(
        addr: &ArbiterAddr,
        vm: &str,
        tls: Option<ftvm_tls::ClientTls>,
    ) -> anyhow::Result<Arbiter> {
        Ok(Arbiter {
            client: ArbiterBackend::new(addr, tls)?,
            addr: addr.clone(),
            vm: vm.to_string(),
        })
    }

    pub fn addr(&self) -> &ArbiterAddr {
        &self.addr
    }

    /// Starts generation `generation` of this VM with no holder (a join).
    pub fn advance(&self, generation: u64, timeout: Duration) -> Result<(), String> {
        self.client.advance(&self.vm, generation, timeout)
    }

    /// Starts one test-and-set; its answer arrives on `tx`.
    pub fn test_and_set(&self, generation: Generation, claimant: Role, tx: &EventSender) {
        let client = self.client.clone();
        let vm = self.vm.clone();
        let answer = tx.clone();
        let spawned = thread::Builder::new()
            .name("arbiter".into())
            .spawn(move || {
                let (result, detail) = match client.test_and_set(
                    &vm,
                    generation,
                    claimant.as_str(),
                    REQUEST_TIMEOUT,
                ) {
                    Ok(Outcome::Won { generation }) => (
                        ArbiterResult::Won,
                        format!("won generation {generation} of {vm}"),
                    ),
                    Ok(Outcome::Lost { holder, generation }) => (
                        ArbiterResult::Lost,
                        format!("generation {generation} of {vm} is held by {holder:?}"),
                    ),
                    Err(e) => (ArbiterResult::Unreachable, e),
                };
                let _ = answer.send(HostEvent::Ft(FtEvent::Arbiter(result, detail)));
            });
        if let Err(e) = spawned {
            let _ = tx.send(HostEvent::Ft(FtEvent::Arbiter(
                ArbiterResult::Unreachable,
                format!("cannot start the arbiter thread: {e}"),
            )));
        }
    }

    /// Refuses to start a pair whose generation the arbiter has already
    /// settled (claimed, or superseded by a newer one): its processes could
    /// only ever lose. An unreachable arbiter is only a warning here — the
    /// pair can run, and nobody acts alone without reaching it later.
    pub fn check_generation(&self, generation: Generation) -> anyhow::Result<()> {
        match self.client.query(&self.vm, Duration::from_secs(2)) {
            Ok(s)
                if s.generation > generation
                    || (s.generation == generation && s.holder.is_some()) =>
            {
                anyhow::bail!(
                    "the arbiter at {} has already settled generation {} of VM {:?} (its generation is {}, held by {:?}); start this pair with --generation {}",
                    self.addr(),
                    generation,
                    self.vm,
                    s.generation,
                    s.holder.unwrap_or_default(),
                    s.generation + 1
                )
            }
            Ok(_) => Ok(()),
            Err(e) => {
                eprintln!(
                    "ftvm: warning: the arbiter at {} is not reachable now ({e}); the pair starts, but neither side can act alone until it is",
                    self.addr()
                );
                Ok(())
            }
        }
    }
}
