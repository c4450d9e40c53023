//! Property tests of the log codecs: round trips of arbitrary headers and
//! entry sequences through every writer/reader pair and arbitrary chunkings,
//! truncation at every byte offset, every single-bit flip, hostile and random
//! bytes, and agreement between `SliceReader` and `StreamDecoder`.

use std::mem::discriminant;

use ftvm_log::*;
use proptest::prelude::*;

type Entries = Vec<OwnedEntry>;

fn arb_image() -> impl Strategy<Value = ImageId> {
    (
        ".{0,12}",
        any::<u64>(),
        proptest::array::uniform32(any::<u8>()),
    )
        .prop_map(|(role, size, sha256)| ImageId { role, size, sha256 })
}

fn arb_header() -> impl Strategy<Value = LogHeader> {
    (
        proptest::collection::vec(any::<u8>(), 0..64),
        proptest::collection::vec(arb_image(), 0..5),
        any::<u64>(),
        ".{0,24}",
        any::<u64>(),
    )
        .prop_map(
            |(machine_config, images, created_unix_ms, producer, digest_interval)| LogHeader {
                machine_config,
                images,
                created_unix_ms,
                producer,
                digest_interval,
            },
        )
}

fn arb_delta() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..4,
        4 => 0u64..100_000,
        1 => any::<u64>().prop_map(|d| d >> 8),
        1 => any::<u64>(),
    ]
}

fn arb_entries(max_len: usize, max_payload: usize) -> impl Strategy<Value = Entries> {
    proptest::collection::vec(
        (
            arb_delta(),
            1u8..=0xef,
            proptest::collection::vec(any::<u8>(), 0..max_payload),
        ),
        0..max_len,
    )
    .prop_map(|raw| {
        let mut icount = 0u64;
        raw.into_iter()
            .map(|(delta, kind, payload)| {
                icount = icount.saturating_add(delta);
                OwnedEntry {
                    icount,
                    kind,
                    payload,
                }
            })
            .collect()
    })
}

/// Writes a log; returns it and the end offset of every frame (END last).
fn write_log(header: &LogHeader, entries: &Entries) -> (Vec<u8>, Vec<u64>) {
    let mut w = Writer::new(Vec::new(), header).unwrap();
    let mut ends = Vec::new();
    for e in entries {
        w.append(e.icount, e.kind, &e.payload).unwrap();
        ends.push(w.bytes_written());
    }
    let bytes = w.finish().unwrap();
    ends.push(bytes.len() as u64);
    (bytes, ends)
}

fn read_slice(bytes: &[u8]) -> (Entries, Result<LogHeader, LogError>) {
    let mut out = Vec::new();
    let (header, mut r) = match SliceReader::new(bytes) {
        Ok(v) => v,
        Err(e) => return (out, Err(e)),
    };
    loop {
        match r.next_entry() {
            Ok(Some(e)) => out.push(e.into_owned()),
            Ok(None) => return (out, Ok(header)),
            Err(e) => return (out, Err(e)),
        }
    }
}

/// Feeds `bytes` to `d` in chunks of the given sizes (cycled), collecting entries.
fn feed(d: &mut StreamDecoder, bytes: &[u8], chunks: &[usize]) -> (Entries, Result<(), LogError>) {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut sizes = chunks.iter().cycle();
    while pos < bytes.len() {
        let n = (*sizes.next().unwrap_or(&1)).max(1).min(bytes.len() - pos);
        d.push(&bytes[pos..pos + n]);
        pos += n;
        loop {
            match d.next_entry() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(e) => return (out, Err(e)),
            }
        }
    }
    (out, Ok(()))
}

/// Feeds everything, declares end of input and drains.
fn read_stream(bytes: &[u8], chunks: &[usize]) -> (Entries, Result<(), LogError>) {
    let mut d = StreamDecoder::with_header();
    let (mut out, res) = feed(&mut d, bytes, chunks);
    if res.is_err() {
        return (out, res);
    }
    d.end_of_input();
    loop {
        match d.next_entry() {
            Ok(Some(e)) => out.push(e),
            Ok(None) => {
                assert!(d.is_finished(), "None after end of input means a clean end");
                return (out, Ok(()));
            }
            Err(e) => return (out, Err(e)),
        }
    }
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(prop_oneof![1usize..4, 1usize..64, 1usize..4096], 1..16)
}

