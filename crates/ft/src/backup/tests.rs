use super::*;
use crate::wire::encode_entries;
use crate::PROTOCOL_VERSION;

fn cfg() -> Config {
    let mut c = Config::new("vm", 4, [1; 32]);
    // The default timings (heartbeat 10 ms, failure and handshake timeout
    // 100 ms, arbiter retry 100 ms), with a short startup grace.
    assert_eq!((c.heartbeat_interval_ms, c.failure_timeout_ms), (10, 100));
    c.startup_timeout_ms = 1000;
    c
}

fn frame(message: Message) -> Frame {
    Frame {
        generation: 4,
        message,
    }
}

fn primary_hello(seq: Seq) -> Frame {
    frame(Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        vm: "vm".into(),
        role: Role::Primary,
        machine_hash: [1; 32],
        seq,
        log_header: b"hdr".to_vec(),
    }))
}

fn log(first_seq: Seq, icounts: &[u64]) -> Frame {
    let mut entries = Vec::new();
    encode_entries(icounts.iter().map(|&i| (i, 1u8, &b"p"[..])), &mut entries).unwrap();
    frame(Message::Log { first_seq, entries })
}

fn drain(b: &mut Backup) -> Vec<BackupAction> {
    std::iter::from_fn(|| b.poll_action()).collect()
}

fn acks(actions: &[BackupAction]) -> Vec<(Seq, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            BackupAction::Send(Frame {
                message:
                    Message::Ack {
                        seq,
                        executed_icount,
                    },
                ..
            }) => Some((*seq, *executed_icount)),
            _ => None,
        })
        .collect()
}

fn following() -> Backup {
    let mut b = Backup::new(cfg(), 0).unwrap();
    b.on_connected(0).unwrap();
    b.on_message(0, primary_hello(0)).unwrap();
    drain(&mut b);
    b
}

/// Executes every pending entry at its icount.
fn execute_all(b: &mut Backup, now: u64) {
    while let Some(e) = b.next_entry() {
        b.on_executed(now, e.seq, e.icount).unwrap();
    }
}

#[test]
fn handshake_checks_and_keeps_the_log_header() {
    let mut b = Backup::new(cfg(), 0).unwrap();
    b.on_connected(0).unwrap();
    let a = drain(&mut b);
    assert!(matches!(
        &a[..],
        [BackupAction::Send(Frame {
            message: Message::Hello(Hello {
                role: Role::Backup,
                seq: 0,
                ..
            }),
            ..
        })]
    ));
    assert!(matches!(
        b.on_message(0, log(1, &[1])),
        Err(FtError::ExpectedHello { .. })
    ));
    let mut wrong = primary_hello(0);
    wrong.generation = 5;
    assert!(matches!(
        b.on_message(0, wrong),
        Err(FtError::WrongGeneration { .. })
    ));
    b.on_message(0, primary_hello(0)).unwrap();
    assert_eq!(b.log_header(), Some(&b"hdr"[..]));
    assert!(matches!(
        b.on_message(0, primary_hello(0)),
        Err(FtError::UnexpectedMessage { .. })
    ));
}

#[test]
fn acks_on_receipt_and_hands_out_entries_in_order() {
    let mut b = following();
    b.on_message(1, log(1, &[10, 20])).unwrap();
    b.on_message(1, log(3, &[20, 35])).unwrap();
    // One coalesced ack for both messages.
    assert_eq!(acks(&drain(&mut b)), vec![(4, 0)]);
    assert_eq!(b.horizon(), 35);
    let e = b.next_entry().unwrap();
    assert_eq!(
        (e.seq, e.icount, e.kind, &e.payload[..]),
        (1, 10, 1, &b"p"[..])
    );
    b.on_executed(2, 1, 10).unwrap();
    assert_eq!(b.status().executed_seq, 1);
    // Progress is reported even with nothing new to acknowledge.
    b.on_tick(20);
    assert_eq!(acks(&drain(&mut b)), vec![(4, 10)]);
}

