//! [`EtcdArbiter`]: the built-in arbiter's calls (test-and-set, query,
//! history, advance) with the same signatures and the same rules, kept in
//! etcd. Each call has a deadline; within it the call re-reads and retries
//! as often as it must, which is safe because each is idempotent under the
//! rules (a repeated win by the same claimant is a win again and is not
//! recorded twice). A write is one transaction that compares the state key's
//! revision with the one read, so two claimants racing through different
//! members cannot both win: the second transaction fails its compare,
//! re-reads, and loses under the rules. Reads are linearizable and requests
//! require a leader, so a member cut off from the majority answers nothing.
//! The async client runs on a small runtime owned by this struct; callers
//! stay synchronous, like the built-in [`ftvm_storage::ArbiterClient`].

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse,
};
use ftvm_storage::arbiter::wire::check_name;
use ftvm_storage::{Outcome, VmRecord, VmStatus, Win};

use crate::record::{State, WinValue};
use crate::{keys, EtcdError, EtcdTarget};

/// Why one attempt did not settle the call.
enum Retry {
    /// The cluster did not answer (or answered with an error): try again.
    Cluster(String),
    /// The state key changed between the read and the write: re-read.
    Raced,
}

/// A client of the etcd arbiter; cheap to share between threads.
pub struct EtcdArbiter {
    target: EtcdTarget,
    runtime: tokio::runtime::Runtime,
    client: Mutex<Option<Client>>,
}

impl std::fmt::Debug for EtcdArbiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EtcdArbiter({})", self.target)
    }
}

/// What one read of a VM's state key found.
struct Read {
    state: State,
    /// The key's mod revision, 0 if it does not exist yet.
    revision: i64,
}

