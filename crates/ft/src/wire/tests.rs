use proptest::prelude::*;

use super::*;

fn hello() -> Frame {
    Frame {
        generation: 3,
        message: Message::Hello(Hello {
            version: 1,
            vm: "redis".into(),
            role: Role::Backup,
            machine_hash: [7; 32],
            seq: 42,
            log_header: vec![1, 2, 3],
        }),
    }
}

fn entries_bytes(entries: &[(u64, u8, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_entries(entries.iter().map(|(i, k, p)| (*i, *k, &p[..])), &mut out).unwrap();
    out
}

#[test]
fn golden_ack_bytes() {
    let f = Frame {
        generation: 2,
        message: Message::Ack {
            seq: 5,
            executed_icount: 0x0102,
        },
    };
    let bytes = f.to_bytes().unwrap();
    let mut expect = vec![b'F', b'T', 1, 3, 2, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0];
    let header_crc = crc32c::crc32c(&expect);
    expect.extend_from_slice(&header_crc.to_le_bytes());
    expect.extend_from_slice(&5u64.to_le_bytes());
    expect.extend_from_slice(&0x0102u64.to_le_bytes());
    let crc = crc32c::crc32c(&expect);
    expect.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(bytes, expect);
    assert_eq!(f.encoded_len(), bytes.len());
    assert_eq!(decode_exact(&bytes).unwrap(), f);
}

#[test]
fn every_message_round_trips() {
    let frames = [
        hello(),
        Frame {
            generation: u64::MAX,
            message: Message::Log {
                first_seq: 1,
                entries: entries_bytes(&[(10, 1, b"abc".to_vec()), (10, 2, vec![])]),
            },
        },
        Frame {
            generation: 0,
            message: Message::Heartbeat {
                now_ms: 123,
                icount: u64::MAX,
            },
        },
        Frame {
            generation: 9,
            message: Message::Goodbye {
                reason: GoodbyeReason::Leaving,
                detail: "maintenance".into(),
            },
        },
    ];
    for f in frames {
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes.len(), f.encoded_len());
        assert_eq!(decode_exact(&bytes).unwrap(), f);
    }
}

#[test]
fn refusals_are_typed() {
    let good = hello().to_bytes().unwrap();

    let mut b = good.clone();
    b[0] = b'G';
    assert!(matches!(
        decode_exact(&b),
        Err(WireError::BadMagic { offset: 0, .. })
    ));
    // A single wrong byte is enough to refuse a stray connection.
    assert!(matches!(
        decode_frame(b"GET / HTTP/1.1", 0),
        Err(WireError::BadMagic { .. })
    ));
    assert!(matches!(
        decode_frame(b"X", 0),
        Err(WireError::BadMagic { .. })
    ));

    let mut b = good.clone();
    b[2] = 2;
    assert!(matches!(
        decode_frame(&b[..3], 0),
        Err(WireError::UnsupportedVersion { version: 2, .. })
    ));

    // A damaged length is caught by the header checksum, at once.
    let mut b = good.clone();
    b[13] ^= 0x40;
    assert!(matches!(
        decode_frame(&b[..20], 0),
        Err(WireError::BadHeaderCrc { .. })
    ));

    let mut b = good.clone();
    b[12..16].copy_from_slice(&(MAX_BODY + 1).to_le_bytes());
    let crc = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        decode_frame(&b[..20], 0),
        Err(WireError::TooLarge { .. })
    ));

    let mut b = good.clone();
    let n = b.len();
    b[n - 1] ^= 1;
    assert!(matches!(decode_exact(&b), Err(WireError::BadCrc { .. })));

    // Unknown type with a valid checksum.
    let mut b = good.clone();
    b[3] = 99;
    let crc = crc32c::crc32c(&b[..16]);
    b[16..20].copy_from_slice(&crc.to_le_bytes());
    let n = b.len();
    let crc = crc32c::crc32c(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_le_bytes());
    assert!(matches!(
        decode_exact(&b),
        Err(WireError::UnknownType { kind: 99, .. })
    ));

    let mut b = good.clone();
    b.push(0);
    assert!(matches!(
        decode_exact(&b),
        Err(WireError::TrailingBytes { len: 1, .. })
    ));

    assert!(matches!(
        decode_exact(&good[..good.len() - 1]),
        Err(WireError::Truncated { .. })
    ));
}

/// Builds a frame with an arbitrary body and valid checksums.
fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut b = vec![b'F', b'T', 1, kind];
    b.extend_from_slice(&1u64.to_le_bytes());
    b.extend_from_slice(&(body.len() as u32).to_le_bytes());
    let header_crc = crc32c::crc32c(&b);
    b.extend_from_slice(&header_crc.to_le_bytes());
    b.extend_from_slice(body);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

