//! ftvm-replay: record a machine's inputs to a log and re-execute it from
//! that log, checking that the re-execution is the same execution.
//!
//! The log is an `ftvm-log` stream whose header identifies the machine (its
//! [`MachineSpec`](ftvm_machine::MachineSpec)) and the images it booted, and
//! whose entries are [`Record`]s: every [`Input`](ftvm_machine::Input) at
//! the step it was applied, a [`StateDigest`](ftvm_machine::StateDigest) of
//! the whole machine every `digest_interval` steps, a hash of the outputs
//! produced since the previous digest, and the end of the run. The same
//! records will travel on the fault-tolerance logging channel.
//!
//! Nothing here reads a clock, a socket or a file: the recorder writes to
//! any `io::Write`, the replayer reads a byte slice.

mod codec;
mod header;
mod recorder;
mod replayer;

pub use codec::{CodecError, EndReason, Record};
pub use header::{
    file_image_id, image_id, log_header, pair_identity, recorded_config, HeaderError,
    RecordedConfig,
};
pub use recorder::{OutputHasher, Recorder};
pub use replayer::{CutShort, Divergence, ReplayError, ReplayOutcome, Replayer};