impl EtcdArbiter {
    /// A client of the cluster in `target`; connects on first use.
    pub fn new(target: EtcdTarget) -> Result<EtcdArbiter, EtcdError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("etcd-arbiter")
            .enable_all()
            .build()
            .map_err(EtcdError::Runtime)?;
        Ok(EtcdArbiter {
            target,
            runtime,
            client: Mutex::new(None),
        })
    }

    /// The `etcd://` address this client talks to.
    pub fn target(&self) -> &EtcdTarget {
        &self.target
    }

    /// Claims `generation` of `vm` for `claimant`. Only `Ok(Outcome::Won)`
    /// allows the caller to act alone; an error means "do not go live".
    pub fn test_and_set(
        &self,
        vm: &str,
        generation: u64,
        claimant: &str,
        timeout: Duration,
    ) -> Result<Outcome, EtcdError> {
        check_name("vm", vm).map_err(EtcdError::Invalid)?;
        check_name("claimant", claimant).map_err(EtcdError::Invalid)?;
        self.retrying(timeout, |client| async move {
            let read = self.read(&client, vm).await?;
            let mut rec = read.state.to_record();
            let (outcome, changed) = rec.test_and_set(generation, claimant, unix_ms());
            if !changed {
                return Ok(outcome);
            }
            let win = rec.wins.last().map(WinValue::from_win);
            let mut puts = vec![TxnOp::put(
                keys::state(&self.target.prefix, vm),
                State::from_record(&rec).encode(),
                None,
            )];
            if let Some(w) = win {
                puts.push(TxnOp::put(
                    keys::win(&self.target.prefix, vm, generation),
                    w.encode(),
                    None,
                ));
            }
            self.write(&client, vm, read.revision, puts).await?;
            Ok(outcome)
        })
    }

    /// The arbiter's view of `vm` (generation 0, no holder, if never seen).
    pub fn query(&self, vm: &str, timeout: Duration) -> Result<VmStatus, EtcdError> {
        check_name("vm", vm).map_err(EtcdError::Invalid)?;
        self.retrying(timeout, |mut client| async move {
            // One transaction, so the state and the count are of one revision.
            let txn = Txn::new().and_then([
                TxnOp::get(keys::state(&self.target.prefix, vm), None),
                TxnOp::get(
                    keys::wins(&self.target.prefix, vm),
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            ]);
            let resp = client.txn(txn).await.map_err(cluster)?;
            let mut gets = resp.op_responses().into_iter().filter_map(|r| match r {
                TxnOpResponse::Get(g) => Some(g),
                _ => None,
            });
            let (Some(state), Some(count)) = (gets.next(), gets.next()) else {
                return Err(Retry::Cluster(
                    "etcd answered the query without its reads".into(),
                ));
            };
            let state = match state.kvs().first() {
                Some(kv) => self.decode_state(vm, kv.value())?,
                None => State {
                    generation: 0,
                    holder: None,
                },
            };
            Ok(VmStatus {
                generation: state.generation,
                holder: state.holder,
                history_count: count.count().max(0) as u64,
            })
        })
    }

    /// Every win recorded for `vm`, oldest first.
    pub fn history(&self, vm: &str, timeout: Duration) -> Result<Vec<Win>, EtcdError> {
        check_name("vm", vm).map_err(EtcdError::Invalid)?;
        self.retrying(timeout, |mut client| async move {
            let prefix = keys::wins(&self.target.prefix, vm);
            let resp = client
                .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
                .await
                .map_err(cluster)?;
            let mut wins = Vec::with_capacity(resp.kvs().len());
            for kv in resp.kvs() {
                let w = WinValue::decode(kv.value()).map_err(|why| {
                    Retry::Cluster(
                        EtcdError::Corrupt {
                            target: self.target.to_string(),
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            why,
                        }
                        .to_string(),
                    )
                })?;
                wins.push(w.to_win());
            }
            Ok(wins)
        })
    }

    /// Starts generation `generation` of `vm` with no holder; every claim for
    /// an older generation loses from now on.
    pub fn advance(&self, vm: &str, generation: u64, timeout: Duration) -> Result<u64, EtcdError> {
        check_name("vm", vm).map_err(EtcdError::Invalid)?;
        let refused = Mutex::new(None);
        let result = self.retrying(timeout, |client| {
            let refused = &refused;
            async move {
                let read = self.read(&client, vm).await?;
                let mut rec: VmRecord = read.state.to_record();
                match rec.advance(generation) {
                    Err(current) => {
                        if let Ok(mut r) = refused.lock() {
                            *r = Some(current);
                        }
                        Ok(None)
                    }
                    Ok(false) => Ok(Some(generation)),
                    Ok(true) => {
                        let put = TxnOp::put(
                            keys::state(&self.target.prefix, vm),
                            State::from_record(&rec).encode(),
                            None,
                        );
                        self.write(&client, vm, read.revision, vec![put]).await?;
                        Ok(Some(generation))
                    }
                }
            }
        })?;
        match result {
            Some(g) => Ok(g),
            None => Err(EtcdError::NotAbove {
                target: self.target.to_string(),
                vm: vm.to_string(),
                current: refused.lock().ok().and_then(|r| *r).unwrap_or(generation),
            }),
        }
    }

    /// Reads the VM's state key (linearizably).
    async fn read(&self, client: &Client, vm: &str) -> Result<Read, Retry> {
        let mut client = client.clone();
        let resp = client
            .get(keys::state(&self.target.prefix, vm), None)
            .await
            .map_err(cluster)?;
        match resp.kvs().first() {
            Some(kv) => Ok(Read {
                state: self.decode_state(vm, kv.value())?,
                revision: kv.mod_revision(),
            }),
            None => Ok(Read {
                state: State {
                    generation: 0,
                    holder: None,
                },
                revision: 0,
            }),
        }
    }

    /// Applies `puts` only if the state key is still at `revision` (absent
    /// when 0); a failed compare is [`Retry::Raced`].
    async fn write(
        &self,
        client: &Client,
        vm: &str,
        revision: i64,
        puts: Vec<TxnOp>,
    ) -> Result<(), Retry> {
        let key = keys::state(&self.target.prefix, vm);
        let guard = if revision == 0 {
            Compare::create_revision(key, CompareOp::Equal, 0)
        } else {
            Compare::mod_revision(key, CompareOp::Equal, revision)
        };
        let mut client = client.clone();
        let resp = client
            .txn(Txn::new().when([guard]).and_then(puts))
            .await
            .map_err(cluster)?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(Retry::Raced)
        }
    }

    fn decode_state(&self, vm: &str, bytes: &[u8]) -> Result<State, Retry> {
        State::decode(bytes).map_err(|why| {
            Retry::Cluster(
                EtcdError::Corrupt {
                    target: self.target.to_string(),
                    key: keys::state(&self.target.prefix, vm),
                    why,
                }
                .to_string(),
            )
        })
    }

    /// Runs `attempt` until it settles or `timeout` passes. A race re-reads
    /// at once; a cluster error waits a little (20 ms, doubling to 200 ms).
    fn retrying<'a, T, F, Fut>(&'a self, timeout: Duration, attempt: F) -> Result<T, EtcdError>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Retry>> + 'a,
    {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut pause = Duration::from_millis(20);
        let mut last = String::from("no attempt finished");
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(EtcdError::Timeout {
                    target: self.target.to_string(),
                    ms: timeout.as_millis(),
                    last,
                });
            }
            let left = deadline - now;
            let outcome = self.runtime.block_on(async {
                let client = match self.client_now(left).await {
                    Ok(c) => c,
                    Err(e) => return Err(Retry::Cluster(e)),
                };
                match tokio::time::timeout(left, attempt(client)).await {
                    Ok(r) => r,
                    Err(_) => Err(Retry::Cluster("no answer from a quorum in time".into())),
                }
            });
            match outcome {
                Ok(v) => return Ok(v),
                Err(Retry::Raced) => {
                    last = "the state changed under a write; re-read".into();
                }
                Err(Retry::Cluster(why)) => {
                    last = why;
                    let sleep = pause.min(deadline.saturating_duration_since(Instant::now()));
                    std::thread::sleep(sleep);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
            }
        }
    }

    /// The connected client, made on first use (the channel connects lazily
    /// and reconnects by itself).
    async fn client_now(&self, left: Duration) -> Result<Client, String> {
        if let Some(c) = self
            .client
            .lock()
            .map_err(|_| "client lock poisoned")?
            .as_ref()
        {
            return Ok(c.clone());
        }
        let opts = ConnectOptions::new()
            .with_connect_timeout(left.min(Duration::from_millis(500)))
            .with_require_leader(true);
        let c = Client::connect(&self.target.endpoints, Some(opts))
            .await
            .map_err(|e| format!("cannot set up the etcd client: {e}"))?;
        if let Ok(mut g) = self.client.lock() {
            *g = Some(c.clone());
        }
        Ok(c)
    }
}

fn cluster(e: etcd_client::Error) -> Retry {
    Retry::Cluster(e.to_string())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
