//! The arbiter over the network: exactly one winner per (VM, generation)
//! under concurrent test-and-set, stale generations lose, ADVANCE fences out
//! older pairs, the state survives a restart of the server, a corrupt state
//! file is refused, a second server cannot take the same directory, and an
//! unreachable or silent arbiter is an error, never a win.

mod common;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::*;
use ftvm_storage::arbiter::STATE_FILE;
use ftvm_storage::{ArbiterClient, ArbiterError, Outcome, Shutdown, StorageError, StorageServer};

const T: Duration = Duration::from_secs(5);

#[test]
fn concurrent_claims_have_exactly_one_winner_per_generation() {
    let dir = TempDir::new("arb-race");
    let srv = start(dir.path());
    let addr = srv.arbiter_addr();
    for generation in 1..=3u64 {
        let n = 24;
        let barrier = Arc::new(Barrier::new(n));
        let threads: Vec<_> = (0..n)
            .map(|i| {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    let c = ArbiterClient::connect(addr).unwrap();
                    barrier.wait();
                    let me = format!("claimant-{i}");
                    let first = c.test_and_set("vm-race", generation, &me, T).unwrap();
                    // Asking again must give the same answer.
                    let again = c.test_and_set("vm-race", generation, &me, T).unwrap();
                    assert_eq!(first.is_won(), again.is_won());
                    (me, first)
                })
            })
            .collect();
        let results: Vec<(String, Outcome)> =
            threads.into_iter().map(|t| t.join().unwrap()).collect();
        let winners: Vec<&String> = results
            .iter()
            .filter(|(_, o)| o.is_won())
            .map(|(me, _)| me)
            .collect();
        assert_eq!(winners.len(), 1, "generation {generation}: {results:?}");
        let winner = winners[0].clone();
        for (_, o) in &results {
            if let Outcome::Lost {
                holder,
                generation: g,
            } = o
            {
                assert_eq!(holder, &winner);
                assert_eq!(*g, generation);
            }
        }
        let status = ArbiterClient::new(addr).query("vm-race", T).unwrap();
        assert_eq!(status.generation, generation);
        assert_eq!(status.holder.as_deref(), Some(winner.as_str()));
    }
    let history = ArbiterClient::new(addr).history("vm-race", T).unwrap();
    assert_eq!(history.len(), 3, "exactly one recorded win per generation");
    assert_eq!(
        history.iter().map(|w| w.generation).collect::<Vec<_>>(),
        [1, 2, 3]
    );
}

#[test]
fn concurrent_claims_on_many_vms() {
    let dir = TempDir::new("arb-many");
    let srv = start(dir.path());
    let addr = srv.arbiter_addr();
    let threads: Vec<_> = (0..16)
        .map(|i| {
            std::thread::spawn(move || {
                let c = ArbiterClient::new(addr);
                (0..8)
                    .filter(|vm| {
                        c.test_and_set(&format!("vm{vm}"), 1, &format!("c{i}"), T)
                            .unwrap()
                            .is_won()
                    })
                    .count()
            })
        })
        .collect();
    let wins: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(wins, 8);
    let c = ArbiterClient::new(addr);
    for vm in 0..8 {
        assert_eq!(c.query(&format!("vm{vm}"), T).unwrap().history_count, 1);
    }
}

