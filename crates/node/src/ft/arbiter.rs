//! The drivers' side of the arbiter: each `TestAndSet` the core asks for
//! runs on a thread of its own against `ftvm storage`'s arbiter (the
//! machine loop never waits on the network) and comes back as exactly one
//! `FtEvent::Arbiter` answer. Anything but a definite Won or Lost — a
//! refused connection, a timeout, a protocol error — is `Unreachable`, which
//! the core never acts on: a process that cannot reach the arbiter does not
//! go live.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ftvm_ft::{ArbiterResult, Generation, Role};
use ftvm_storage::{ArbiterClient, Outcome};

use crate::events::{EventSender, FtEvent, HostEvent};

/// Limit for one test-and-set round trip (the core retries after
/// `arbiter_retry_ms` until its deadline).
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

pub struct Arbiter {
    client: Arc<ArbiterClient>,
    vm: String,
}

impl Arbiter {
    /// An arbiter at `addr` for `vm`, over TLS when `tls` is given.
    pub fn new(addr: SocketAddr, vm: &str, tls: Option<ftvm_tls::ClientTls>) -> Arbiter {
        let mut client = ArbiterClient::new(addr);
        if let Some(tls) = tls {
            client = client.with_tls(tls);
        }
        Arbiter {
            client: Arc::new(client),
            vm: vm.to_string(),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.client.addr()
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
                    Err(e) => (ArbiterResult::Unreachable, e.to_string()),
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
