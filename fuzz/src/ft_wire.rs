//! The FT logging-channel decoder (`ftvm_ft::wire`), the bytes a backup,
//! primary or joiner reads from its peer: one-shot and streaming decoding
//! must agree frame by frame, a decoded frame must re-encode to itself,
//! and the entry batches inside `Log` messages must decode or fail cleanly.

use ftvm_ft::wire::{decode_entries, decode_exact, decode_frame, WireDecoder};
use ftvm_ft::Frame;

pub fn run(data: &[u8]) {
    let _ = decode_exact(data);
    let _ = decode_entries(data);

    // The streaming decoder, fed in chunks whose size the input picks.
    let step = 1 + data.first().map_or(0, |&b| b as usize % 97);
    let mut dec = WireDecoder::new();
    let mut frames: Vec<Frame> = Vec::new();
    let mut failed = false;
    'feed: for chunk in data.chunks(step) {
        dec.push(chunk);
        loop {
            match dec.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'feed;
                }
            }
        }
    }
    if !failed {
        let _ = dec.finish();
    }

    // Every frame the stream produced is the one-shot decoder's at the same offset.
    let mut off = 0usize;
    for f in &frames {
        match decode_frame(&data[off..], off as u64) {
            Ok(Some((g, used))) => {
                assert_eq!(
                    &g, f,
                    "streaming and one-shot decoding differ at byte {off}"
                );
                off += used;
            }
            other => panic!("one-shot decoding at byte {off} gave {other:?}, the stream a frame"),
        }
        roundtrip(f);
    }
}

fn roundtrip(f: &Frame) {
    let bytes = match f.to_bytes() {
        Ok(b) => b,
        Err(e) => panic!("a decoded frame does not encode: {e}: {f:?}"),
    };
    match decode_exact(&bytes) {
        Ok(g) => assert_eq!(&g, f, "frame changed through encode/decode"),
        Err(e) => panic!("an encoded frame does not decode: {e}"),
    }
    if let ftvm_ft::Message::Log { entries, .. } = &f.message {
        let _ = decode_entries(entries);
    }
}
