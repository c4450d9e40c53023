//! Random event sequences thrown at each core on its own: arbitrary (but
//! well-formed) frames of the right or wrong generation, connections coming
//! and going, time jumping, arbiter answers nobody asked for, driver calls
//! out of turn. The cores must never panic, and whatever they accept, the
//! safety rules hold: a primary releases an output while paired only once
//! an accepted Ack or Hello covered its entry, goes alone only after Won,
//! and a backup goes live only after Won and a complete drain; nothing
//! happens after Halt.

use ftvm_ft::wire::{encode_entries, Frame, GoodbyeReason, Hello, Message};
use ftvm_ft::{
    ArbiterResult, Backup, BackupAction, Config, Primary, PrimaryAction, Role, PROTOCOL_VERSION,
};
use proptest::prelude::*;

const GEN: u64 = 9;

fn cfg() -> Config {
    let mut c = Config::new("vm", GEN, [3; 32]);
    c.startup_timeout_ms = 600;
    c.arbiter_deadline_ms = 400;
    c
}

#[derive(Debug, Clone)]
enum Ev {
    Tick(u64),
    Connect,
    Disconnect,
    Hello { seq: u64, wrong: u8 },
    Ack { seq: u64, icount: u64 },
    Heartbeat { icount: u64 },
    Log { first_seq: u64, n: u8, icount: u64 },
    Garbage(Vec<u8>),
    Goodbye(u8),
    WrongGen,
    Arbiter(u8),
    Entry { icount: u64, kind: u8 },
    Output { dep: u64 },
    Progress(u64),
    Executed { seq: u64, icount: u64 },
    NextEntry,
    Drained,
    Leave,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u64..300).prop_map(Ev::Tick),
        1 => Just(Ev::Connect),
        1 => Just(Ev::Disconnect),
        2 => (0u64..20, 0u8..6).prop_map(|(seq, wrong)| Ev::Hello { seq, wrong }),
        3 => (0u64..20, 0u64..2000).prop_map(|(seq, icount)| Ev::Ack { seq, icount }),
        1 => (0u64..2000).prop_map(|icount| Ev::Heartbeat { icount }),
        3 => (0u64..20, 1u8..4, 0u64..2000).prop_map(|(first_seq, n, icount)| Ev::Log { first_seq, n, icount }),
        1 => proptest::collection::vec(any::<u8>(), 1..20).prop_map(Ev::Garbage),
        1 => (0u8..3).prop_map(Ev::Goodbye),
        1 => Just(Ev::WrongGen),
        2 => (0u8..3).prop_map(Ev::Arbiter),
        3 => (0u64..2000, 0u8..3).prop_map(|(icount, kind)| Ev::Entry { icount, kind }),
        3 => (0u64..20).prop_map(|dep| Ev::Output { dep }),
        2 => (0u64..2000).prop_map(Ev::Progress),
        2 => (0u64..20, 0u64..2000).prop_map(|(seq, icount)| Ev::Executed { seq, icount }),
        2 => Just(Ev::NextEntry),
        1 => Just(Ev::Drained),
        1 => Just(Ev::Leave),
    ]
}

fn frame(message: Message) -> Frame {
    Frame {
        generation: GEN,
        message,
    }
}

fn hello(role: Role, seq: u64, wrong: u8) -> Frame {
    let mut h = Hello {
        version: PROTOCOL_VERSION,
        vm: "vm".into(),
        role,
        machine_hash: [3; 32],
        seq,
        log_header: vec![],
    };
    match wrong {
        1 => h.version += 1,
        2 => h.vm = "other".into(),
        3 => h.machine_hash = [4; 32],
        4 => h.role = h.role.peer(),
        _ => {}
    }
    frame(Message::Hello(h))
}

fn message(e: &Ev, peer: Role) -> Option<Frame> {
    Some(match e {
        Ev::Hello { seq, wrong } => hello(peer, *seq, *wrong),
        Ev::Ack { seq, icount } => frame(Message::Ack {
            seq: *seq,
            executed_icount: *icount,
        }),
        Ev::Heartbeat { icount } => frame(Message::Heartbeat {
            now_ms: 0,
            icount: *icount,
        }),
        Ev::Log {
            first_seq,
            n,
            icount,
        } => {
            let mut entries = Vec::new();
            encode_entries(
                (0..*n).map(|i| (icount + u64::from(i), 1u8, &b"x"[..])),
                &mut entries,
            )
            .expect("valid entries");
            frame(Message::Log {
                first_seq: (*first_seq).max(1),
                entries,
            })
        }
        Ev::Garbage(bytes) => frame(Message::Log {
            first_seq: 1,
            entries: bytes.clone(),
        }),
        Ev::Goodbye(r) => frame(Message::Goodbye {
            reason: [
                GoodbyeReason::PowerOff,
                GoodbyeReason::Leaving,
                GoodbyeReason::Error,
            ][*r as usize],
            detail: String::new(),
        }),
        Ev::WrongGen => Frame {
            generation: GEN + 1,
            message: Message::Ack {
                seq: 100,
                executed_icount: 0,
            },
        },
        _ => return None,
    })
}

