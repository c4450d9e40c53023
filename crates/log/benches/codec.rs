//! Throughput of the log codecs: encoding through `Writer` and
//! `FrameEncoder`, decoding through `SliceReader` and `StreamDecoder`, for
//! small (8-byte) and large (1500-byte) payloads. Prints MB/s (10^6 bytes of
//! encoded log per second) and entries/s, best of several runs.
//!
//! Run with `cargo bench -p ftvm-log`; `-- --quick` does fewer runs.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ftvm_log::{FrameEncoder, LogHeader, SliceReader, StreamDecoder, Writer};

struct Case {
    payload_len: usize,
    entries: usize,
}

fn header() -> LogHeader {
    LogHeader {
        machine_config: vec![0; 64],
        producer: "bench".into(),
        ..LogHeader::default()
    }
}

/// Entry i: icount grows by a few hundred instructions, kinds cycle.
fn icount(i: usize) -> u64 {
    (i as u64) * 317
}

fn kind(i: usize) -> u8 {
    (i % 7 + 1) as u8
}

fn best_of(runs: usize, mut f: impl FnMut() -> usize) -> (Duration, usize) {
    let mut best = Duration::MAX;
    let mut last = 0;
    for _ in 0..runs {
        let t = Instant::now();
        last = black_box(f());
        best = best.min(t.elapsed());
    }
    (best, last)
}

fn report(name: &str, case: &Case, bytes: usize, t: Duration) {
    let s = t.as_secs_f64();
    println!(
        "{name:<28} payload {:>5} B  {:>9.1} MB/s  {:>12.0} entries/s  ({} entries, {:.1} MB in {:.1} ms)",
        case.payload_len,
        bytes as f64 / s / 1e6,
        case.entries as f64 / s,
        case.entries,
        bytes as f64 / 1e6,
        s * 1e3
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let runs = if quick { 2 } else { 7 };
    let cases = [
        Case {
            payload_len: 8,
            entries: 2_000_000,
        },
        Case {
            payload_len: 1500,
            entries: 100_000,
        },
    ];
    let h = header();
    for case in &cases {
        let payload = vec![0xa5u8; case.payload_len];

        // Output buffers are reused so that page faults are not measured.
        let mut sink = Vec::with_capacity(case.entries * (case.payload_len + 16));
        let (t, log_len) = best_of(runs, || {
            sink.clear();
            let mut w = Writer::new(&mut sink, &h).unwrap();
            for i in 0..case.entries {
                w.append(icount(i), kind(i), &payload).unwrap();
            }
            w.finish().unwrap().len()
        });
        report("encode Writer<Vec<u8>>", case, log_len, t);

        let mut out = Vec::with_capacity(case.entries * (case.payload_len + 16));
        let (t, n) = best_of(runs, || {
            out.clear();
            let mut enc = FrameEncoder::new();
            for i in 0..case.entries {
                enc.encode(icount(i), kind(i), &payload, &mut out).unwrap();
            }
            out.len()
        });
        report("encode FrameEncoder", case, n, t);

        let mut w = Writer::new(Vec::new(), &h).unwrap();
        for i in 0..case.entries {
            w.append(icount(i), kind(i), &payload).unwrap();
        }
        let log = w.finish().unwrap();

        let (t, _) = best_of(runs, || {
            let (_, mut r) = SliceReader::new(&log).unwrap();
            let mut sum = 0usize;
            while let Some(e) = r.next_entry().unwrap() {
                sum = sum.wrapping_add(e.payload.len() + e.kind as usize);
            }
            sum
        });
        report("decode SliceReader", case, log.len(), t);

        for (name, owned) in [
            ("decode StreamDecoder (ref)", false),
            ("decode StreamDecoder (owned)", true),
        ] {
            let (t, _) = best_of(runs, || {
                let mut d = StreamDecoder::with_header();
                let mut sum = 0usize;
                for chunk in log.chunks(64 * 1024) {
                    d.push(chunk);
                    if owned {
                        while let Some(e) = d.next_entry().unwrap() {
                            sum = sum.wrapping_add(e.payload.len());
                        }
                    } else {
                        while let Some(e) = d.next_entry_ref().unwrap() {
                            sum = sum.wrapping_add(e.payload.len());
                        }
                    }
                }
                assert!(d.is_finished());
                sum
            });
            report(name, case, log.len(), t);
        }
    }
}