#[test]
fn malformed_bodies_are_refused() {
    let cases: &[(u8, Vec<u8>, &str)] = &[
        (3, vec![0; 15], "short ack"),
        (3, vec![0; 17], "long ack"),
        (4, vec![], "empty heartbeat"),
        (2, 0u64.to_le_bytes().to_vec(), "log without entries"),
        (
            2,
            [0u64.to_le_bytes().to_vec(), vec![2, 0, 1]].concat(),
            "first_seq 0",
        ),
        (5, vec![9, 0], "unknown goodbye reason"),
        (5, vec![1, 3, b'a'], "goodbye detail past the body"),
        (5, vec![1, 1, 0xff], "goodbye detail not UTF-8"),
        (1, vec![1, 0, 3], "hello bad role"),
    ];
    for (kind, body, what) in cases {
        let b = raw_frame(*kind, body);
        assert!(
            matches!(decode_exact(&b), Err(WireError::Malformed { .. })),
            "{what}: {:?}",
            decode_exact(&b)
        );
    }
    // A Hello whose VM name is not UTF-8.
    let mut body = vec![1, 0, 1];
    body.extend_from_slice(&[0; 32]);
    body.extend_from_slice(&0u64.to_le_bytes());
    body.extend_from_slice(&[1, 0xff]);
    body.extend_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        decode_exact(&raw_frame(1, &body)),
        Err(WireError::Malformed { .. })
    ));
    body[35 + 8 + 1] = b'a';
    assert!(decode_exact(&raw_frame(1, &body)).is_ok());
}

#[test]
fn encoder_refuses_what_the_decoder_would() {
    let mut f = hello();
    if let Message::Hello(h) = &mut f.message {
        h.vm = "x".repeat(256);
    }
    let mut out = vec![0xAA];
    assert!(f.encode(&mut out).is_err());
    assert_eq!(out, vec![0xAA], "nothing appended on error");
    let f = Frame {
        generation: 1,
        message: Message::Log {
            first_seq: 0,
            entries: vec![1],
        },
    };
    assert!(f.to_bytes().is_err());
}

#[test]
fn stream_decoder_handles_any_chunking_and_truncation() {
    let frames = vec![hello(), hello(), {
        Frame {
            generation: 3,
            message: Message::Ack {
                seq: 1,
                executed_icount: 2,
            },
        }
    }];
    let mut bytes = Vec::new();
    for f in &frames {
        f.encode(&mut bytes).unwrap();
    }
    for chunk in [1, 2, 3, 7, 64, 1000] {
        let mut d = WireDecoder::new();
        let mut got = Vec::new();
        for c in bytes.chunks(chunk) {
            d.push(c);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        d.finish().unwrap();
        assert_eq!(got, frames);
        assert_eq!(d.offset(), bytes.len() as u64);
    }
    let mut d = WireDecoder::new();
    d.push(&bytes[..bytes.len() - 3]);
    while d.next_frame().unwrap().is_some() {}
    let e = d.finish().unwrap_err();
    assert!(matches!(e, WireError::Truncated { .. }));
    // Errors are sticky.
    assert_eq!(d.next_frame().unwrap_err(), e);
}

#[test]
fn entry_batches() {
    let e = [
        (5, 1, b"x".to_vec()),
        (5, 3, vec![]),
        (900, 0x20, vec![7; 300]),
    ];
    let bytes = entries_bytes(&e);
    let got = decode_entries(&bytes).unwrap();
    let got: Vec<_> = got
        .into_iter()
        .map(|e| (e.icount, e.kind, e.payload))
        .collect();
    assert_eq!(got, e.to_vec());
    assert!(decode_entries(&bytes[..bytes.len() - 1]).is_err());
    let mut with_end = Vec::new();
    let mut enc = ftvm_log::FrameEncoder::new();
    for (i, k, p) in &e {
        enc.encode(*i, *k, p, &mut with_end).unwrap();
    }
    enc.encode_end(&mut with_end).unwrap();
    assert!(matches!(
        decode_entries(&with_end),
        Err(BatchError::EndMarker)
    ));
    assert!(decode_entries(&[]).unwrap().is_empty());
}

fn arb_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Primary), Just(Role::Backup)]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (
            any::<u16>(),
            "[a-z0-9-]{1,40}",
            arb_role(),
            any::<[u8; 32]>(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(version, vm, role, machine_hash, seq, log_header)| {
                Message::Hello(Hello {
                    version,
                    vm,
                    role,
                    machine_hash,
                    seq,
                    log_header,
                })
            }),
        (1..u64::MAX, proptest::collection::vec(any::<u8>(), 1..200))
            .prop_map(|(first_seq, entries)| Message::Log { first_seq, entries }),
        (any::<u64>(), any::<u64>()).prop_map(|(seq, executed_icount)| Message::Ack {
            seq,
            executed_icount
        }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(now_ms, icount)| Message::Heartbeat { now_ms, icount }),
        (
            prop_oneof![
                Just(GoodbyeReason::PowerOff),
                Just(GoodbyeReason::Leaving),
                Just(GoodbyeReason::Error)
            ],
            "\\PC{0,30}"
        )
            .prop_map(|(reason, detail)| Message::Goodbye { reason, detail }),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (any::<u64>(), arb_message()).prop_map(|(generation, message)| Frame {
        generation,
        message,
    })
}

