//! The replayer: re-executes a machine from a log with no host I/O at all.
//! It runs the machine to the step of each entry, applies inputs exactly
//! there, recomputes digests and output hashes where the recorder wrote
//! them, and stops at the first difference with the step range in which the
//! executions parted and what differs.

use std::fmt;

use ftvm_log::{LogError, SliceReader};
use ftvm_machine::{Input, Machine, Output, Stop};
use thiserror::Error;

use crate::codec::{CodecError, EndReason, Record};
use crate::recorder::OutputHasher;

/// Where and how a replay departed from the recording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Last step at which the states were verified equal (0 = the start).
    pub after: u64,
    /// Step at which the difference was detected.
    pub at: u64,
    pub differences: Vec<String>,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "replay diverged between step {} and step {}: {}",
            self.after,
            self.at,
            self.differences.join("; ")
        )
    }
}

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("the log is damaged")]
    Log(#[from] LogError),
    #[error("log entry {index} (step {icount}) is malformed")]
    Codec {
        index: u64,
        icount: u64,
        source: CodecError,
    },
    #[error("{0}")]
    Diverged(Divergence),
    #[error("the machine {what} at step {at}, but the log's next entry is at step {expected} (last verified step {after})")]
    Stalled {
        what: &'static str,
        at: u64,
        expected: u64,
        after: u64,
    },
    #[error("the log has entries after the recorder's end record (first at step {icount})")]
    AfterEnd { icount: u64 },
    /// Not damage: the recording stopped (SIGKILL, a host crash) before it
    /// wrote its end record. Every entry up to the cut was replayed and
    /// checked; `at` is the step the machine reached.
    #[error("{0}")]
    CutShort(CutShort),
    #[error("the log ends at step {at} without the recorder's end record (was the recording cut short?)")]
    NoEndRecord { at: u64 },
    #[error("the log's entry at step {expected} lies before the machine's current step {at}")]
    Behind { at: u64, expected: u64 },
}

/// Where a log that was cut short ends, and what its replay verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CutShort {
    /// The step the replay reached: that of the last complete entry.
    pub at: u64,
    /// The last step whose digest matched (0 = the start).
    pub verified: u64,
    /// Complete entries replayed.
    pub entries: u64,
    /// Byte offset where the complete frames end.
    pub offset: u64,
    /// What follows the last complete frame.
    pub tail: String,
}

impl fmt::Display for CutShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the log was cut short at byte {} ({}): replayed its {} complete entries to step {}; the last digest checked matched at step {}",
            self.offset, self.tail, self.entries, self.at, self.verified
        )
    }
}

/// Summary of a replay that reached the log's end record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayOutcome {
    pub end: EndReason,
    pub icount: u64,
    pub inputs: u64,
    pub digests: u64,
}

pub struct Replayer<'a> {
    reader: SliceReader<'a>,
    machine: Machine,
    outputs: OutputHasher,
    pending: Option<(u64, Record)>,
    index: u64,
    last_verified: u64,
    inject_at: Option<u64>,
    powered_off: bool,
    /// After a restore, the first output hash covers outputs from before the
    /// snapshot, which this replay never produced: it is not compared.
    outputs_partial: bool,
    /// An output-hash mismatch waiting for the digest at the same step, so
    /// the report can say what else differs.
    output_mismatch: Option<(u64, String)>,
    inputs: u64,
    digests: u64,
}

impl<'a> Replayer<'a> {
    /// A replayer for `machine` (freshly built from the log's spec and
    /// images, or restored from a snapshot) reading `reader`'s entries.
    pub fn new(machine: Machine, reader: SliceReader<'a>) -> Self {
        let start = machine.icount();
        Replayer {
            reader,
            machine,
            outputs: OutputHasher::default(),
            pending: None,
            index: 0,
            last_verified: start,
            inject_at: None,
            powered_off: false,
            outputs_partial: false,
            output_mismatch: None,
            inputs: 0,
            digests: 0,
        }
    }

    /// Test switch: at step `step`, apply one time input that is not in
    /// the log — the guest clock jumps a second ahead, as an unlogged read
    /// of the host clock would make it — so the next digest must catch it.
    pub fn inject_unlogged_time_at(&mut self, step: u64) {
        self.inject_at = Some(step);
    }

    pub fn machine(&self) -> &Machine {
        &self.machine
    }
    pub fn machine_mut(&mut self) -> &mut Machine {
        &mut self.machine
    }
    pub fn into_machine(self) -> Machine {
        self.machine
    }

    fn peek(&mut self) -> Result<Option<&(u64, Record)>, ReplayError> {
        if self.pending.is_none() {
            let next = match self.reader.next_entry() {
                Ok(next) => next,
                Err(e) => return Err(self.log_error(e)),
            };
            if let Some(e) = next {
                let rec =
                    Record::decode(e.kind, e.payload).map_err(|source| ReplayError::Codec {
                        index: self.index,
                        icount: e.icount,
                        source,
                    })?;
                self.index += 1;
                self.pending = Some((e.icount, rec));
            }
        }
        Ok(self.pending.as_ref())
    }

    /// Classifies a log error: the end of a recording that was cut short
    /// (the frames stop, whole or mid-frame, or the rest of the file was
    /// never written: zero bytes) is [`ReplayError::CutShort`]; anything else — a
    /// bad checksum, a malformed frame with data after it — is damage.
    fn log_error(&mut self, e: LogError) -> ReplayError {
        let tail = match &e {
            LogError::Truncated { inside, .. } => match inside {
                ftvm_log::Part::NextFrame => "no end-of-log marker".to_string(),
                part => format!("the next frame is incomplete: {part}"),
            },
            _ if self.reader.rest_is_unwritten() => {
                "the rest was never written: zero bytes".to_string()
            }
            _ => return ReplayError::Log(e),
        };
        if let Some((at, msg)) = self.output_mismatch.take() {
            // The outputs already differed: that is the finding.
            return ReplayError::Diverged(Divergence {
                after: self.last_verified,
                at,
                differences: vec![msg],
            });
        }
        ReplayError::CutShort(CutShort {
            at: self.machine.icount(),
            verified: self.last_verified,
            entries: self.index,
            offset: self.reader.offset(),
            tail,
        })
    }