/// Entries every reader returns must be non-decreasing and of caller kinds.
fn plausible(entries: &Entries) -> bool {
    entries.windows(2).all(|w| w[0].icount <= w[1].icount)
        && entries.iter().all(|e| is_caller_kind(e.kind))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn header_round_trip(h in arb_header()) {
        let b = h.encode().unwrap();
        prop_assert_eq!(LogHeader::decode(&b).unwrap(), (h.clone(), b.len()));
        prop_assert_eq!(h.check_compatible(&h), Ok(()));
    }

    #[test]
    fn writer_to_slice_reader(h in arb_header(), entries in arb_entries(40, 100)) {
        let (bytes, _) = write_log(&h, &entries);
        let (got, res) = read_slice(&bytes);
        prop_assert_eq!(res.unwrap(), h.clone());
        prop_assert_eq!(&got, &entries);

        // The Writer's frames are exactly what a FrameEncoder produces.
        let mut frames = h.encode().unwrap();
        let mut enc = FrameEncoder::new();
        for e in &entries {
            enc.encode(e.icount, e.kind, &e.payload, &mut frames).unwrap();
        }
        enc.encode_end(&mut frames).unwrap();
        prop_assert_eq!(&frames, &bytes);
    }

    #[test]
    fn frame_encoder_to_stream_decoder(entries in arb_entries(40, 100), chunks in chunk_sizes(), end in any::<bool>()) {
        let mut enc = FrameEncoder::new();
        let mut bytes = Vec::new();
        for e in &entries {
            enc.encode(e.icount, e.kind, &e.payload, &mut bytes).unwrap();
        }
        if end {
            enc.encode_end(&mut bytes).unwrap();
        }
        let mut d = StreamDecoder::new();
        let (got, res) = feed(&mut d, &bytes, &chunks);
        res.unwrap();
        prop_assert_eq!(&got, &entries);
        prop_assert_eq!(d.is_finished(), end);
        prop_assert_eq!(d.offset(), bytes.len() as u64);
        d.end_of_input();
        let tail = d.next_entry();
        if end {
            prop_assert_eq!(tail.unwrap(), None);
        } else {
            let is_truncated = matches!(tail, Err(LogError::Truncated { inside: Part::NextFrame, .. }));
            prop_assert!(is_truncated);
        }
    }

    #[test]
    fn whole_log_through_stream_decoder(h in arb_header(), entries in arb_entries(30, 100), chunks in chunk_sizes()) {
        let (bytes, _) = write_log(&h, &entries);
        let (got, res) = read_stream(&bytes, &chunks);
        res.unwrap();
        prop_assert_eq!(&got, &entries);
    }

    #[test]
    fn truncation_at_every_offset(h in arb_header(), entries in arb_entries(12, 40)) {
        let (bytes, ends) = write_log(&h, &entries);
        let header_len = h.encode().unwrap().len();
        for cut in 0..bytes.len() {
            let (got, res) = read_slice(&bytes[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut as u64).count();
            // Exactly the frames wholly inside the prefix, and they are right.
            prop_assert_eq!(&got[..], &entries[..complete.min(entries.len())], "cut {}", cut);
            match res {
                Err(LogError::Truncated { offset, end, frame, .. }) => {
                    prop_assert_eq!(end, cut as u64);
                    if cut < header_len {
                        prop_assert_eq!((offset, frame), (0, None));
                    } else {
                        let start = if complete == 0 { header_len as u64 } else { ends[complete - 1] };
                        prop_assert_eq!((offset, frame), (start, Some(complete as u64)));
                    }
                }
                other => prop_assert!(false, "cut {}: {:?}", cut, other),
            }
            // The stream decoder agrees.
            let (sgot, sres) = read_stream(&bytes[..cut], &[cut.max(1)]);
            prop_assert_eq!(&sgot, &got);
            let same = matches!(sres, Err(LogError::Truncated { end, .. }) if end == cut as u64);
            prop_assert!(same, "stream at cut {}", cut);
        }
    }

    #[test]
    fn every_single_bit_flip_is_detected(h in arb_header(), entries in arb_entries(6, 24)) {
        let (bytes, _) = write_log(&h, &entries);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut bad = bytes.clone();
                bad[i] ^= 1 << bit;
                let (got, res) = read_slice(&bad);
                prop_assert!(res.is_err(), "flip of byte {} bit {} went unnoticed", i, bit);
                // Whatever was returned before the error is genuine.
                prop_assert!(got.len() <= entries.len());
                prop_assert_eq!(&got[..], &entries[..got.len()], "flip of byte {} bit {}", i, bit);
                let (sgot, sres) = read_stream(&bad, &[bad.len()]);
                prop_assert!(sres.is_err());
                prop_assert_eq!(&sgot, &got);
            }
        }
    }

    #[test]
    fn random_bit_flips_in_larger_logs(
        h in arb_header(),
        entries in arb_entries(60, 300),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..4),
    ) {
        let (bytes, _) = write_log(&h, &entries);
        let mut bad = bytes.clone();
        for (idx, bit) in &flips {
            let i = idx.index(bad.len());
            bad[i] ^= 1 << bit;
        }
        prop_assume!(bad != bytes); // two flips may cancel
        let (got, res) = read_slice(&bad);
        prop_assert!(res.is_err());
        prop_assert_eq!(&got[..], &entries[..got.len()]);
    }

    #[test]
    fn random_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), chunks in chunk_sizes()) {
        let (got, _) = read_slice(&bytes);
        prop_assert!(plausible(&got));
        let (got, _) = read_stream(&bytes, &chunks);
        prop_assert!(plausible(&got));
        let mut d = StreamDecoder::new();
        let (got, _) = feed(&mut d, &bytes, &chunks);
        prop_assert!(plausible(&got));
        d.end_of_input();
        let _ = d.next_entry();
    }

    #[test]
    fn garbage_after_a_valid_header(h in arb_header(), tail in proptest::collection::vec(any::<u8>(), 0..512), chunks in chunk_sizes()) {
        let mut bytes = h.encode().unwrap();
        bytes.extend_from_slice(&tail);
        let (got, res) = read_slice(&bytes);
        prop_assert!(plausible(&got));
        let (sgot, sres) = read_stream(&bytes, &chunks);
        prop_assert_eq!(&sgot, &got);
        prop_assert_eq!(sres.map_err(|e| e.to_string()), res.map(|_| ()).map_err(|e| e.to_string()));
    }

    /// Frames with correct lengths and checksums but arbitrary bodies: the
    /// body parser faces hostile input directly.
    #[test]
    fn hostile_frames_with_valid_checksums(
        bodies in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..24), 0..12),
        chunks in chunk_sizes(),
    ) {
        let mut bytes = LogHeader::default().encode().unwrap();
        for body in &bodies {
            varint::push(body.len() as u64, &mut bytes);
            bytes.extend_from_slice(body);
            bytes.extend_from_slice(&crc32c_of(body).to_le_bytes());
        }
        let (got, res) = read_slice(&bytes);
        prop_assert!(plausible(&got));
        let (sgot, sres) = read_stream(&bytes, &chunks);
        prop_assert_eq!(&sgot, &got);
        prop_assert_eq!(sres.map_err(|e| e.to_string()), res.map(|_| ()).map_err(|e| e.to_string()));
    }

    /// Whatever the damage, both readers return the same entries and fail
    /// the same way at the same place.
    #[test]
    fn slice_and_stream_agree_on_damaged_logs(
        h in arb_header(),
        entries in arb_entries(20, 60),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        cut in any::<prop::sample::Index>(),
        do_cut in any::<bool>(),
        chunks in chunk_sizes(),
    ) {
        let (mut bytes, _) = write_log(&h, &entries);
        for (idx, v) in &edits {
            let i = idx.index(bytes.len());
            bytes[i] = *v;
        }
        if do_cut {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let (got, res) = read_slice(&bytes);
        let (sgot, sres) = read_stream(&bytes, &chunks);
        prop_assert_eq!(&sgot, &got);
        match (res, sres) {
            (Ok(_), Ok(())) => prop_assert_eq!(&got, &entries),
            (Err(a), Err(b)) => {
                prop_assert_eq!(discriminant(&a), discriminant(&b), "{} vs {}", a, b);
                prop_assert_eq!(a.offset(), b.offset());
                prop_assert_eq!(a.frame(), b.frame());
                prop_assert_eq!(&got[..], &entries[..got.len().min(entries.len())]);
            }
            (a, b) => prop_assert!(false, "slice {:?} vs stream {:?}", a, b),
        }
    }
}