proptest! {
    #[test]
    fn round_trip(f in arb_frame()) {
        let bytes = f.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), f.encoded_len());
        prop_assert_eq!(decode_exact(&bytes).unwrap(), f);
    }

    #[test]
    fn truncation_at_every_byte_is_refused(f in arb_frame()) {
        let bytes = f.to_bytes().unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(
                matches!(decode_exact(&bytes[..cut]), Err(WireError::Truncated { .. })),
                "cut at {}", cut
            );
            // The streaming decoder waits, then reports the truncation at EOF.
            let mut d = WireDecoder::new();
            d.push(&bytes[..cut]);
            prop_assert_eq!(d.next_frame().unwrap(), None);
            prop_assert_eq!(d.finish().is_err(), cut > 0);
        }
    }

    #[test]
    fn every_single_bit_flip_is_refused(f in arb_frame(), seed in any::<u64>()) {
        let bytes = f.to_bytes().unwrap();
        // All bits of short frames; a sample of 64 bits of long ones.
        let bits = bytes.len() * 8;
        let picks: Vec<usize> = if bits <= 1024 {
            (0..bits).collect()
        } else {
            (0..64u64).map(|i| (seed.wrapping_mul(i * 2 + 1).rotate_left(17) % bits as u64) as usize).collect()
        };
        for bit in picks {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode_exact(&b).is_err(), "bit {} accepted", bit);
        }
    }

    #[test]
    fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_exact(&data);
        let mut d = WireDecoder::new();
        d.push(&data);
        while let Ok(Some(_)) = d.next_frame() {}
        let _ = d.finish();
        let _ = decode_entries(&data);
    }

    #[test]
    fn garbage_behind_a_valid_header_never_panics(
        kind in 0u8..8,
        body in proptest::collection::vec(any::<u8>(), 0..300),
    ) {
        // A valid checksum forces the body parsers to look at the garbage.
        let b = raw_frame(kind, &body);
        let _ = decode_exact(&b);
    }

    #[test]
    fn entry_batches_round_trip(
        entries in proptest::collection::vec((0u64..1000, 1u8..0xF0, proptest::collection::vec(any::<u8>(), 0..40)), 1..20)
    ) {
        let mut icount = 0;
        let entries: Vec<_> = entries.into_iter().map(|(d, k, p)| { icount += d; (icount, k, p) }).collect();
        let bytes = entries_bytes(&entries);
        let got: Vec<_> = decode_entries(&bytes).unwrap().into_iter().map(|e| (e.icount, e.kind, e.payload)).collect();
        prop_assert_eq!(got, entries);
        for cut in 1..bytes.len() {
            // A cut batch either fails or (cut at a frame boundary) yields a prefix.
            if let Ok(v) = decode_entries(&bytes[..cut]) {
                prop_assert!(v.len() < bytes.len());
            }
        }
    }
}

#[test]
fn join_messages_round_trip_and_are_checked() {
    let msgs = vec![
        Message::JoinRequest {
            vm: "vm0".into(),
            machine_hash: [7; 32],
            listen: "10.78.0.2:7000".into(),
        },
        Message::JoinPages {
            ram_size: 1 << 20,
            pages: vec![0, 5, 255],
            data: vec![0xab; 3 * JOIN_PAGE],
        },
        Message::JoinState {
            icount: 123_456,
            state: vec![1, 2, 3],
        },
        Message::JoinDisk {
            slot: 0,
            offset: 1 << 20,
            data: vec![9; 4096],
        },
    ];
    for message in msgs {
        let f = Frame {
            generation: 3,
            message,
        };
        let bytes = f.to_bytes().unwrap();
        assert_eq!(bytes.len(), f.encoded_len());
        assert_eq!(decode_exact(&bytes).unwrap(), f);
    }
    // A page beyond the RAM, or data of the wrong length, is refused.
    let bad = Frame {
        generation: 1,
        message: Message::JoinPages {
            ram_size: 1 << 20,
            pages: vec![256],
            data: vec![0; JOIN_PAGE],
        },
    };
    assert!(decode_exact(&bad.to_bytes().unwrap()).is_err());
    let short = Frame {
        generation: 1,
        message: Message::JoinPages {
            ram_size: 1 << 20,
            pages: vec![1],
            data: vec![0; 10],
        },
    };
    assert!(short.to_bytes().is_err());
}
