use super::*;
use crate::wire::decode_entries;
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

fn backup_hello(seq: Seq) -> Frame {
    frame(Message::Hello(Hello {
        version: PROTOCOL_VERSION,
        vm: "vm".into(),
        role: Role::Backup,
        machine_hash: [1; 32],
        seq,
        log_header: vec![],
    }))
}

fn ack(seq: Seq, executed_icount: u64) -> Frame {
    frame(Message::Ack {
        seq,
        executed_icount,
    })
}

fn drain(p: &mut Primary) -> Vec<PrimaryAction> {
    std::iter::from_fn(|| p.poll_action()).collect()
}

fn released(actions: &[PrimaryAction]) -> Vec<OutputId> {
    actions
        .iter()
        .filter_map(|a| match a {
            PrimaryAction::ReleaseOutput(id) => Some(*id),
            _ => None,
        })
        .collect()
}

/// A primary with a completed handshake at t=0.
fn paired() -> Primary {
    let mut p = Primary::new(cfg(), 0).unwrap();
    p.on_connected(0).unwrap();
    p.on_message(0, backup_hello(0)).unwrap();
    drain(&mut p);
    p
}

#[test]
fn handshake_sends_hello_with_log_position() {
    let mut p = Primary::new(cfg(), 0).unwrap();
    p.on_log_entry(5, 1, b"a").unwrap();
    p.on_connected(1).unwrap();
    let a = drain(&mut p);
    let PrimaryAction::Send(Frame {
        generation: 4,
        message: Message::Hello(h),
    }) = &a[0]
    else {
        panic!("{a:?}")
    };
    assert_eq!((h.role, h.seq, h.vm.as_str()), (Role::Primary, 1, "vm"));
    // Nothing but the Hello before the backup answers.
    assert_eq!(a.len(), 1);
    // Anything but a Hello first is refused.
    assert!(matches!(
        p.on_message(2, ack(0, 0)),
        Err(FtError::ExpectedHello { .. })
    ));
}

#[test]
fn handshake_refuses_the_wrong_peer() {
    let bad = |f: &dyn Fn(&mut Hello)| {
        let mut p = Primary::new(cfg(), 0).unwrap();
        p.on_connected(0).unwrap();
        let Message::Hello(mut h) = backup_hello(0).message else {
            unreachable!()
        };
        f(&mut h);
        p.on_message(0, frame(Message::Hello(h))).unwrap_err()
    };
    assert!(matches!(
        bad(&|h| h.version = 2),
        FtError::VersionMismatch { .. }
    ));
    assert!(matches!(
        bad(&|h| h.role = Role::Primary),
        FtError::WrongRole { .. }
    ));
    assert!(matches!(
        bad(&|h| h.vm = "other".into()),
        FtError::WrongVm { .. }
    ));
    assert!(matches!(
        bad(&|h| h.machine_hash = [2; 32]),
        FtError::MachineMismatch
    ));
    assert!(matches!(bad(&|h| h.seq = 1), FtError::PeerAhead { .. }));

    let mut p = Primary::new(cfg(), 0).unwrap();
    p.on_connected(0).unwrap();
    let mut f = backup_hello(0);
    f.generation = 3;
    assert!(matches!(
        p.on_message(0, f),
        Err(FtError::WrongGeneration { ours: 4, theirs: 3 })
    ));
    assert!(p.on_message(0, backup_hello(0)).is_ok());
}

#[test]
fn output_rule_holds_outputs_until_acked_and_releases_in_order() {
    let mut p = paired();
    let s1 = p.on_log_entry(10, 1, b"in1").unwrap();
    let s2 = p.on_log_entry(20, 1, b"in2").unwrap();
    p.on_output(100, 0).unwrap(); // depends on nothing
    p.on_output(101, s1).unwrap();
    p.on_output(102, s2).unwrap();
    p.on_output(103, s1).unwrap(); // behind 102: waits for it
    let a = drain(&mut p);
    assert_eq!(released(&a), vec![100]);
    // The log went out in one batch.
    let logs: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            PrimaryAction::Send(Frame {
                message: Message::Log { first_seq, entries },
                ..
            }) => Some((*first_seq, decode_entries(entries).unwrap().len())),
            _ => None,
        })
        .collect();
    assert_eq!(logs, vec![(1, 2)]);

    p.on_progress(1, 20);
    p.on_message(2, ack(s1, 10)).unwrap();
    assert_eq!(released(&drain(&mut p)), vec![101]);
    assert_eq!(p.status().held_outputs, 2);
    p.on_message(3, ack(s2, 20)).unwrap();
    assert_eq!(released(&drain(&mut p)), vec![102, 103]);
    assert_eq!(p.status().released_outputs, 4);
}

