//! The recording format (`ftvm_log`) and the records in it
//! (`ftvm_replay::Record`), what `ftvm replay` and a backup's saved log
//! read from disk: the slice reader and the streaming decoder must agree
//! entry by entry, and a decoded record must re-encode to itself.

use ftvm_log::{OwnedEntry, SliceReader, StreamDecoder};
use ftvm_replay::{recorded_config, Record};

pub fn run(data: &[u8]) {
    let from_slice = slice_entries(data);
    let from_stream = stream_entries(data);
    let n = from_slice.len().min(from_stream.len());
    assert_eq!(
        from_slice[..n],
        from_stream[..n],
        "the slice reader and the stream decoder disagree"
    );
    for e in &from_slice {
        record_roundtrip(e);
    }
}

fn slice_entries(data: &[u8]) -> Vec<OwnedEntry> {
    let mut out = Vec::new();
    let Ok((header, mut reader)) = SliceReader::new(data) else {
        return out;
    };
    let _ = recorded_config(&header);
    if let Ok(bytes) = header.encode() {
        match ftvm_log::LogHeader::decode(&bytes) {
            Ok((h2, _)) => assert_eq!(h2, header, "header changed through encode/decode"),
            Err(e) => panic!("an encoded header does not decode: {e}"),
        }
    }
    while let Ok(Some(e)) = reader.next_entry() {
        out.push(OwnedEntry {
            icount: e.icount,
            kind: e.kind,
            payload: e.payload.to_vec(),
        });
    }
    let _ = reader.rest_is_unwritten();
    out
}

fn stream_entries(data: &[u8]) -> Vec<OwnedEntry> {
    let mut out = Vec::new();
    let step = 1 + data.last().map_or(0, |&b| b as usize % 61);
    let mut dec = StreamDecoder::with_header();
    for chunk in data.chunks(step) {
        dec.push(chunk);
        loop {
            match dec.next_entry() {
                Ok(Some(e)) => out.push(e),
                Ok(None) => break,
                Err(_) => return out,
            }
        }
    }
    dec.end_of_input();
    while let Ok(Some(e)) = dec.next_entry() {
        out.push(e);
    }
    out
}

fn record_roundtrip(e: &OwnedEntry) {
    let Ok(rec) = Record::decode(e.kind, &e.payload) else {
        return;
    };
    let mut buf = Vec::new();
    let kind = rec.encode(&mut buf);
    match Record::decode(kind, &buf) {
        Ok(r2) => assert_eq!(r2, rec, "record changed through encode/decode"),
        Err(err) => panic!("an encoded record does not decode: {err}"),
    }
}
