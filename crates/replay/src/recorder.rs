//! The recorder: writes every input applied to a machine, at the step it was
//! applied, plus periodic state digests and output hashes, to a log.
//!
//! The driver calls [`Recorder::input`] for each input just before applying
//! it, [`Recorder::outputs`] with what the machine produced, and
//! [`Recorder::checkpoint`] whenever the machine stands at a step where a
//! digest may be due ([`Recorder::next_digest_at`] tells the driver where to
//! stop so that digests land on a regular grid).

use std::io::Write;

use ftvm_log::{LogError, LogHeader, Writer};
use ftvm_machine::{Input, Machine, Output};

use crate::codec::{EndReason, Record};

/// Running hash of outputs, independent of how the driver batched them:
/// console bytes are hashed as one byte stream, other outputs one by one.
#[derive(Default)]
pub struct OutputHasher {
    console: xxhash_rust::xxh3::Xxh3,
    other: xxhash_rust::xxh3::Xxh3,
    count: u64,
}

impl OutputHasher {
    pub fn add(&mut self, o: &Output) {
        match o {
            Output::Console(b) => {
                self.console.update(b);
                self.count += b.len() as u64;
            }
            other => {
                if let Ok(bytes) = postcard::to_stdvec(other) {
                    self.other.update(&(bytes.len() as u64).to_le_bytes());
                    self.other.update(&bytes);
                }
                self.count += 1;
            }
        }
    }

    /// (hash, count) of everything since the last call; resets.
    pub fn take(&mut self) -> (u64, u64) {
        let h = self.console.digest() ^ self.other.digest().rotate_left(1);
        let c = self.count;
        *self = OutputHasher::default();
        (h, c)
    }
}

pub struct Recorder<W: Write> {
    writer: Writer<W>,
    digest_interval: u64,
    next_digest: u64,
    outputs: OutputHasher,
    buf: Vec<u8>,
    inputs: u64,
    digests: u64,
}

impl<W: Write> Recorder<W> {
    /// Starts a log with `header` (its `digest_interval` sets how often,
    /// in steps, digests are written; 0 = only at the end).
    pub fn new(w: W, header: &LogHeader) -> Result<Self, LogError> {
        let writer = Writer::new(w, header)?;
        let interval = header.digest_interval;
        Ok(Recorder {
            writer,
            digest_interval: interval,
            next_digest: if interval == 0 { u64::MAX } else { interval },
            outputs: OutputHasher::default(),
            buf: Vec::new(),
            inputs: 0,
            digests: 0,
        })
    }

    fn append(&mut self, icount: u64, rec: &Record) -> Result<(), LogError> {
        let kind = rec.encode(&mut self.buf);
        self.writer.append(icount, kind, &self.buf)?;
        Ok(())
    }

    /// Logs `input`, which the driver is about to apply at step `icount`.
    pub fn input(&mut self, icount: u64, input: &Input) -> Result<(), LogError> {
        self.inputs += 1;
        self.append(icount, &Record::Input(input.clone()))
    }

    /// Accounts for outputs the machine produced.
    pub fn outputs(&mut self, outs: &[Output]) {
        for o in outs {
            self.outputs.add(o);
        }
    }

    /// The step at which the next digest is due.
    pub fn next_digest_at(&self) -> u64 {
        self.next_digest
    }

    /// Writes a digest (and the output hash) if one is due at the machine's
    /// current step. Call after applying the inputs of that step.
    pub fn checkpoint(&mut self, m: &mut Machine) -> Result<(), LogError> {
        let icount = m.icount();
        if icount < self.next_digest {
            return Ok(());
        }
        self.write_digest(m)?;
        while self.next_digest <= icount {
            self.next_digest = self.next_digest.saturating_add(self.digest_interval.max(1));
        }
        Ok(())
    }

    fn write_digest(&mut self, m: &mut Machine) -> Result<(), LogError> {
        let icount = m.icount();
        let (hash, count) = self.outputs.take();
        self.append(icount, &Record::Outputs { hash, count })?;
        let d = m.digest();
        self.append(icount, &Record::Digest(Box::new(d)))?;
        self.digests += 1;
        Ok(())
    }

    /// Ends the log: a final output hash and digest, the end record, flush.
    pub fn finish(mut self, m: &mut Machine, reason: EndReason) -> Result<W, LogError> {
        self.write_digest(m)?;
        let icount = m.icount();
        self.append(icount, &Record::End(reason))?;
        self.writer.finish()
    }

    pub fn flush(&mut self) -> Result<(), LogError> {
        self.writer.flush()
    }

    pub fn bytes_written(&self) -> u64 {
        self.writer.bytes_written()
    }
    pub fn inputs_logged(&self) -> u64 {
        self.inputs
    }
    pub fn digests_logged(&self) -> u64 {
        self.digests
    }
}