#[test]
fn duplicates_are_skipped_and_gaps_refused() {
    let mut b = following();
    b.on_message(1, log(1, &[10, 20, 30])).unwrap();
    // A resend overlapping what it has.
    b.on_message(1, log(2, &[20, 30, 40])).unwrap();
    assert_eq!(b.status().log_seq, 4);
    assert_eq!(b.pending_entries(), 4);
    // Pure duplicates change nothing.
    b.on_message(1, log(1, &[10])).unwrap();
    assert_eq!(b.status().log_seq, 4);
    assert!(matches!(
        b.on_message(1, log(6, &[50])),
        Err(FtError::LogGap {
            expected: 5,
            got: 6
        })
    ));
    assert!(matches!(
        b.on_message(1, log(5, &[39])),
        Err(FtError::IcountBackwards { .. })
    ));
    // A refused message changed nothing.
    assert_eq!(b.status().log_seq, 4);
    let garbage = frame(Message::Log {
        first_seq: 5,
        entries: vec![1, 2, 3],
    });
    assert!(matches!(
        b.on_message(1, garbage),
        Err(FtError::BadBatch(_))
    ));
}

#[test]
fn execution_reports_are_checked() {
    let mut b = following();
    b.on_message(1, log(1, &[10, 20])).unwrap();
    assert!(matches!(
        b.on_executed(1, 1, 10),
        Err(FtError::ExecutedNotDelivered { .. })
    ));
    let e = b.next_entry().unwrap();
    assert!(matches!(
        b.on_executed(1, e.seq, 9),
        Err(FtError::ExecutedBackwards { .. })
    ));
    b.on_executed(1, 1, 15).unwrap();
    assert!(matches!(
        b.on_executed(1, 1, 14),
        Err(FtError::ExecutedBackwards { .. })
    ));
    assert!(matches!(
        b.on_executed(1, 1, 21),
        Err(FtError::BeyondHorizon { horizon: 20, .. })
    ));
    // A heartbeat moves the horizon.
    b.on_message(
        2,
        frame(Message::Heartbeat {
            now_ms: 2,
            icount: 100,
        }),
    )
    .unwrap();
    b.on_executed(2, 1, 19).unwrap();
    b.next_entry().unwrap();
    b.on_executed(2, 2, 100).unwrap();
    assert_eq!(b.status().lag_instructions, 0);
}

#[test]
fn failover_drains_then_arbitrates_then_goes_live() {
    let mut b = following();
    b.on_message(10, log(1, &[10, 20])).unwrap();
    drain(&mut b);
    b.on_tick(109);
    assert!(drain(&mut b)
        .iter()
        .all(|a| matches!(a, BackupAction::Send(_))));
    b.on_tick(110);
    assert_eq!(
        drain(&mut b),
        vec![BackupAction::Disconnect, BackupAction::DrainLog]
    );
    // Messages arriving now are ignored, and connections refused.
    b.on_message(111, log(3, &[30])).unwrap();
    assert!(b.on_connected(111).is_err());
    // Claiming the drain before executing everything is refused.
    assert!(matches!(
        b.on_drained(112),
        Err(FtError::DrainIncomplete {
            executed: 0,
            received: 2
        })
    ));
    execute_all(&mut b, 113);
    b.on_drained(113).unwrap();
    assert_eq!(
        drain(&mut b),
        vec![BackupAction::TestAndSet {
            generation: 4,
            claimant: Role::Backup
        }]
    );
    b.on_arbiter_result(120, ArbiterResult::Won).unwrap();
    assert_eq!(drain(&mut b), vec![BackupAction::GoLive]);
    assert_eq!(b.phase(), Phase::Live);
    assert!(b.next_entry().is_none());
}