/// CRC-32C (Castagnoli), bitwise, independent of the crate under test.
fn crc32c_of(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn reference_crc_matches_check_value() {
    assert_eq!(crc32c_of(b"123456789"), 0xe306_9283);
}

/// The example log of docs/log-format.md, byte for byte.
#[test]
fn golden_example_log() {
    let h = LogHeader {
        machine_config: vec![0xaa],
        images: vec![],
        created_unix_ms: 2,
        producer: "p".into(),
        digest_interval: 3,
    };
    let mut w = Writer::new(Vec::new(), &h).unwrap();
    w.append(300, 0x12, b"abc").unwrap();
    let bytes = w.finish().unwrap();
    #[rustfmt::skip]
    let expected: Vec<u8> = vec![
        0x46, 0x54, 0x56, 0x4d, 0x4c, 0x4f, 0x47, 0x00, // magic
        0x01, 0x00, // version 1
        0x2a, 0x00, 0x00, 0x00, // body length 42
        0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0xaa,
        0x03, 0x00, 0x08, 0x00, 0x00, 0x00, 0x02, 0, 0, 0, 0, 0, 0, 0,
        0x04, 0x00, 0x01, 0x00, 0x00, 0x00, b'p',
        0x05, 0x00, 0x08, 0x00, 0x00, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0,
        0xf1, 0x4a, 0x78, 0xee, // header CRC
        0x06, 0xac, 0x02, 0x12, b'a', b'b', b'c', 0x90, 0x23, 0x2b, 0x6c,
        0x03, 0x00, 0xff, 0x01, 0xfa, 0x04, 0xec, 0x31,
    ];
    assert_eq!(bytes, expected);
    // The checksums agree with an independent CRC-32C.
    assert_eq!(crc32c_of(&expected[..56]).to_le_bytes(), expected[56..60]);
    assert_eq!(crc32c_of(&expected[61..67]).to_le_bytes(), expected[67..71]);
    assert_eq!(crc32c_of(&expected[72..75]).to_le_bytes(), expected[75..79]);
}