#[test]
fn outputs_cannot_depend_on_the_future() {
    let mut p = paired();
    assert!(matches!(
        p.on_output(1, 1),
        Err(FtError::OutputDependsOnFuture { .. })
    ));
}

#[test]
fn entries_are_validated() {
    let mut p = paired();
    assert!(matches!(
        p.on_log_entry(1, 0, b""),
        Err(FtError::BadEntry(_))
    ));
    assert!(matches!(
        p.on_log_entry(1, 0xF0, b""),
        Err(FtError::BadEntry(_))
    ));
    p.on_log_entry(10, 1, b"").unwrap();
    assert!(matches!(
        p.on_log_entry(9, 1, b""),
        Err(FtError::IcountBackwards { .. })
    ));
    p.on_progress(1, 50);
    assert!(matches!(
        p.on_log_entry(49, 1, b""),
        Err(FtError::IcountBackwards { .. })
    ));
    assert_eq!(p.on_log_entry(50, 1, b"").unwrap(), 2);
}

#[test]
fn acks_beyond_what_was_sent_are_refused() {
    let mut p = paired();
    p.on_log_entry(10, 1, b"a").unwrap();
    // Not sent yet (no poll): an ack for it is a lie.
    assert!(matches!(
        p.on_message(1, ack(1, 0)),
        Err(FtError::PeerAhead { .. })
    ));
    drain(&mut p);
    p.on_progress(1, 10);
    assert!(matches!(
        p.on_message(1, ack(1, 11)),
        Err(FtError::IcountAhead { .. })
    ));
    p.on_message(1, ack(1, 10)).unwrap();
    // A stale (lower) ack changes nothing.
    p.on_message(1, ack(0, 0)).unwrap();
    assert_eq!(p.status().acked_seq, 1);
}

#[test]
fn reconnection_resumes_after_what_the_backup_has() {
    let mut p = paired();
    for i in 1..=5 {
        p.on_log_entry(i * 10, 1, &[i as u8]).unwrap();
    }
    p.on_output(7, 5).unwrap();
    drain(&mut p);
    p.on_message(1, ack(2, 0)).unwrap();
    p.on_disconnect(2);
    p.on_log_entry(60, 1, b"6").unwrap();
    assert!(drain(&mut p).is_empty(), "nothing sent while disconnected");
    p.on_connected(3).unwrap();
    drain(&mut p);
    // The backup had received up to 4 before the break.
    p.on_message(3, backup_hello(4)).unwrap();
    let a = drain(&mut p);
    let firsts: Vec<_> = a
        .iter()
        .filter_map(|a| match a {
            PrimaryAction::Send(Frame {
                message: Message::Log { first_seq, entries },
                ..
            }) => Some((*first_seq, decode_entries(entries).unwrap())),
            _ => None,
        })
        .collect();
    assert_eq!(firsts.len(), 1);
    assert_eq!(firsts[0].0, 5);
    let icounts: Vec<_> = firsts[0].1.iter().map(|e| e.icount).collect();
    assert_eq!(icounts, vec![50, 60]);
    assert_eq!(p.status().acked_seq, 4);
    // A backup claiming less than it acknowledged cannot resume.
    p.on_disconnect(4);
    p.on_connected(4).unwrap();
    assert!(matches!(
        p.on_message(4, backup_hello(3)),
        Err(FtError::PeerBehind { .. })
    ));
}

#[test]
fn batches_are_bounded() {
    let mut c = cfg();
    c.max_batch_bytes = 200;
    let mut p = Primary::new(c, 0).unwrap();
    p.on_connected(0).unwrap();
    p.on_message(0, backup_hello(0)).unwrap();
    for i in 0..10 {
        p.on_log_entry(i, 1, &[0; 60]).unwrap();
    }
    let logs: Vec<_> = drain(&mut p)
        .into_iter()
        .filter_map(|a| match a {
            PrimaryAction::Send(Frame {
                message: Message::Log { first_seq, entries },
                ..
            }) => Some((first_seq, decode_entries(&entries).unwrap().len())),
            _ => None,
        })
        .collect();
    assert_eq!(logs, vec![(1, 2), (3, 2), (5, 2), (7, 2), (9, 2)]);
}