#[test]
fn stale_generations_lose_and_advance_fences() {
    let dir = TempDir::new("arb-stale");
    let srv = start(dir.path());
    let c = ArbiterClient::connect(srv.arbiter_addr()).unwrap();
    assert_eq!(
        c.test_and_set("vm", 4, "primary-a", T).unwrap(),
        Outcome::Won { generation: 4 }
    );
    // An old pair's process, at generation 3, can never win.
    assert_eq!(
        c.test_and_set("vm", 3, "backup-old", T).unwrap(),
        Outcome::Lost {
            holder: "primary-a".into(),
            generation: 4
        }
    );
    // The other side of generation 4 loses; the winner asking again wins.
    assert!(!c.test_and_set("vm", 4, "backup-a", T).unwrap().is_won());
    assert!(c.test_and_set("vm", 4, "primary-a", T).unwrap().is_won());

    // Re-protection: a new pair is formed at generation 5.
    assert_eq!(c.advance("vm", 5, T).unwrap(), 5);
    assert_eq!(
        c.advance("vm", 5, T).unwrap(),
        5,
        "a retried advance is accepted"
    );
    let s = c.query("vm", T).unwrap();
    assert_eq!(
        (s.generation, s.holder.clone(), s.history_count),
        (5, None, 1)
    );
    match c.advance("vm", 5 - 1, T) {
        Err(ArbiterError::Refused { code, .. }) => {
            assert_eq!(code, ftvm_storage::arbiter::wire::E_STALE)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Generation 4's winner is fenced out now.
    assert_eq!(
        c.test_and_set("vm", 4, "primary-a", T).unwrap(),
        Outcome::Lost {
            holder: String::new(),
            generation: 5
        }
    );
    assert!(c.test_and_set("vm", 5, "backup-b", T).unwrap().is_won());
    match c.advance("vm", 5, T) {
        Err(ArbiterError::Refused { .. }) => {}
        other => panic!("advance to a claimed generation must be refused: {other:?}"),
    }
    // A higher generation starts a new round without an advance.
    assert!(c.test_and_set("vm", 9, "primary-c", T).unwrap().is_won());
    assert_eq!(c.query("vm", T).unwrap().history_count, 3);

    // Names are checked on both sides.
    assert!(matches!(
        c.test_and_set("", 1, "x", T),
        Err(ArbiterError::Invalid(_))
    ));
    assert!(matches!(
        c.test_and_set("vm", 1, &"x".repeat(300), T),
        Err(ArbiterError::Invalid(_))
    ));
}

#[test]
fn state_survives_a_restart() {
    let dir = TempDir::new("arb-restart");
    let srv = start(dir.path());
    let c = ArbiterClient::new(srv.arbiter_addr());
    assert!(c.test_and_set("vm1", 1, "backup", T).unwrap().is_won());
    assert!(c.test_and_set("vm1", 2, "primary2", T).unwrap().is_won());
    c.advance("vm2", 10, T).unwrap();
    srv.stop();

    let srv = start(dir.path());
    let c = ArbiterClient::new(srv.arbiter_addr());
    let s = c.query("vm1", T).unwrap();
    assert_eq!(s.generation, 2);
    assert_eq!(s.holder.as_deref(), Some("primary2"));
    assert_eq!(s.history_count, 2);
    assert!(!c.test_and_set("vm1", 2, "backup2", T).unwrap().is_won());
    assert!(c.test_and_set("vm1", 2, "primary2", T).unwrap().is_won());
    assert!(!c.test_and_set("vm1", 1, "backup", T).unwrap().is_won());
    assert_eq!(c.query("vm2", T).unwrap().generation, 10);
    let h = c.history("vm1", T).unwrap();
    assert_eq!(
        h.iter()
            .map(|w| (w.generation, w.claimant.as_str()))
            .collect::<Vec<_>>(),
        [(1, "backup"), (2, "primary2")]
    );
    assert!(h.iter().all(|w| w.at_unix_ms > 1_600_000_000_000));
}

#[test]
fn a_corrupt_state_file_is_refused() {
    let dir = TempDir::new("arb-corrupt");
    let srv = start(dir.path());
    ArbiterClient::new(srv.arbiter_addr())
        .test_and_set("vm", 1, "a", T)
        .unwrap();
    srv.stop();
    let path = dir.path().join(STATE_FILE);
    let good = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("flipped bit", {
            let mut b = good.clone();
            let i = b.len() / 2;
            b[i] ^= 0x10;
            b
        }),
        ("truncated", good[..good.len() - 3].to_vec()),
        ("empty", Vec::new()),
        (
            "garbage",
            b"this is not an arbiter state file at all".to_vec(),
        ),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        match StorageServer::start(config(dir.path()), Shutdown::new()) {
            Err(StorageError::CorruptState { reason, .. }) => {
                eprintln!("{what}: refused ({reason})");
            }
            Err(other) => panic!("{what}: wrong error {other}"),
            Ok(_) => panic!("{what}: a corrupt state file was accepted"),
        }
        // The file is left as it was, for a human to look at.
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }
    std::fs::write(&path, &good).unwrap();
    let srv = start(dir.path());
    assert_eq!(
        ArbiterClient::new(srv.arbiter_addr())
            .query("vm", T)
            .unwrap()
            .holder
            .as_deref(),
        Some("a")
    );
}

#[test]
fn one_server_per_directory() {
    let dir = TempDir::new("arb-lock");
    let _srv = start(dir.path());
    match StorageServer::start(config(dir.path()), Shutdown::new()) {
        Err(StorageError::AlreadyServed { .. }) => {}
        other => panic!("expected AlreadyServed, got {other:?}"),
    }
}

#[test]
fn unreachable_or_silent_arbiter_is_an_error_not_a_win() {
    init_tracing();
    // Nothing listens here.
    let dead: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        ArbiterClient::connect_timeout(dead, Duration::from_millis(200)),
        Err(ArbiterError::Unreachable { .. })
    ));
    let started = Instant::now();
    let r = ArbiterClient::new(dead).test_and_set("vm", 1, "me", Duration::from_millis(300));
    assert!(matches!(r, Err(ArbiterError::Unreachable { .. })), "{r:?}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // A listener that accepts and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        silent.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            if let Ok((s, _)) = silent.accept() {
                conns.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let r = ArbiterClient::new(addr).test_and_set("vm", 1, "me", Duration::from_millis(400));
    assert!(matches!(r, Err(ArbiterError::Timeout { .. })), "{r:?}");
    held.join().unwrap();
}

#[test]
fn client_rides_out_a_restart_within_its_deadline() {
    let dir = TempDir::new("arb-client-restart");
    let srv = start(dir.path());
    let addr = srv.arbiter_addr();
    let c = ArbiterClient::connect(addr).unwrap();
    assert!(c.test_and_set("vm", 1, "p", T).unwrap().is_won());
    srv.stop();
    let d2 = dir.path().to_path_buf();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        let mut cfg = config(&d2);
        cfg.arbiter_listen = addr;
        start_with(cfg)
    });
    // The cached connection is dead; the call reconnects once the server is back.
    let o = c
        .test_and_set("vm", 1, "p", Duration::from_secs(10))
        .unwrap();
    assert!(o.is_won());
    let claimants: HashSet<String> = c
        .history("vm", T)
        .unwrap()
        .into_iter()
        .map(|w| w.claimant)
        .collect();
    assert_eq!(claimants.len(), 1);
    drop(restarter.join().unwrap());
}