fn arbiter(r: u8) -> ArbiterResult {
    [
        ArbiterResult::Won,
        ArbiterResult::Lost,
        ArbiterResult::Unreachable,
    ][r as usize]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn primary_stays_safe(events in proptest::collection::vec(ev(), 1..120)) {
        let mut p = Primary::new(cfg(), 0).unwrap();
        let mut now = 0;
        let mut acked = 0u64; // highest seq an accepted Ack/Hello covered
        let mut won = false;
        let mut alone = false;
        let mut halted = false;
        let mut outputs: Vec<u64> = Vec::new(); // depends_on per output id
        let mut next_release = 0u64;
        for e in &events {
            match e {
                Ev::Tick(dt) => { now += dt; p.on_tick(now); }
                Ev::Connect => { let _ = p.on_connected(now); }
                Ev::Disconnect => p.on_disconnect(now),
                Ev::Arbiter(r) => {
                    let r = arbiter(*r);
                    if p.on_arbiter_result(now, r).is_ok() && r == ArbiterResult::Won {
                        won = true;
                    }
                }
                Ev::Entry { icount, kind } => { let _ = p.on_log_entry(*icount, *kind + 1, b"e"); }
                Ev::Output { dep } => {
                    if p.on_output(outputs.len() as u64, *dep).is_ok() {
                        outputs.push(*dep);
                    }
                }
                Ev::Progress(i) => p.on_progress(now, *i),
                Ev::Leave => { let _ = p.leave(now, GoodbyeReason::Leaving); }
                other => {
                    if let Some(f) = message(other, Role::Backup) {
                        let covers = match &f.message {
                            Message::Ack { seq, .. } => Some(*seq),
                            Message::Hello(h) => Some(h.seq),
                            _ => None,
                        };
                        if p.on_message(now, f).is_ok() {
                            if let Some(s) = covers { acked = acked.max(s); }
                        }
                    }
                }
            }
            while let Some(a) = p.poll_action() {
                prop_assert!(!halted, "action after Halt: {:?}", a);
                match a {
                    PrimaryAction::ReleaseOutput(id) => {
                        prop_assert_eq!(id, next_release);
                        next_release += 1;
                        let dep = outputs[id as usize];
                        prop_assert!(alone || dep <= acked, "output {} (entry {}) released with {} acked", id, dep, acked);
                    }
                    PrimaryAction::GoAlone => { prop_assert!(won); alone = true; }
                    PrimaryAction::Halt { .. } => halted = true,
                    PrimaryAction::TestAndSet { generation, claimant } => {
                        prop_assert_eq!(generation, GEN);
                        prop_assert_eq!(claimant, Role::Primary);
                    }
                    PrimaryAction::Send(f) => {
                        prop_assert_eq!(f.generation, GEN);
                        prop_assert!(f.to_bytes().is_ok());
                    }
                    _ => {}
                }
            }
        }
    }

    #[test]
    fn backup_stays_safe(events in proptest::collection::vec(ev(), 1..120)) {
        let mut b = Backup::new(cfg(), 0).unwrap();
        let mut now = 0;
        let mut won = false;
        let mut halted = false;
        let mut live = false;
        let mut delivered = 0u64;
        for e in &events {
            match e {
                Ev::Tick(dt) => { now += dt; b.on_tick(now); }
                Ev::Connect => { let _ = b.on_connected(now); }
                Ev::Disconnect => b.on_disconnect(now),
                Ev::Arbiter(r) => {
                    let r = arbiter(*r);
                    if b.on_arbiter_result(now, r).is_ok() && r == ArbiterResult::Won {
                        won = true;
                    }
                }
                Ev::NextEntry => {
                    if let Some(e) = b.next_entry() {
                        prop_assert_eq!(e.seq, delivered + 1, "entries in order");
                        delivered = e.seq;
                    }
                }
                Ev::Executed { seq, icount } => { let _ = b.on_executed(now, *seq, *icount); }
                Ev::Drained => { let _ = b.on_drained(now); }
                Ev::Leave => { let _ = b.leave(now); }
                Ev::Entry { .. } | Ev::Output { .. } | Ev::Progress(_) => {}
                other => {
                    if let Some(f) = message(other, Role::Primary) {
                        let _ = b.on_message(now, f);
                    }
                }
            }
            while let Some(a) = b.poll_action() {
                prop_assert!(!halted && !live, "action after Halt/GoLive: {:?}", a);
                match a {
                    BackupAction::GoLive => {
                        prop_assert!(won);
                        let s = b.status();
                        prop_assert_eq!(s.executed_seq, s.log_seq, "live before executing everything");
                        live = true;
                    }
                    BackupAction::Halt { .. } => halted = true,
                    BackupAction::TestAndSet { generation, claimant } => {
                        prop_assert_eq!(generation, GEN);
                        prop_assert_eq!(claimant, Role::Backup);
                        let s = b.status();
                        prop_assert_eq!(s.executed_seq, s.log_seq, "arbiter asked before draining");
                    }
                    BackupAction::Send(f) => {
                        prop_assert_eq!(f.generation, GEN);
                        prop_assert!(f.to_bytes().is_ok());
                        if let Message::Ack { seq, .. } = f.message {
                            prop_assert!(seq <= b.status().log_seq);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}