#[test]
fn heartbeats_when_idle_and_flushed_log_first() {
    let mut p = paired();
    p.on_tick(9);
    assert!(drain(&mut p).is_empty());
    p.on_progress(10, 1000);
    p.on_log_entry(1000, 1, b"x").unwrap();
    p.on_tick(10);
    let a = drain(&mut p);
    // The entry goes out before the heartbeat that claims icount 1000.
    assert!(matches!(
        &a[0],
        PrimaryAction::Send(Frame {
            message: Message::Log { .. },
            ..
        })
    ));
    assert!(!a.iter().any(|a| matches!(
        a,
        PrimaryAction::Send(Frame {
            message: Message::Heartbeat { .. },
            ..
        })
    )));
    p.on_tick(20);
    let a = drain(&mut p);
    assert_eq!(
        a,
        vec![PrimaryAction::Send(frame(Message::Heartbeat {
            now_ms: 20,
            icount: 1000
        }))]
    );
}

#[test]
fn lag_control_throttles_above_the_target() {
    let mut p = paired();
    // 1000 instructions per ms.
    for t in 0..=300 {
        p.on_progress(t, t * 1000);
    }
    drain(&mut p);
    // The backup is at 100 ms of execution behind: no throttle.
    p.on_message(300, ack(0, 200_000)).unwrap();
    assert!(drain(&mut p).is_empty());
    assert_eq!(p.status().lag_ms, Some(100));
    // 150 ms behind: pause (capped at max_throttle_ms).
    p.on_progress(350, 350_000);
    let a = drain(&mut p);
    assert_eq!(a, vec![PrimaryAction::Throttle { until_ms: 360 }]);
    // Not repeated until the pause ends.
    p.on_tick(355);
    assert!(drain(&mut p)
        .iter()
        .all(|a| !matches!(a, PrimaryAction::Throttle { .. })));
    p.on_tick(360);
    assert!(drain(&mut p).contains(&PrimaryAction::Throttle { until_ms: 370 }));
    assert_eq!(p.status().lag_instructions, 150_000);
}

#[test]
fn silent_backup_leads_to_test_and_set_and_going_alone() {
    let mut p = paired();
    let s = p.on_log_entry(10, 1, b"x").unwrap();
    p.on_output(1, s).unwrap();
    drain(&mut p);
    p.on_tick(99);
    assert!(drain(&mut p)
        .iter()
        .all(|a| matches!(a, PrimaryAction::Send(_))));
    p.on_tick(100);
    assert_eq!(
        drain(&mut p),
        vec![
            PrimaryAction::Disconnect,
            PrimaryAction::TestAndSet {
                generation: 4,
                claimant: Role::Primary
            }
        ]
    );
    assert!(p.on_connected(101).is_err(), "no new backup connection now");
    // Outputs stay held while the arbiter is asked.
    p.on_output(2, 0).unwrap();
    assert!(released(&drain(&mut p)).is_empty());
    p.on_arbiter_result(110, ArbiterResult::Unreachable)
        .unwrap();
    assert!(drain(&mut p).is_empty());
    p.on_tick(210);
    assert_eq!(
        drain(&mut p),
        vec![PrimaryAction::TestAndSet {
            generation: 4,
            claimant: Role::Primary
        }]
    );
    p.on_arbiter_result(220, ArbiterResult::Won).unwrap();
    let a = drain(&mut p);
    assert_eq!(a[0], PrimaryAction::GoAlone);
    assert_eq!(released(&a), vec![1, 2]);
    // Alone: outputs go straight out.
    let s = p.on_log_entry(20, 1, b"y").unwrap();
    p.on_output(3, s).unwrap();
    assert_eq!(drain(&mut p), vec![PrimaryAction::ReleaseOutput(3)]);
    assert_eq!(p.phase(), Phase::Alone);
}

#[test]
fn losing_the_arbiter_halts_without_releasing() {
    let mut p = paired();
    let s = p.on_log_entry(10, 1, b"x").unwrap();
    p.on_output(1, s).unwrap();
    p.on_tick(600);
    drain(&mut p);
    p.on_arbiter_result(601, ArbiterResult::Lost).unwrap();
    assert_eq!(
        drain(&mut p),
        vec![PrimaryAction::Halt {
            reason: HaltReason::LostArbiter
        }]
    );
    assert!(p.on_output(2, 0).is_err());
    assert!(p.on_arbiter_result(602, ArbiterResult::Won).is_err());
    assert!(drain(&mut p).is_empty());
}

