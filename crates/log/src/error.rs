//! The crate's error type. Every variant that concerns a position in a log
//! carries the absolute byte offset (counted from the first byte of the log,
//! or of the stream for a frames-only `StreamDecoder`) and, for frames, the
//! 0-based frame index, so a message alone tells where a log is damaged.

use std::fmt;
use std::io;
use std::sync::Arc;

/// Which part of the log was cut off by a truncation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The 8-byte magic number.
    Magic,
    /// The version and header-length fields after the magic.
    HeaderPrefix,
    /// The header body (its typed fields).
    HeaderBody,
    /// The header checksum.
    HeaderCrc,
    /// Nothing of the next frame is present: the log stops cleanly between two
    /// frames but has no end-of-log marker.
    NextFrame,
    /// A frame's length prefix.
    FrameLength,
    /// A frame's body.
    FrameBody,
    /// A frame's checksum.
    FrameCrc,
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::Magic => "the magic number",
            Part::HeaderPrefix => "the header's version/length fields",
            Part::HeaderBody => "the header body",
            Part::HeaderCrc => "the header checksum",
            Part::NextFrame => "the next frame (or end-of-log marker)",
            Part::FrameLength => "a frame's length prefix",
            Part::FrameBody => "a frame's body",
            Part::FrameCrc => "a frame's checksum",
        })
    }
}

/// Why a varint was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarintProblem {
    /// A shorter encoding of the same value exists (a trailing zero group).
    NonCanonical,
    /// More than 10 bytes.
    TooLong,
    /// The value does not fit in 64 bits.
    Overflow,
}

impl fmt::Display for VarintProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VarintProblem::NonCanonical => "non-canonical (overlong) encoding",
            VarintProblem::TooLong => "longer than 10 bytes",
            VarintProblem::Overflow => "value does not fit in 64 bits",
        })
    }
}

/// Everything that can go wrong reading or writing a log.
///
/// `Clone` so that decoders can repeat a sticky error; I/O errors are shared
/// behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogError {
    /// The first 8 bytes are not `FTVMLOG\0`.
    #[error("not an ftvm log: bad magic at byte 0 (expected \"FTVMLOG\\0\", found {found:02x?})")]
    NotALog { found: Vec<u8> },

    /// The format version is not one this build reads.
    #[error(
        "unsupported log format version {found} at byte 8 (this build reads version {supported})"
    )]
    UnsupportedVersion { found: u16, supported: u16 },

    /// The header body is longer than the format allows (on read or write).
    #[error(
        "header body of {len} bytes (length field at byte 10) exceeds the maximum of {max} bytes"
    )]
    HeaderTooLarge { len: u64, max: u64 },

    /// The header checksum does not match the header bytes.
    #[error("header corrupt: checksum at byte {offset} is {stored:08x}, the header bytes give {computed:08x}")]
    HeaderCorrupt {
        offset: u64,
        stored: u32,
        computed: u32,
    },

    /// The header checksum is fine but a field is malformed, duplicated,
    /// missing or unknown-and-critical.
    #[error("invalid log header at byte {offset}: {reason}")]
    HeaderInvalid { offset: u64, reason: String },

    /// The log ends inside the header or a frame, or without an end-of-log
    /// marker. `offset` is where the incomplete item starts, `end` where the
    /// data stops; everything before `offset` was valid.
    #[error("{}", truncated_message(*.offset, *.end, *.inside, *.frame))]
    Truncated {
        offset: u64,
        end: u64,
        inside: Part,
        frame: Option<u64>,
    },

    /// A frame's checksum does not match its body.
    #[error("frame {frame} at byte {offset}: checksum mismatch (stored {stored:08x}, body gives {computed:08x})")]
    FrameCrc {
        offset: u64,
        frame: u64,
        stored: u32,
        computed: u32,
    },

    /// A varint (a frame length or icount delta) is not canonical or too long.
    #[error("frame {frame}: bad varint at byte {offset}: {problem}")]
    BadVarint {
        offset: u64,
        frame: u64,
        problem: VarintProblem,
    },

    /// A frame body exceeds [`crate::MAX_FRAME_BODY`] (on read or write).
    #[error(
        "frame {frame} at byte {offset}: body of {len} bytes exceeds the maximum of {max} bytes"
    )]
    FrameTooLarge {
        offset: u64,
        frame: u64,
        len: u64,
        max: u64,
    },

    /// A frame passed its checksum but its body does not parse.
    #[error("frame {frame} at byte {offset}: malformed: {reason}")]
    FrameMalformed {
        offset: u64,
        frame: u64,
        reason: &'static str,
    },

    /// A frame carries kind 0 or a reserved kind this version does not know.
    #[error("frame {frame} at byte {offset}: entry kind {kind:#04x} is {}", kind_problem(*.kind))]
    InvalidKind { offset: u64, frame: u64, kind: u8 },

    /// Adding a frame's icount delta to the previous icount overflows u64.
    #[error("frame {frame} at byte {offset}: icount overflows u64 ({prev} + delta {delta})")]
    IcountOverflow {
        offset: u64,
        frame: u64,
        prev: u64,
        delta: u64,
    },

    /// The end-of-log marker records a different number of entries than the
    /// log holds: whole frames were lost or duplicated.
    #[error("frame {frame} at byte {offset}: end-of-log marker records {recorded} entries, the log holds {seen}")]
    EntryCountMismatch {
        offset: u64,
        frame: u64,
        recorded: u64,
        seen: u64,
    },

    /// Bytes follow the end-of-log marker.
    #[error("{len} unexpected bytes after the end-of-log marker, starting at byte {offset}")]
    TrailingData { offset: u64, len: u64 },

    /// The caller tried to append an entry whose icount is below the previous one.
    #[error("frame {frame} at byte {offset}: icount goes backwards ({prev} -> {got})")]
    IcountBackwards {
        offset: u64,
        frame: u64,
        prev: u64,
        got: u64,
    },

    /// The caller tried to append an entry with kind 0 or a kind in 0xF0..=0xFF.
    #[error("frame {frame} at byte {offset}: entry kind {kind:#04x} is reserved (0 is invalid, 0xf0..=0xff belong to the log format)")]
    ReservedKind { offset: u64, frame: u64, kind: u8 },

    /// The caller tried to encode an entry after the end-of-log marker.
    #[error("frame {frame} at byte {offset}: entry after the end-of-log marker")]
    AfterEnd { offset: u64, frame: u64 },

    /// The underlying writer failed.
    #[error("I/O error writing the log at byte {offset}: {source}")]
    Io {
        offset: u64,
        #[source]
        source: Arc<io::Error>,
    },

    /// A `Writer` is unusable after an earlier I/O error left the log in an
    /// unknown state.
    #[error("log writer unusable after an earlier I/O error at byte {offset}")]
    Poisoned { offset: u64 },
}