    /// Step of the next log entry, if any.
    pub fn next_entry_step(&mut self) -> Result<Option<u64>, ReplayError> {
        Ok(self.peek()?.map(|(i, _)| *i))
    }

    /// Drops entries before the machine's current step (after restoring a
    /// snapshot taken at that step); returns how many were skipped.
    pub fn skip_to_machine(&mut self) -> Result<u64, ReplayError> {
        let at = self.machine.icount();
        let mut n = 0;
        while let Some((i, _)) = self.peek()? {
            if *i >= at {
                break;
            }
            self.pending = None;
            n += 1;
        }
        self.last_verified = at;
        self.outputs_partial = true;
        Ok(n)
    }

    /// Runs the machine, applying nothing, until step `target`.
    pub fn advance_to(
        &mut self,
        target: u64,
        on_output: &mut dyn FnMut(&Output),
    ) -> Result<(), ReplayError> {
        loop {
            let at = self.machine.icount();
            if at == target {
                return Ok(());
            }
            if at > target {
                return Err(ReplayError::Behind {
                    at,
                    expected: target,
                });
            }
            if self.powered_off {
                return Err(self.stalled("powered off", target));
            }
            let limit = match self.inject_at {
                Some(s) if s > at && s < target => s,
                _ => target,
            };
            let stop = self.machine.run(limit);
            for o in self.machine.take_outputs() {
                self.outputs.add(&o);
                on_output(&o);
            }
            match stop {
                Stop::Limit => {}
                Stop::Idle { .. } => {
                    if self.machine.icount() < target {
                        return Err(self.stalled("went idle waiting for an interrupt", target));
                    }
                }
                Stop::Finished(_) => self.powered_off = true,
            }
            if self.inject_at == Some(self.machine.icount()) {
                self.inject_at = None;
                let t = self.machine.guest_time() + ftvm_machine::layout::TIMEBASE_HZ; // a second that never happened
                self.machine.apply(&Input::Time(t));
            }
        }
    }

    fn stalled(&self, what: &'static str, expected: u64) -> ReplayError {
        ReplayError::Stalled {
            what,
            at: self.machine.icount(),
            expected,
            after: self.last_verified,
        }
    }

    /// Processes the next entry. Returns the outcome once the end record
    /// has been reached, `None` while there is more.
    pub fn step(
        &mut self,
        on_output: &mut dyn FnMut(&Output),
    ) -> Result<Option<ReplayOutcome>, ReplayError> {
        let Some((icount, _)) = self.peek()? else {
            return Err(ReplayError::NoEndRecord {
                at: self.machine.icount(),
            });
        };
        let icount = *icount;
        if let Some((at, msg)) = self.output_mismatch.take() {
            // The record after an output mismatch is not the digest of that step.
            if !(icount == at && matches!(self.pending, Some((_, Record::Digest(_))))) {
                return Err(ReplayError::Diverged(Divergence {
                    after: self.last_verified,
                    at,
                    differences: vec![msg],
                }));
            }
            self.output_mismatch = Some((at, msg));
        }
        self.advance_to(icount, on_output)?;
        let Some((_, rec)) = self.pending.take() else {
            return Ok(None);
        };
        match rec {
            Record::Input(input) => {
                self.machine.apply(&input);
                self.inputs += 1;
            }
            Record::Outputs { hash, count } => {
                let (h, c) = self.outputs.take();
                if std::mem::take(&mut self.outputs_partial) {
                    // Nothing to compare: see `outputs_partial`.
                } else if (h, c) != (hash, count) {
                    self.output_mismatch = Some((
                        icount,
                        format!(
                            "outputs differ: the recording produced {count} output units, the replay {c} (hashes {hash:#x} / {h:#x})"
                        ),
                    ));
                }
            }
            Record::Digest(expected) => {
                let found = self.machine.digest();
                let mut differences: Vec<String> = self
                    .output_mismatch
                    .take()
                    .map(|(_, m)| m)
                    .into_iter()
                    .collect();
                differences.extend(expected.differences(&found));
                if !differences.is_empty() {
                    return Err(ReplayError::Diverged(Divergence {
                        after: self.last_verified,
                        at: icount,
                        differences,
                    }));
                }
                self.last_verified = icount;
                self.digests += 1;
            }
            Record::End(end) => {
                // Nothing may follow but the log's own end frame: a log cut
                // or damaged after the end record is still a damaged log.
                let next = match self.reader.next_entry() {
                    Ok(next) => next,
                    // The end record was written but not the log's end
                    // frame: the recording stopped right at its end.
                    Err(e) => return Err(self.log_error(e)),
                };
                if let Some(e) = next {
                    return Err(ReplayError::AfterEnd { icount: e.icount });
                }
                return Ok(Some(ReplayOutcome {
                    end,
                    icount,
                    inputs: self.inputs,
                    digests: self.digests,
                }));
            }
        }
        Ok(None)
    }

    /// Replays to the end record.
    pub fn run(
        &mut self,
        on_output: &mut dyn FnMut(&Output),
    ) -> Result<ReplayOutcome, ReplayError> {
        loop {
            if let Some(outcome) = self.step(on_output)? {
                return Ok(outcome);
            }
        }
    }
}
