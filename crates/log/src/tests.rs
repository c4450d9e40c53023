//! Unit tests for the byte layout and every error path of the header, the
//! frame codec, `Writer`, `SliceReader` and `StreamDecoder`.

use std::io;

use crate::header::tag;
use crate::varint;
use crate::*;

fn sample_header() -> LogHeader {
    LogHeader {
        machine_config: b"rv64gc mem=256M harts=1".to_vec(),
        images: vec![
            ImageId {
                role: "firmware".into(),
                size: 262_144,
                sha256: [0x11; 32],
            },
            ImageId {
                role: "kernel".into(),
                size: 20_000_000,
                sha256: [0xab; 32],
            },
        ],
        created_unix_ms: 1_700_000_000_123,
        producer: "ftvm 0.1.0".into(),
        digest_interval: 1_000_000,
    }
}

fn header_bytes() -> Vec<u8> {
    sample_header().encode().unwrap()
}

/// A log with the given entries, closed with END.
fn log_of(entries: &[(u64, u8, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new(), &sample_header()).unwrap();
    for &(i, k, p) in entries {
        w.append(i, k, p).unwrap();
    }
    w.finish().unwrap()
}

/// A frame around `body` with a correct length and checksum.
fn raw_frame(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    varint::push(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out
}

fn end_frame(count: u64) -> Vec<u8> {
    let mut body = vec![0, KIND_END];
    varint::push(count, &mut body);
    raw_frame(&body)
}

/// Header followed by `frames`.
fn log_with(frames: &[u8]) -> Vec<u8> {
    let mut out = header_bytes();
    out.extend_from_slice(frames);
    out
}

fn read_all(bytes: &[u8]) -> (Vec<OwnedEntry>, Result<(), LogError>) {
    let mut out = Vec::new();
    let mut r = match SliceReader::new(bytes) {
        Ok((_, r)) => r,
        Err(e) => return (out, Err(e)),
    };
    loop {
        match r.next_entry() {
            Ok(Some(e)) => out.push(e.into_owned()),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
}

fn read_err(bytes: &[u8]) -> LogError {
    read_all(bytes).1.expect_err("log should be rejected")
}

/// Rebuilds a header from a raw TLV body, with a correct checksum.
fn header_from_body(body: &[u8]) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn field(t: u16, value: &[u8]) -> Vec<u8> {
    let mut out = t.to_le_bytes().to_vec();
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn required_fields() -> Vec<u8> {
    [
        field(tag::MACHINE_CONFIG, b"cfg"),
        field(tag::CREATED_UNIX_MS, &5u64.to_le_bytes()),
        field(tag::PRODUCER, b"test"),
        field(tag::DIGEST_INTERVAL, &0u64.to_le_bytes()),
    ]
    .concat()
}

fn header_invalid_reason(body: &[u8]) -> (u64, String) {
    match LogHeader::decode(&header_from_body(body)) {
        Err(LogError::HeaderInvalid { offset, reason }) => (offset, reason),
        other => panic!("expected HeaderInvalid, got {other:?}"),
    }
}

// ---------------------------------------------------------------- layout

#[test]
fn crc_is_castagnoli() {
    // The standard CRC-32C check value.
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn header_layout() {
    let h = LogHeader {
        machine_config: vec![0xaa],
        images: vec![],
        created_unix_ms: 2,
        producer: "p".into(),
        digest_interval: 3,
    };
    let b = h.encode().unwrap();
    let body: Vec<u8> = [
        vec![0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0xaa],
        vec![0x03, 0x00, 0x08, 0x00, 0x00, 0x00, 2, 0, 0, 0, 0, 0, 0, 0],
        vec![0x04, 0x00, 0x01, 0x00, 0x00, 0x00, b'p'],
        vec![0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 3, 0, 0, 0, 0, 0, 0, 0],
    ]
    .concat();
    let mut expected = b"FTVMLOG\0".to_vec();
    expected.extend_from_slice(&[0x01, 0x00]);
    expected.extend_from_slice(&(body.len() as u32).to_le_bytes());
    expected.extend_from_slice(&body);
    let crc = crc32c::crc32c(&expected);
    expected.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(b, expected);
}

#[test]
fn image_field_layout() {
    let h = LogHeader {
        images: vec![ImageId {
            role: "kernel".into(),
            size: 0x0102,
            sha256: [7; 32],
        }],
        ..LogHeader::default()
    };
    let b = h.encode().unwrap();
    // After magic+version+len (14) and the empty machine config field (6).
    let f = &b[20..20 + 6 + 46];
    assert_eq!(&f[..6], &[0x02, 0x00, 46, 0, 0, 0]);
    assert_eq!(&f[6..14], &[0x02, 0x01, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&f[14..46], &[7; 32]);
    assert_eq!(&f[46..], b"kernel");
}

#[test]
fn frame_layout() {
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    enc.encode(300, 0x12, b"abc", &mut out).unwrap();
    // len=6: delta 300 = ac 02, kind, "abc"
    let body = [0xac, 0x02, 0x12, b'a', b'b', b'c'];
    let mut expected = vec![0x06];
    expected.extend_from_slice(&body);
    expected.extend_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    assert_eq!(out, expected);

    // Second frame: delta from 300.
    out.clear();
    enc.encode(301, 0x01, b"", &mut out).unwrap();
    let body = [0x01, 0x01];
    assert_eq!(&out[..3], &[0x02, 0x01, 0x01]);
    assert_eq!(&out[3..], &crc32c::crc32c(&body).to_le_bytes());

    // END: delta 0, kind ff, entry count 2.
    out.clear();
    enc.encode_end(&mut out).unwrap();
    assert_eq!(out, end_frame(2));
    assert_eq!(&out[..4], &[0x03, 0x00, 0xff, 0x02]);
}

#[test]
fn writer_and_frame_encoder_agree() {
    let entries: Vec<(u64, u8, Vec<u8>)> = (0..50)
        .map(|i| (i * 7, (i % 200 + 1) as u8, vec![i as u8; i as usize]))
        .collect();
    let mut w = Writer::new(Vec::new(), &sample_header()).unwrap();
    let mut enc = FrameEncoder::new();
    let mut frames = Vec::new();
    let mut sum = 0;
    for (i, k, p) in &entries {
        sum += w.append(*i, *k, p).unwrap();
        enc.encode(*i, *k, p, &mut frames).unwrap();
    }
    enc.encode_end(&mut frames).unwrap();
    assert_eq!(w.last_icount(), 49 * 7);
    assert_eq!(w.entries_written(), 50);
    let before_end = w.bytes_written();
    let bytes = w.finish().unwrap();
    assert_eq!(before_end, header_bytes().len() as u64 + sum);
    assert_eq!(bytes, log_with(&frames));
}

// ---------------------------------------------------------------- header

#[test]
fn header_round_trip() {
    for h in [LogHeader::default(), sample_header()] {
        let b = h.encode().unwrap();
        assert_eq!(LogHeader::decode(&b).unwrap(), (h.clone(), b.len()));
        // Trailing bytes are not part of the header.
        let mut longer = b.clone();
        longer.extend_from_slice(b"frames");
        assert_eq!(LogHeader::decode(&longer).unwrap(), (h, b.len()));
    }
}

#[test]
fn header_fields_in_any_order_and_unknown_skipped() {
    let body = [
        field(0x0100, b"future optional field"),
        field(tag::DIGEST_INTERVAL, &9u64.to_le_bytes()),
        field(tag::PRODUCER, b"other"),
        field(0x7fff, b""),
        field(tag::CREATED_UNIX_MS, &1u64.to_le_bytes()),
        field(tag::MACHINE_CONFIG, b"m"),
    ]
    .concat();
    let (h, _) = LogHeader::decode(&header_from_body(&body)).unwrap();
    assert_eq!(
        h,
        LogHeader {
            machine_config: b"m".to_vec(),
            images: vec![],
            created_unix_ms: 1,
            producer: "other".into(),
            digest_interval: 9,
        }
    );
}

#[test]
fn repeated_images_keep_order_and_duplicates() {
    let img = |role: &str, n: u8| ImageId {
        role: role.into(),
        size: n.into(),
        sha256: [n; 32],
    };
    let h = LogHeader {
        images: vec![img("disk", 1), img("kernel", 2), img("disk", 3), img("", 4)],
        ..sample_header()
    };
    let b = h.encode().unwrap();
    assert_eq!(LogHeader::decode(&b).unwrap().0, h);
}

#[test]
fn header_unknown_critical_tag_rejected() {
    let body = [required_fields(), field(0x8001, b"x")].concat();
    let (offset, reason) = header_invalid_reason(&body);
    assert_eq!(offset, 14 + required_fields().len() as u64);
    assert!(reason.contains("unknown critical field 0x8001"), "{reason}");
}

#[test]
fn header_tag_zero_rejected() {
    let body = [field(0, b""), required_fields()].concat();
    let (offset, reason) = header_invalid_reason(&body);
    assert_eq!(offset, 14);
    assert!(reason.contains("tag 0"), "{reason}");
}

#[test]
fn header_duplicate_singular_field_rejected() {
    for t in [
        tag::MACHINE_CONFIG,
        tag::CREATED_UNIX_MS,
        tag::PRODUCER,
        tag::DIGEST_INTERVAL,
    ] {
        let value: &[u8] = if t == tag::CREATED_UNIX_MS || t == tag::DIGEST_INTERVAL {
            &[0; 8]
        } else {
            b"x"
        };
        let body = [required_fields(), field(t, value)].concat();
        let (offset, reason) = header_invalid_reason(&body);
        assert_eq!(offset, 14 + required_fields().len() as u64);
        assert!(reason.contains("more than once"), "{reason}");
    }
}

#[test]
fn header_missing_field_rejected() {
    let all = [
        (tag::MACHINE_CONFIG, field(tag::MACHINE_CONFIG, b"cfg")),
        (
            tag::CREATED_UNIX_MS,
            field(tag::CREATED_UNIX_MS, &5u64.to_le_bytes()),
        ),
        (tag::PRODUCER, field(tag::PRODUCER, b"test")),
        (
            tag::DIGEST_INTERVAL,
            field(tag::DIGEST_INTERVAL, &0u64.to_le_bytes()),
        ),
    ];
    for skip in 0..all.len() {
        let body: Vec<u8> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .flat_map(|(_, (_, f))| f.clone())
            .collect();
        let (offset, reason) = header_invalid_reason(&body);
        assert_eq!(offset, 14 + body.len() as u64);
        assert!(
            reason.contains("missing") && reason.contains(&format!("{:#06x}", all[skip].0)),
            "{reason}"
        );
    }
}

#[test]
fn header_field_shape_errors() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            [required_fields(), field(tag::IMAGE, &[0; 39])].concat(),
            "at least 40",
        ),
        (
            [
                field(tag::CREATED_UNIX_MS, &[0; 7]),
                field(tag::MACHINE_CONFIG, b""),
            ]
            .concat(),
            "creation time field is 7 bytes",
        ),
        (
            [field(tag::DIGEST_INTERVAL, &[0; 9])].concat(),
            "digest interval field is 9 bytes",
        ),
        (
            [field(tag::PRODUCER, &[0xff, 0xfe])].concat(),
            "producer is not valid UTF-8",
        ),
        (
            [field(tag::IMAGE, &[[0u8; 40].as_slice(), &[0xc0]].concat())].concat(),
            "image role is not valid UTF-8",
        ),
        (
            [required_fields(), vec![1, 0, 0]].concat(),
            "runs past the end",
        ),
        (
            [required_fields(), vec![0x01, 0x00, 5, 0, 0, 0, 1, 2]].concat(),
            "claims 5 bytes, only 2 remain",
        ),
    ];
    for (body, want) in cases {
        let (_, reason) = header_invalid_reason(&body);
        assert!(reason.contains(want), "{reason:?} should contain {want:?}");
    }
}

#[test]
fn not_a_log() {
    let mut b = header_bytes();
    b[0] = b'X';
    let e = SliceReader::new(&b).unwrap_err();
    assert!(matches!(e, LogError::NotALog { .. }), "{e}");
    assert!(e.to_string().contains("byte 0"), "{e}");
    // A short input that already differs is not a log either...
    assert!(matches!(
        LogHeader::decode(b"FTVX"),
        Err(LogError::NotALog { .. })
    ));
    assert!(matches!(
        LogHeader::decode(b"\x7fELF\x02\x01\x01\x00rest"),
        Err(LogError::NotALog { .. })
    ));
    // ...while a short correct prefix is merely truncated.
    assert!(matches!(
        LogHeader::decode(b"FTVM"),
        Err(LogError::Truncated {
            inside: Part::Magic,
            end: 4,
            ..
        })
    ));
    assert!(matches!(
        LogHeader::decode(b""),
        Err(LogError::Truncated {
            inside: Part::Magic,
            ..
        })
    ));
}

#[test]
fn unsupported_version() {
    for v in [0u16, 2, 0xffff] {
        let mut b = header_bytes();
        b[8..10].copy_from_slice(&v.to_le_bytes());
        let e = LogHeader::decode(&b).unwrap_err();
        assert!(
            matches!(e, LogError::UnsupportedVersion { found, supported: 1 } if found == v),
            "{e}"
        );
        assert!(e.to_string().contains("byte 8"), "{e}");
    }
}

#[test]
fn header_too_large() {
    let mut b = header_bytes();
    b[10..14].copy_from_slice(&(MAX_HEADER_BODY + 1).to_le_bytes());
    let e = LogHeader::decode(&b).unwrap_err();
    assert!(
        matches!(e, LogError::HeaderTooLarge { len, .. } if len == u64::from(MAX_HEADER_BODY) + 1)
    );

    let big = LogHeader {
        machine_config: vec![0; MAX_HEADER_BODY as usize],
        ..LogHeader::default()
    };
    assert!(matches!(big.encode(), Err(LogError::HeaderTooLarge { .. })));
    assert!(matches!(
        Writer::new(Vec::new(), &big),
        Err(LogError::HeaderTooLarge { .. })
    ));
    // Exactly at the limit is fine.
    let fixed = LogHeader::default().encode().unwrap().len() - 18;
    let exact = LogHeader {
        machine_config: vec![1; MAX_HEADER_BODY as usize - fixed],
        ..LogHeader::default()
    };
    let b = exact.encode().unwrap();
    assert_eq!(LogHeader::decode(&b).unwrap().0, exact);
}

#[test]
fn header_corrupt() {
    let good = header_bytes();
    let crc_at = good.len() - 4;
    for i in 14..good.len() {
        let mut b = good.clone();
        b[i] ^= 0x10;
        let e = LogHeader::decode(&b).unwrap_err();
        assert!(
            matches!(e, LogError::HeaderCorrupt { offset, .. } if offset == crc_at as u64),
            "byte {i}: {e}"
        );
        assert!(e.to_string().contains(&format!("byte {crc_at}")), "{e}");
    }
}

#[test]
fn header_truncated_at_every_length() {
    let b = header_bytes();
    for cut in 0..b.len() {
        let e = LogHeader::decode(&b[..cut]).unwrap_err();
        let want = match cut {
            0..=7 => Part::Magic,
            8..=13 => Part::HeaderPrefix,
            c if c < b.len() - 4 => Part::HeaderBody,
            _ => Part::HeaderCrc,
        };
        assert!(
            matches!(e, LogError::Truncated { offset: 0, end, inside, frame: None } if end == cut as u64 && inside == want),
            "cut {cut}: {e:?}"
        );
    }
}

// ---------------------------------------------------------------- compatibility

#[test]
fn compatible_ignores_recording_details() {
    let log = sample_header();
    let mut given = log.clone();
    given.created_unix_ms = 0;
    given.producer = "ftvm 9".into();
    given.digest_interval = 0;
    given.images.reverse();
    assert_eq!(log.check_compatible(&given), Ok(()));
}

#[test]
fn incompatible_kernel_named() {
    let log = sample_header();
    let mut given = log.clone();
    given.images[1].sha256 = [0xcd; 32];
    let m = log.check_compatible(&given).unwrap_err();
    assert_eq!(m.differences.len(), 1);
    let msg = m.to_string();
    assert!(
        msg.contains(&format!(
            "kernel image differs: sha256 {} in the log, {} given",
            "ab".repeat(32),
            "cd".repeat(32)
        )),
        "{msg}"
    );
    assert!(!msg.contains("size"), "{msg}");

    given.images[1].size += 1;
    let msg = log.check_compatible(&given).unwrap_err().to_string();
    assert!(
        msg.contains(
            "kernel image differs: size 20000000 bytes in the log, 20000001 given; sha256"
        ),
        "{msg}"
    );
}

#[test]
fn incompatible_missing_extra_and_config() {
    let log = sample_header();
    let mut given = log.clone();
    given.images.remove(0);
    given.images.push(ImageId {
        role: "initrd".into(),
        size: 5,
        sha256: [0; 32],
    });
    given.machine_config = b"rv64gc mem=512M harts=1".to_vec();
    let m = log.check_compatible(&given).unwrap_err();
    assert_eq!(m.differences.len(), 3, "{m}");
    assert!(matches!(
        &m.differences[0],
        Difference::MachineConfig {
            first_diff: 11,
            log_len: 23,
            given_len: 23,
            ..
        }
    ));
    assert!(matches!(&m.differences[1], Difference::ImageMissing(i) if i.role == "firmware"));
    assert!(matches!(&m.differences[2], Difference::ImageUnexpected(i) if i.role == "initrd"));
    let msg = m.to_string();
    assert!(msg.contains("machine configuration differs"), "{msg}");
    assert!(msg.contains("recorded with a firmware image"), "{msg}");
    assert!(msg.contains("a initrd image (5 bytes"), "{msg}");
}

#[test]
fn compatible_duplicate_roles_paired_in_order() {
    let img = |n: u8| ImageId {
        role: "disk".into(),
        size: 1,
        sha256: [n; 32],
    };
    let log = LogHeader {
        images: vec![img(1), img(2)],
        ..LogHeader::default()
    };
    let same = log.clone();
    assert_eq!(log.check_compatible(&same), Ok(()));
    let swapped = LogHeader {
        images: vec![img(2), img(1)],
        ..LogHeader::default()
    };
    assert_eq!(
        log.check_compatible(&swapped)
            .unwrap_err()
            .differences
            .len(),
        2
    );
}

// ---------------------------------------------------------------- frames: good paths

#[test]
fn empty_log() {
    let b = log_of(&[]);
    assert_eq!(b, log_with(&end_frame(0)));
    let (h, mut r) = SliceReader::new(&b).unwrap();
    assert_eq!(h, sample_header());
    assert_eq!(r.next_entry().unwrap(), None);
    assert!(r.is_finished());
    assert_eq!(r.next_entry().unwrap(), None);
    assert_eq!(r.offset(), b.len() as u64);
}

#[test]
fn equal_icounts_and_extremes() {
    let big = vec![0x5a; 200_000];
    let entries: Vec<(u64, u8, &[u8])> = vec![
        (0, 1, b""),
        (0, 2, b"same icount"),
        (5, 0xef, &big),
        (u64::MAX, 0x80, b"last"),
    ];
    let b = log_of(&entries);
    let (got, end) = read_all(&b);
    end.unwrap();
    let want: Vec<OwnedEntry> = entries
        .iter()
        .map(|&(i, k, p)| OwnedEntry {
            icount: i,
            kind: k,
            payload: p.to_vec(),
        })
        .collect();
    assert_eq!(got, want);
    let (_, r) = SliceReader::new(&b).unwrap();
    let it: Vec<_> = r.map(|e| e.unwrap().into_owned()).collect();
    assert_eq!(it, want);
}

#[test]
fn largest_frame_accepted() {
    // delta 0 takes 1 byte, kind 1 byte.
    let payload = vec![3u8; MAX_FRAME_BODY as usize - 2];
    let b = log_of(&[(0, 1, &payload)]);
    let (got, end) = read_all(&b);
    end.unwrap();
    assert_eq!(got[0].payload.len(), payload.len());
}

#[test]
fn dropped_writer_leaves_readable_prefix() {
    let mut out = Vec::new();
    {
        let mut w = Writer::new(&mut out, &sample_header()).unwrap();
        w.append(1, 1, b"a").unwrap();
        w.append(2, 1, b"b").unwrap();
    }
    let (got, end) = read_all(&out);
    assert_eq!(got.len(), 2);
    let e = end.unwrap_err();
    assert!(
        matches!(
            e,
            LogError::Truncated {
                inside: Part::NextFrame,
                frame: Some(2),
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("no end-of-log marker"), "{e}");
}

// ---------------------------------------------------------------- frames: errors

#[test]
fn truncated_frame_parts() {
    let b = log_of(&[(1000, 1, b"payload!")]);
    let h = header_bytes().len();
    // frame: len(1) delta(2) kind(1) payload(8) crc(4)
    let expect = |cut: usize| match cut - h {
        0 => Part::NextFrame,
        1..=11 => Part::FrameBody,
        12..=15 => Part::FrameCrc,
        _ => Part::NextFrame, // before the END frame
    };
    for cut in h..b.len() {
        let (got, end) = read_all(&b[..cut]);
        let e = end.unwrap_err();
        let frame_start = if cut - h >= 16 { h + 16 } else { h };
        assert_eq!(got.len(), usize::from(cut - h >= 16));
        match e {
            LogError::Truncated {
                offset,
                end,
                inside,
                frame,
            } => {
                assert_eq!(offset, frame_start as u64, "cut {cut}");
                assert_eq!(end, cut as u64);
                assert_eq!(frame, Some(u64::from(cut - h >= 16)));
                if cut - h < 16 {
                    assert_eq!(inside, expect(cut), "cut {cut}");
                } else if cut == h + 16 {
                    assert_eq!(inside, Part::NextFrame);
                } else if cut - h - 16 <= 3 {
                    assert_eq!(inside, Part::FrameBody, "cut {cut}");
                } else {
                    assert_eq!(inside, Part::FrameCrc, "cut {cut}");
                }
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
    // A multi-byte length prefix cut in the middle.
    let b = log_of(&[(0, 1, &[0; 300])]);
    let e = read_err(&b[..h + 1]);
    assert!(
        matches!(
            e,
            LogError::Truncated {
                inside: Part::FrameLength,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains(&format!("frame 0 starting at byte {h}")),
        "{e}"
    );
}

#[test]
fn frame_crc_mismatch() {
    let b = log_of(&[(1, 1, b"one"), (2, 2, b"two")]);
    let h = header_bytes().len();
    let second = h + 1 + 5 + 4;
    let mut bad = b.clone();
    bad[second + 3] ^= 1; // inside the second frame's payload
    let (got, end) = read_all(&bad);
    assert_eq!(got.len(), 1);
    let e = end.unwrap_err();
    assert!(
        matches!(e, LogError::FrameCrc { offset, frame: 1, .. } if offset == second as u64),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(&format!("frame 1 at byte {second}")) && msg.contains("checksum"),
        "{msg}"
    );
    // The checksum bytes themselves.
    let mut bad = b.clone();
    bad[second + 7] ^= 0x80;
    assert!(matches!(
        read_err(&bad),
        LogError::FrameCrc { frame: 1, .. }
    ));
}

#[test]
fn bad_length_varints() {
    let h = header_bytes().len() as u64;
    let cases: Vec<(Vec<u8>, VarintProblem)> = vec![
        (vec![0x82, 0x00], VarintProblem::NonCanonical),
        (
            [vec![0x80; 10], vec![0x00]].concat(),
            VarintProblem::TooLong,
        ),
        (
            [vec![0xff; 9], vec![0x03]].concat(),
            VarintProblem::Overflow,
        ),
    ];
    for (bytes, problem) in cases {
        let e = read_err(&log_with(&bytes));
        assert!(
            matches!(e, LogError::BadVarint { offset, frame: 0, problem: p } if offset == h && p == problem),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .contains(&format!("frame 0: bad varint at byte {h}")),
            "{e}"
        );
    }
}

#[test]
fn bad_delta_varint() {
    // Valid checksum, but the icount delta is not canonical.
    let frame = raw_frame(&[0x85, 0x00, 0x01]);
    let h = header_bytes().len() as u64;
    let e = read_err(&log_with(&frame));
    assert!(
        matches!(e, LogError::BadVarint { offset, frame: 0, problem: VarintProblem::NonCanonical } if offset == h + 1),
        "{e:?}"
    );
}

#[test]
fn frame_too_large() {
    let mut frame = Vec::new();
    varint::push(MAX_FRAME_BODY + 1, &mut frame);
    let e = read_err(&log_with(&frame));
    assert!(
        matches!(e, LogError::FrameTooLarge { len, frame: 0, .. } if len == MAX_FRAME_BODY + 1),
        "{e}"
    );

    let mut w = Writer::new(Vec::new(), &sample_header()).unwrap();
    let payload = vec![0; MAX_FRAME_BODY as usize - 1];
    let e = w.append(0, 1, &payload).unwrap_err();
    assert!(
        matches!(e, LogError::FrameTooLarge { len, .. } if len == MAX_FRAME_BODY + 1),
        "{e}"
    );
    // A large delta makes the body bigger too.
    let payload = vec![0; MAX_FRAME_BODY as usize - 2];
    assert!(matches!(
        w.append(1 << 40, 1, &payload),
        Err(LogError::FrameTooLarge { .. })
    ));
    // Rejection wrote nothing and the writer goes on.
    w.append(0, 1, b"ok").unwrap();
    let (got, end) = read_all(&w.finish().unwrap());
    end.unwrap();
    assert_eq!(got.len(), 1);

    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    assert!(enc
        .encode(0, 1, &vec![0; MAX_FRAME_BODY as usize], &mut out)
        .is_err());
    assert!(out.is_empty());
}

#[test]
fn frame_malformed() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x00], "shorter than 2"),
        (vec![0x01, 0x00, 0, 0, 0, 0], "shorter than 2"),
        (raw_frame(&[0x80, 0x80]), "delta runs past"),
        (raw_frame(&[0x05, KIND_END, 0x00]), "non-zero icount delta"),
        (
            raw_frame(&[0x00, KIND_END]),
            "not exactly one canonical varint",
        ),
        (
            raw_frame(&[0x00, KIND_END, 0x00, 0x00]),
            "not exactly one canonical varint",
        ),
        (
            raw_frame(&[0x00, KIND_END, 0x80, 0x00]),
            "not exactly one canonical varint",
        ),
    ];
    let h = header_bytes().len() as u64;
    for (frame, want) in cases {
        let e = read_err(&log_with(&frame));
        match &e {
            LogError::FrameMalformed {
                offset,
                frame: 0,
                reason,
            } => {
                assert_eq!(*offset, h);
                assert!(reason.contains(want), "{reason:?} vs {want:?}");
            }
            other => panic!("{want}: {other:?}"),
        }
    }
}

#[test]
fn invalid_kinds_on_read() {
    for kind in [0u8, 0xf0, 0xfe] {
        let frames = [raw_frame(&[0x01, 0x01]), raw_frame(&[0x01, kind, 9])].concat();
        let (got, end) = read_all(&log_with(&frames));
        assert_eq!(got.len(), 1);
        let e = end.unwrap_err();
        assert!(
            matches!(e, LogError::InvalidKind { frame: 1, kind: k, .. } if k == kind),
            "{e}"
        );
    }
}

#[test]
fn icount_overflow_on_read() {
    let mut body = Vec::new();
    varint::push(u64::MAX, &mut body);
    body.push(1);
    let frames = [raw_frame(&body), raw_frame(&[0x01, 0x01])].concat();
    let (got, end) = read_all(&log_with(&frames));
    assert_eq!(got[0].icount, u64::MAX);
    let e = end.unwrap_err();
    assert!(
        matches!(
            e,
            LogError::IcountOverflow {
                frame: 1,
                prev: u64::MAX,
                delta: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn entry_count_mismatch() {
    // A whole frame cut out of a valid log.
    let b = log_of(&[(1, 1, b"a"), (2, 1, b"b"), (3, 1, b"c")]);
    let h = header_bytes().len();
    let frame_len = 1 + 3 + 4;
    let cut = [&b[..h + frame_len], &b[h + 2 * frame_len..]].concat();
    let (got, end) = read_all(&cut);
    assert_eq!(got.len(), 2);
    let e = end.unwrap_err();
    assert!(
        matches!(
            e,
            LogError::EntryCountMismatch {
                recorded: 3,
                seen: 2,
                frame: 2,
                ..
            }
        ),
        "{e}"
    );
    // A duplicated frame.
    let dup = [&b[..h + frame_len], &b[h..]].concat();
    assert!(matches!(
        read_err(&dup),
        LogError::EntryCountMismatch {
            recorded: 3,
            seen: 4,
            ..
        }
    ));
}

#[test]
fn trailing_data() {
    let mut b = log_of(&[(1, 1, b"a")]);
    let end_at = b.len() as u64;
    b.extend_from_slice(b"junk");
    let (got, end) = read_all(&b);
    assert_eq!(got.len(), 1);
    let e = end.unwrap_err();
    assert!(
        matches!(e, LogError::TrailingData { offset, len: 4 } if offset == end_at),
        "{e}"
    );

    let mut d = StreamDecoder::with_header();
    d.push(&b);
    assert!(d.next_entry().unwrap().is_some());
    assert!(matches!(
        d.next_entry(),
        Err(LogError::TrailingData { len: 4, .. })
    ));
    // Bytes arriving after END was already seen.
    let mut d = StreamDecoder::with_header();
    d.push(&b[..b.len() - 4]);
    assert!(d.next_entry().unwrap().is_some());
    assert_eq!(d.next_entry().unwrap(), None);
    assert!(d.is_finished());
    d.push(b"x");
    assert!(
        matches!(d.next_entry(), Err(LogError::TrailingData { offset, len: 1 }) if offset == end_at)
    );
}

#[test]
fn errors_are_sticky() {
    let mut b = log_of(&[(1, 1, b"a"), (2, 1, b"b")]);
    let n = b.len();
    b[n - 3] ^= 4; // END's checksum
    let (_, mut r) = SliceReader::new(&b).unwrap();
    r.next_entry().unwrap();
    r.next_entry().unwrap();
    let e1 = r.next_entry().unwrap_err().to_string();
    let e2 = r.next_entry().unwrap_err().to_string();
    assert_eq!(e1, e2);

    let mut d = StreamDecoder::with_header();
    d.push(&b);
    d.next_entry().unwrap();
    d.next_entry().unwrap();
    let s1 = d.next_entry().unwrap_err().to_string();
    d.push(&end_frame(2));
    assert_eq!(d.next_entry().unwrap_err().to_string(), s1);
    assert_eq!(s1, e1);
}

// ---------------------------------------------------------------- writer errors

#[test]
fn icount_backwards_rejected() {
    let mut w = Writer::new(Vec::new(), &sample_header()).unwrap();
    w.append(10, 1, b"").unwrap();
    let at = w.bytes_written();
    let e = w.append(9, 1, b"").unwrap_err();
    assert!(
        matches!(e, LogError::IcountBackwards { frame: 1, prev: 10, got: 9, offset } if offset == at),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!(
            "frame 1 at byte {at}: icount goes backwards (10 -> 9)"
        )),
        "{e}"
    );
    assert_eq!(w.bytes_written(), at);
    w.append(10, 1, b"").unwrap();
    let (got, end) = read_all(&w.finish().unwrap());
    end.unwrap();
    assert_eq!(got.len(), 2);
}

#[test]
fn reserved_kinds_rejected() {
    let mut w = Writer::new(Vec::new(), &sample_header()).unwrap();
    for kind in [0u8, 0xf0, 0xf7, 0xff] {
        let e = w.append(1, kind, b"").unwrap_err();
        assert!(
            matches!(e, LogError::ReservedKind { kind: k, frame: 0, .. } if k == kind),
            "{e}"
        );
        assert!(e.to_string().contains("reserved"), "{e}");
    }
    for kind in [1u8, 0x7f, 0xef] {
        assert!(is_caller_kind(kind));
        w.append(1, kind, b"").unwrap();
    }
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    assert!(matches!(
        enc.encode(0, KIND_END, b"", &mut out),
        Err(LogError::ReservedKind { .. })
    ));
    assert!(out.is_empty());
}

#[test]
fn encoder_refuses_after_end() {
    let mut enc = FrameEncoder::new();
    let mut out = Vec::new();
    enc.encode(5, 1, b"x", &mut out).unwrap();
    enc.encode_end(&mut out).unwrap();
    assert!(enc.is_ended());
    let len = out.len();
    assert!(matches!(
        enc.encode(6, 1, b"", &mut out),
        Err(LogError::AfterEnd { frame: 2, .. })
    ));
    assert!(matches!(
        enc.encode_end(&mut out),
        Err(LogError::AfterEnd { .. })
    ));
    assert_eq!(out.len(), len);
    assert_eq!(enc.frames_encoded(), 2);
    assert_eq!(enc.entries_encoded(), 1);
    assert_eq!(enc.offset(), len as u64);
}

/// Accepts `budget` bytes, then fails every write.
struct FailingWriter {
    data: Vec<u8>,
    budget: usize,
    fail_flush: bool,
}

impl io::Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.budget == 0 {
            return Err(io::Error::other("disk full"));
        }
        let n = buf.len().min(self.budget);
        self.budget -= n;
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.fail_flush {
            Err(io::Error::other("flush failed"))
        } else {
            Ok(())
        }
    }
}

#[test]
fn io_errors_poison_the_writer() {
    let fw = |budget| FailingWriter {
        data: Vec::new(),
        budget,
        fail_flush: false,
    };
    // Header write fails.
    assert!(matches!(
        Writer::new(fw(3), &sample_header()),
        Err(LogError::Io { offset: 0, .. })
    ));

    let h = header_bytes().len();
    let mut w = Writer::new(fw(h + 5), &sample_header()).unwrap();
    w.append(1, 1, b"buffered").unwrap();
    let e = w.flush().unwrap_err();
    assert!(
        matches!(e, LogError::Io { offset, .. } if offset == h as u64),
        "{e}"
    );
    assert!(
        e.to_string().contains(&format!("at byte {h}: disk full")),
        "{e}"
    );
    let e = w.append(2, 1, b"").unwrap_err();
    assert!(
        matches!(e, LogError::Poisoned { offset } if offset == h as u64),
        "{e}"
    );
    assert!(matches!(w.flush(), Err(LogError::Poisoned { .. })));
    assert!(matches!(w.finish(), Err(LogError::Poisoned { .. })));

    // Large frames go straight through and fail there.
    let mut w = Writer::new(fw(h + 10), &sample_header()).unwrap();
    assert!(matches!(
        w.append(1, 1, &vec![0; 100_000]),
        Err(LogError::Io { .. })
    ));
    assert!(matches!(
        w.append(1, 1, b""),
        Err(LogError::Poisoned { .. })
    ));

    // Flush of the underlying writer fails.
    let w = Writer::new(
        FailingWriter {
            data: Vec::new(),
            budget: usize::MAX,
            fail_flush: true,
        },
        &sample_header(),
    )
    .unwrap();
    assert!(matches!(w.finish(), Err(LogError::Io { .. })));
}

#[test]
fn every_error_names_an_offset() {
    let errors = [
        read_err(&log_with(&raw_frame(&[0x01, 0x00]))),
        read_err(&log_with(&[0x80, 0x00])),
        read_err(&log_with(&[0x05])),
        LogHeader::decode(b"FTVMLOG\0\x01\x00").unwrap_err(),
    ];
    for e in errors {
        assert!(e.offset().is_some(), "{e:?}");
        assert!(e.to_string().contains("byte"), "{e}");
        if !matches!(e, LogError::Truncated { frame: None, .. }) {
            assert_eq!(e.frame(), Some(0));
            assert!(e.to_string().contains("frame 0"), "{e}");
        }
    }
}

// ---------------------------------------------------------------- stream decoder

#[test]
fn stream_frames_only() {
    let mut enc = FrameEncoder::new();
    let mut bytes = Vec::new();
    for i in 0..100u64 {
        enc.encode(i * 3, 7, &i.to_le_bytes(), &mut bytes).unwrap();
    }
    let mut d = StreamDecoder::new();
    assert!(d.header().is_none());
    let mut got = Vec::new();
    for chunk in bytes.chunks(7) {
        d.push(chunk);
        while let Some(e) = d.next_entry().unwrap() {
            got.push(e);
        }
    }
    assert_eq!(got.len(), 100);
    assert_eq!(got[99].icount, 297);
    assert_eq!(d.offset(), bytes.len() as u64);
    assert_eq!(d.buffered(), 0);
    assert!(!d.is_finished());
    // The sender died: no END.
    d.end_of_input();
    let e = d.next_entry().unwrap_err();
    assert!(
        matches!(
            e,
            LogError::Truncated {
                inside: Part::NextFrame,
                frame: Some(100),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn stream_end_of_input_mid_frame() {
    let mut enc = FrameEncoder::new();
    let mut bytes = Vec::new();
    enc.encode(1, 1, b"hello", &mut bytes).unwrap();
    let mut d = StreamDecoder::new();
    d.push(&bytes[..5]);
    assert_eq!(d.next_entry().unwrap(), None);
    d.end_of_input();
    d.push(&bytes[5..]); // ignored
    let e = d.next_entry().unwrap_err();
    assert!(
        matches!(
            e,
            LogError::Truncated {
                offset: 0,
                end: 5,
                inside: Part::FrameBody,
                frame: Some(0)
            }
        ),
        "{e}"
    );
}

#[test]
fn stream_with_header_incremental() {
    let b = log_of(&[(1, 1, b"x"), (9, 2, b"yy")]);
    let mut d = StreamDecoder::with_header();
    let mut got = Vec::new();
    for &byte in &b {
        d.push(&[byte]);
        while let Some(e) = d.next_entry().unwrap() {
            got.push(e);
        }
    }
    assert_eq!(d.header(), Some(&sample_header()));
    assert!(d.is_finished());
    assert_eq!(got.len(), 2);
    assert_eq!(d.entries_decoded(), 2);
    assert_eq!(d.last_icount(), 9);
    d.end_of_input();
    assert_eq!(d.next_entry().unwrap(), None);

    // Truncated inside the header.
    let mut d = StreamDecoder::with_header();
    d.push(&b[..20]);
    assert_eq!(d.next_entry().unwrap(), None);
    d.end_of_input();
    assert!(matches!(
        d.next_entry(),
        Err(LogError::Truncated {
            inside: Part::HeaderBody,
            frame: None,
            ..
        })
    ));

    // Not a log, detected from the first bytes.
    let mut d = StreamDecoder::with_header();
    d.push(b"GET / HTTP/1.1");
    assert!(matches!(d.next_entry(), Err(LogError::NotALog { .. })));
}

#[test]
fn stream_buffer_stays_bounded() {
    let mut enc = FrameEncoder::new();
    let mut d = StreamDecoder::new();
    let payload = vec![1u8; 1000];
    let mut frame = Vec::new();
    for i in 0..20_000u64 {
        frame.clear();
        enc.encode(i, 3, &payload, &mut frame).unwrap();
        d.push(&frame);
        let e = d.next_entry_ref().unwrap().unwrap();
        assert_eq!((e.icount, e.payload.len()), (i, 1000));
    }
    assert_eq!(d.offset(), enc.offset());
    assert_eq!(d.buffered(), 0);
}

/// The tail of a log whose last pages never reached the disk (zeros, maybe
/// after the start of one frame) is told apart from damage followed by data.
#[test]
fn unwritten_tail_is_told_from_damage() {
    let frame_a = raw_frame(&[5, 1, 0xaa, 0xbb]);
    let frame_b = raw_frame(&[3, 1, 0xcc, 0xdd, 0xee]);
    let stopped_after_a = |tail: &[u8]| {
        let mut frames = frame_a.clone();
        frames.extend_from_slice(tail);
        let bytes = log_with(&frames);
        let (_, mut r) = SliceReader::new(&bytes).unwrap();
        assert!(r.next_entry().unwrap().is_some());
        assert!(r.next_entry().is_err());
        r.rest_is_unwritten()
    };
    // Only zeros after the last whole frame.
    assert!(stopped_after_a(&[0; 100]));
    // The first half of frame B written, the rest of its sectors zero.
    let mut half = frame_b[..frame_b.len() / 2].to_vec();
    half.resize(frame_b.len(), 0);
    half.extend_from_slice(&[0; 50]);
    assert!(stopped_after_a(&half));
    // Frame B whole but one bit flipped: damage (its checksum byte is not zero).
    let mut flipped = frame_b.clone();
    flipped[2] ^= 1;
    assert_ne!(
        flipped.last(),
        Some(&0),
        "pick a frame whose CRC ends non-zero"
    );
    assert!(!stopped_after_a(&flipped));
    // Zeros with data after them: damage.
    let mut zeros_then_data = vec![0; 64];
    zeros_then_data.extend_from_slice(&frame_b);
    assert!(!stopped_after_a(&zeros_then_data));
    // Nothing after the frame at all is a clean cut, not a zero tail.
    assert!(!stopped_after_a(&[]));
}
