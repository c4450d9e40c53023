//! The etcd arbiter against real etcd members on loopback: it keeps the
//! built-in arbiter's rules (checked op by op against `ArbiterState`), lets
//! exactly one of several racing claimants win a generation, keeps deciding
//! with one member dead (follower or leader, also while claims race), and
//! refuses to decide (never a win) when its member has no majority. Skipped
//! with a note when `etcd` is not installed (host-deps.sh installs it).

use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use ftvm_etcd::local::LocalCluster;
use ftvm_etcd::{EtcdArbiter, EtcdError, EtcdTarget};
use ftvm_storage::arbiter::ArbiterState;
use ftvm_storage::Outcome;

const T: Duration = Duration::from_secs(10);

fn have_etcd(test: &str) -> bool {
    if Path::new("/usr/bin/etcd").exists() {
        return true;
    }
    eprintln!("note: skipping {test}: etcd is not installed (etcd-server)");
    false
}

/// Ports for test `idx` that other tests of this run (and other runs, by
/// pid) do not use.
fn base_port(idx: u16) -> u16 {
    21000 + (std::process::id() % 500) as u16 * 40 + idx * 8
}

fn cluster(name: &str, idx: u16) -> LocalCluster {
    let dir = std::env::temp_dir().join(format!("ftvm-etcd-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    LocalCluster::start_loopback(dir, 3, base_port(idx)).expect("start a 3-member etcd cluster")
}

fn arbiter(c: &LocalCluster, members: &[usize], prefix: &str) -> EtcdArbiter {
    let target = EtcdTarget::parse(&c.target(members, prefix)).expect("a valid etcd:// target");
    EtcdArbiter::new(target).expect("an etcd arbiter client")
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn etcd_keeps_the_builtin_arbiters_rules() {
    if !have_etcd("etcd_keeps_the_builtin_arbiters_rules") {
        return;
    }
    let c = cluster("rules", 0);
    let a = arbiter(&c, &[0, 1, 2], "/ftvm-rules");
    let mut model = ArbiterState::default();
    let vms = ["vm-a", "vm-b"];
    let claimants = ["left", "right", "joiner"];
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for op in 0..300 {
        let vm = vms[(rng.next() % 2) as usize];
        let current = model.status(vm).generation;
        // Mostly near the current generation, where the rules are subtle.
        let generation = (current + rng.next() % 4).saturating_sub(1);
        if rng.next().is_multiple_of(5) {
            let got = a.advance(vm, generation, T);
            let want = model.advance(vm, generation);
            match (got, want) {
                (Ok(g), Ok(_)) => assert_eq!(g, generation, "op {op}: advance {vm} {generation}"),
                (Err(EtcdError::NotAbove { current, .. }), Err(cur)) => {
                    assert_eq!(current, cur, "op {op}: advance {vm} {generation} refused")
                }
                (got, want) => {
                    panic!("op {op}: advance {vm} {generation}: etcd {got:?}, model {want:?}")
                }
            }
        } else {
            let who = claimants[(rng.next() % 3) as usize];
            let got = a
                .test_and_set(vm, generation, who, T)
                .expect("a decided test-and-set");
            let (want, _) = model.test_and_set(vm, generation, who, 0);
            assert_eq!(got, want, "op {op}: test_and_set {vm} {generation} {who}");
        }
        if op % 50 == 49 {
            for vm in vms {
                assert_eq!(
                    a.query(vm, T).expect("query"),
                    model.status(vm),
                    "op {op}: status of {vm}"
                );
                let got: Vec<_> = a
                    .history(vm, T)
                    .expect("history")
                    .into_iter()
                    .map(|w| (w.generation, w.claimant))
                    .collect();
                let want: Vec<_> = model
                    .history(vm)
                    .into_iter()
                    .map(|w| (w.generation, w.claimant))
                    .collect();
                assert_eq!(got, want, "op {op}: history of {vm}");
            }
        }
    }
}

/// Claimants, each talking to its own member, race for generations
/// `first..=last` of `vm`; returns each generation's winners.
fn race(
    c: &LocalCluster,
    prefix: &str,
    vm: &str,
    first: u64,
    last: u64,
    members: &[usize],
) -> Vec<Vec<String>> {
    let clients: Vec<Arc<EtcdArbiter>> = members
        .iter()
        .map(|&m| Arc::new(arbiter(c, &[m], prefix)))
        .collect();
    let mut winners = vec![Vec::new(); (last + 1) as usize];
    for generation in first..=last {
        let handles: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let a = Arc::clone(a);
                let vm = vm.to_string();
                thread::spawn(move || {
                    (
                        i,
                        a.test_and_set(&vm, generation, &format!("claimant-{i}"), T),
                    )
                })
            })
            .collect();
        for h in handles {
            let (i, r) = h.join().expect("a claimant thread");
            match r {
                Ok(Outcome::Won { generation: g }) => {
                    assert_eq!(g, generation);
                    winners[generation as usize].push(format!("claimant-{i}"));
                }
                Ok(Outcome::Lost { .. }) | Err(_) => {}
            }
        }
    }
    winners
}

#[test]
fn racing_claimants_through_different_members_one_wins() {
    if !have_etcd("racing_claimants_through_different_members_one_wins") {
        return;
    }
    let c = cluster("race", 1);
    let winners = race(&c, "/ftvm-race", "vm", 1, 20, &[0, 1, 2]);
    let a = arbiter(&c, &[0, 1, 2], "/ftvm-race");
    let history = a.history("vm", T).expect("history");
    for generation in 1..=20u64 {
        let w = &winners[generation as usize];
        assert_eq!(w.len(), 1, "generation {generation}: winners {w:?}");
        let recorded: Vec<_> = history
            .iter()
            .filter(|h| h.generation == generation)
            .collect();
        assert_eq!(
            recorded.len(),
            1,
            "generation {generation}: history {recorded:?}"
        );
        assert_eq!(&recorded[0].claimant, &w[0]);
    }
}

#[test]
fn a_dead_member_follower_or_leader_does_not_stop_decisions() {
    if !have_etcd("a_dead_member_follower_or_leader_does_not_stop_decisions") {
        return;
    }
    let mut c = cluster("dead", 2);
    let a = arbiter(&c, &[0, 1, 2], "/ftvm-dead");
    assert_eq!(
        a.test_and_set("vm", 1, "p", T).expect("decided"),
        Outcome::Won { generation: 1 }
    );
    let leader = c
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader");
    let follower = (leader + 1) % 3;
    c.kill(follower);
    assert_eq!(
        a.test_and_set("vm", 2, "b", T)
            .expect("decided without a follower"),
        Outcome::Won { generation: 2 }
    );
    assert!(matches!(
        a.test_and_set("vm", 2, "p", T).expect("decided"),
        Outcome::Lost { .. }
    ));

    // Now the leader too would leave one member: no majority. Restart the
    // picture instead with a fresh cluster and kill its leader while
    // claimants race through the surviving members.
    drop(c);
    let mut c = cluster("leader", 3);
    let leader = c
        .wait_for_leader(Duration::from_secs(30))
        .expect("a leader");
    let survivors: Vec<usize> = (0..3).filter(|&m| m != leader).collect();
    let prefix = "/ftvm-leader";
    let racing = {
        let clients: Vec<Arc<EtcdArbiter>> = survivors
            .iter()
            .map(|&m| Arc::new(arbiter(&c, &[m], prefix)))
            .collect();
        thread::spawn(move || {
            let mut won = vec![Vec::new(); 41];
            for generation in 1..=40u64 {
                let hs: Vec<_> = clients
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        let a = Arc::clone(a);
                        thread::spawn(move || {
                            (i, a.test_and_set("vm", generation, &format!("c{i}"), T))
                        })
                    })
                    .collect();
                for h in hs {
                    if let (i, Ok(Outcome::Won { .. })) = h.join().expect("claimant") {
                        won[generation as usize].push(i);
                    }
                }
            }
            won
        })
    };
    thread::sleep(Duration::from_millis(300));
    c.kill(leader);
    let won = racing.join().expect("the racing thread");
    for (generation, w) in won.iter().enumerate().skip(1) {
        assert!(w.len() <= 1, "generation {generation}: two winners {w:?}");
    }
    // After the election every call decides again, and history agrees.
    let a = arbiter(&c, &survivors, prefix);
    assert_eq!(
        a.test_and_set("vm", 41, "after", T)
            .expect("decided after the election"),
        Outcome::Won { generation: 41 }
    );
    let history = a.history("vm", T).expect("history");
    for generation in 1..=40u64 {
        let n = history
            .iter()
            .filter(|h| h.generation == generation)
            .count();
        assert!(n <= 1, "generation {generation}: {n} wins recorded");
        assert_eq!(
            n,
            won[generation as usize].len(),
            "generation {generation}: recorded vs answered"
        );
    }
}

#[test]
fn a_member_without_a_majority_never_lets_anyone_win() {
    if !have_etcd("a_member_without_a_majority_never_lets_anyone_win") {
        return;
    }
    let c = cluster("minority", 4);
    let a = arbiter(&c, &[0], "/ftvm-minority");
    assert_eq!(
        a.test_and_set("vm", 1, "p", T).expect("decided"),
        Outcome::Won { generation: 1 }
    );
    c.stop(1);
    c.stop(2);
    let r = a.test_and_set("vm", 2, "b", Duration::from_secs(3));
    assert!(r.is_err(), "a minority member decided: {r:?}");
    assert!(
        a.query("vm", Duration::from_secs(2)).is_err(),
        "a minority member answered a linearizable read"
    );
    c.resume(1);
    c.resume(2);
    assert_eq!(
        a.test_and_set("vm", 2, "b", T)
            .expect("decided after the majority is back"),
        Outcome::Won { generation: 2 }
    );
}