#[test]
fn unreachable_arbiter_past_the_deadline_halts() {
    let mut c = cfg();
    c.arbiter_deadline_ms = 300;
    let mut p = Primary::new(c, 0).unwrap();
    p.on_tick(1000); // startup timeout: the backup never came
    assert!(drain(&mut p).contains(&PrimaryAction::TestAndSet {
        generation: 4,
        claimant: Role::Primary
    }));
    p.on_arbiter_result(1100, ArbiterResult::Unreachable)
        .unwrap();
    p.on_tick(1200);
    drain(&mut p);
    p.on_tick(1300);
    assert_eq!(
        drain(&mut p),
        vec![PrimaryAction::Halt {
            reason: HaltReason::ArbiterUnreachable
        }]
    );
    assert!(p.on_arbiter_result(1301, ArbiterResult::Won).is_err());
    assert_eq!(p.phase(), Phase::Halted);
}

#[test]
fn backup_leaving_triggers_immediate_arbitration() {
    let mut p = paired();
    p.on_message(
        5,
        frame(Message::Goodbye {
            reason: GoodbyeReason::Leaving,
            detail: String::new(),
        }),
    )
    .unwrap();
    assert!(drain(&mut p).contains(&PrimaryAction::TestAndSet {
        generation: 4,
        claimant: Role::Primary
    }));
}

#[test]
fn leave_says_goodbye_and_halts() {
    let mut p = paired();
    p.leave(5, GoodbyeReason::PowerOff).unwrap();
    let a = drain(&mut p);
    assert!(matches!(
        &a[0],
        PrimaryAction::Send(Frame {
            message: Message::Goodbye {
                reason: GoodbyeReason::PowerOff,
                ..
            },
            ..
        })
    ));
    assert_eq!(
        a.last(),
        Some(&PrimaryAction::Halt {
            reason: HaltReason::Shutdown
        })
    );
    assert!(p.leave(6, GoodbyeReason::PowerOff).is_err());
}

#[test]
fn status_reports_traffic() {
    let mut p = paired();
    p.on_log_entry(10, 1, &[0; 100]).unwrap();
    drain(&mut p);
    let s = p.status();
    assert!(s.bytes_sent > 100);
    assert!(s.bytes_received > 0);
    assert_eq!(s.buffered_bytes, 100);
    assert!(s.connected);
    assert!(s.to_string().starts_with("primary paired gen=4"));
}

#[test]
fn a_huge_entry_travels_alone_and_fits_a_frame() {
    let mut p = paired();
    p.on_log_entry(1, 1, &[1; 1000]).unwrap();
    let big = vec![2u8; (16 << 20) - 11];
    p.on_log_entry(2, 1, &big).unwrap();
    p.on_log_entry(3, 1, b"after").unwrap();
    let logs: Vec<_> = drain(&mut p)
        .into_iter()
        .filter_map(|a| match a {
            PrimaryAction::Send(
                f @ Frame {
                    message: Message::Log { .. },
                    ..
                },
            ) => Some(f),
            _ => None,
        })
        .collect();
    assert_eq!(logs.len(), 3);
    for f in &logs {
        let bytes = f.to_bytes().expect("every batch fits in a frame");
        assert_eq!(crate::wire::decode_exact(&bytes).unwrap(), *f);
    }
    // Entries too large for one log frame are refused up front.
    assert!(matches!(
        p.on_log_entry(4, 1, &vec![0; 16 << 20]),
        Err(FtError::BadEntry(_))
    ));
}

#[test]
fn a_pair_formed_by_a_join_starts_at_the_join_step() {
    let mut p = Primary::new_at(cfg(), 0, 5000).unwrap();
    p.on_connected(0).unwrap();
    p.on_message(0, backup_hello(0)).unwrap();
    drain(&mut p);
    assert!(p.on_log_entry(4999, 1, b"t").is_err());
    assert_eq!(p.on_log_entry(5000, 1, b"t").unwrap(), 1);
    // No lag before the backup has said anything: it holds the state at 5000.
    p.on_progress(1, 5000);
    assert_eq!(p.status().lag_instructions, 0);
    assert!(drain(&mut p)
        .iter()
        .all(|a| !matches!(a, PrimaryAction::Throttle { .. })));
}