#[test]
fn never_live_without_winning() {
    for result in [ArbiterResult::Lost, ArbiterResult::Unreachable] {
        let mut c = cfg();
        c.arbiter_deadline_ms = 200;
        let mut b = Backup::new(c, 0).unwrap();
        b.on_tick(1000);
        assert_eq!(drain(&mut b), vec![BackupAction::DrainLog]);
        b.on_drained(1000).unwrap();
        drain(&mut b);
        let mut t = 1000;
        let mut actions = Vec::new();
        while b.phase() == Phase::Arbitrating && t < 5000 {
            t += 10;
            let _ = b.on_arbiter_result(t, result);
            b.on_tick(t);
            actions.extend(drain(&mut b));
        }
        assert!(!actions.contains(&BackupAction::GoLive), "{result:?}");
        assert!(matches!(actions.last(), Some(BackupAction::Halt { .. })));
        assert_eq!(b.phase(), Phase::Halted);
        assert!(b.on_arbiter_result(t, ArbiterResult::Won).is_err());
    }
}

#[test]
fn power_off_halts_and_leaving_fails_over_at_once() {
    let mut b = following();
    b.on_message(
        1,
        frame(Message::Goodbye {
            reason: GoodbyeReason::PowerOff,
            detail: "bye".into(),
        }),
    )
    .unwrap();
    assert_eq!(
        drain(&mut b),
        vec![
            BackupAction::Disconnect,
            BackupAction::Halt {
                reason: HaltReason::PeerPoweredOff
            }
        ]
    );

    let mut b = following();
    b.on_message(
        1,
        frame(Message::Goodbye {
            reason: GoodbyeReason::Leaving,
            detail: String::new(),
        }),
    )
    .unwrap();
    assert_eq!(
        drain(&mut b),
        vec![BackupAction::Disconnect, BackupAction::DrainLog]
    );
}

#[test]
fn reconnection_resumes_from_received() {
    let mut b = following();
    b.on_message(1, log(1, &[10, 20])).unwrap();
    b.on_disconnect(2);
    assert!(
        acks(&drain(&mut b)).is_empty(),
        "no ack on a dead connection"
    );
    b.on_connected(3).unwrap();
    let a = drain(&mut b);
    assert!(matches!(
        &a[..],
        [BackupAction::Send(Frame {
            message: Message::Hello(Hello { seq: 2, .. }),
            ..
        })]
    ));
    // A primary with fewer entries than this backup received is refused.
    assert!(matches!(
        b.on_message(3, primary_hello(1)),
        Err(FtError::PeerBehind { .. })
    ));
    b.on_connected(4).unwrap();
    b.on_message(4, primary_hello(2)).unwrap();
    b.on_message(4, log(3, &[30])).unwrap();
    assert_eq!(acks(&drain(&mut b)), vec![(3, 0)]);
}

#[test]
fn heartbeats_when_idle() {
    let mut b = following();
    b.on_tick(9);
    assert!(drain(&mut b).is_empty());
    b.on_tick(10);
    assert_eq!(
        drain(&mut b),
        vec![BackupAction::Send(frame(Message::Heartbeat {
            now_ms: 10,
            icount: 0
        }))]
    );
}

#[test]
fn a_joined_backup_starts_at_the_join_step() {
    let mut b = Backup::new_at(cfg(), 0, 1000).unwrap();
    b.on_connected(0).unwrap();
    b.on_message(0, primary_hello(0)).unwrap();
    drain(&mut b);
    assert_eq!(b.horizon(), 1000);
    // Standing at the join step is progress the core accepts.
    b.on_executed(1, 0, 1000).unwrap();
    // Entries from the join step on are taken; the first acks report it.
    b.on_message(2, log(1, &[1000, 1500])).unwrap();
    assert_eq!(acks(&drain(&mut b)), vec![(2, 1000)]);
    assert_eq!(b.next_entry().map(|e| e.icount), Some(1000));
}

#[test]
fn a_joined_backup_refuses_entries_before_the_join_step() {
    let mut b = Backup::new_at(cfg(), 0, 1000).unwrap();
    b.on_connected(0).unwrap();
    b.on_message(0, primary_hello(0)).unwrap();
    drain(&mut b);
    assert!(b.on_message(1, log(1, &[999])).is_err());
}