impl LogError {
    /// The byte offset the error refers to, where there is one.
    pub fn offset(&self) -> Option<u64> {
        use LogError::*;
        match self {
            NotALog { .. } => Some(0),
            UnsupportedVersion { .. } => Some(8),
            HeaderTooLarge { .. } => Some(10),
            HeaderCorrupt { offset, .. }
            | HeaderInvalid { offset, .. }
            | Truncated { offset, .. }
            | FrameCrc { offset, .. }
            | BadVarint { offset, .. }
            | FrameTooLarge { offset, .. }
            | FrameMalformed { offset, .. }
            | InvalidKind { offset, .. }
            | IcountOverflow { offset, .. }
            | EntryCountMismatch { offset, .. }
            | TrailingData { offset, .. }
            | IcountBackwards { offset, .. }
            | ReservedKind { offset, .. }
            | AfterEnd { offset, .. }
            | Io { offset, .. }
            | Poisoned { offset } => Some(*offset),
        }
    }

    /// The 0-based frame index the error refers to, where there is one.
    pub fn frame(&self) -> Option<u64> {
        use LogError::*;
        match self {
            Truncated { frame, .. } => *frame,
            FrameCrc { frame, .. }
            | BadVarint { frame, .. }
            | FrameTooLarge { frame, .. }
            | FrameMalformed { frame, .. }
            | InvalidKind { frame, .. }
            | IcountOverflow { frame, .. }
            | EntryCountMismatch { frame, .. }
            | IcountBackwards { frame, .. }
            | ReservedKind { frame, .. }
            | AfterEnd { frame, .. } => Some(*frame),
            _ => None,
        }
    }

    pub(crate) fn io(offset: u64, err: io::Error) -> Self {
        LogError::Io {
            offset,
            source: Arc::new(err),
        }
    }
}

fn truncated_message(offset: u64, end: u64, inside: Part, frame: Option<u64>) -> String {
    match (inside, frame) {
        (Part::NextFrame, Some(n)) => format!(
            "log truncated at byte {end}: it stops cleanly before frame {n} but has no end-of-log marker"
        ),
        (_, Some(n)) => format!(
            "log truncated at byte {end}: {inside} of frame {n} starting at byte {offset} is incomplete"
        ),
        (_, None) => format!(
            "log truncated at byte {end}: {inside} of the header starting at byte {offset} is incomplete"
        ),
    }
}

fn kind_problem(kind: u8) -> &'static str {
    if kind == 0 {
        "invalid (kind 0 is never used)"
    } else {
        "reserved for the log format and unknown to this version"
    }
}
