//! Frames: the unit after the header. Owns the entry types, the kind-number
//! rules, `FrameEncoder` (appends frames to a caller's `Vec<u8>`, the path the
//! network sender uses and the `Writer` builds on) and the one frame decoder
//! that `SliceReader` and `StreamDecoder` share, so both readers accept and
//! reject exactly the same bytes.

use std::ops::RangeInclusive;

use crate::error::{LogError, Part};
use crate::varint::{self, MAX_VARINT_LEN};

/// Largest frame body (icount delta + kind + payload), in bytes.
pub const MAX_FRAME_BODY: u64 = 16 << 20;
/// Smallest frame body: a one-byte delta and the kind.
pub const MIN_FRAME_BODY: u64 = 2;
/// Kind 0 is never valid, so a zeroed region cannot pass for entries.
pub const KIND_INVALID: u8 = 0;
/// Kinds the log format keeps for itself; callers may use 1..=0xEF.
pub const RESERVED_KINDS: RangeInclusive<u8> = 0xF0..=0xFF;
/// The end-of-log marker written by `Writer::finish` / `FrameEncoder::encode_end`.
pub const KIND_END: u8 = 0xFF;
/// Length prefix + delta + kind, the most a frame needs before its payload.
pub(crate) const MAX_FRAME_HEAD: usize = 2 * MAX_VARINT_LEN + 1;

/// One entry borrowed from the log bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Instruction count at which the entry takes effect.
    pub icount: u64,
    /// The caller's entry kind, 1..=0xEF.
    pub kind: u8,
    /// The caller's payload.
    pub payload: &'a [u8],
}

/// One entry owning its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedEntry {
    pub icount: u64,
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Entry<'_> {
    /// Copies the payload out of the log bytes.
    pub fn into_owned(self) -> OwnedEntry {
        OwnedEntry {
            icount: self.icount,
            kind: self.kind,
            payload: self.payload.to_vec(),
        }
    }
}

impl From<Entry<'_>> for OwnedEntry {
    fn from(e: Entry<'_>) -> Self {
        e.into_owned()
    }
}

impl OwnedEntry {
    /// Borrows this entry.
    pub fn as_entry(&self) -> Entry<'_> {
        Entry {
            icount: self.icount,
            kind: self.kind,
            payload: &self.payload,
        }
    }
}

/// Whether a caller may use `kind` for an entry.
pub fn is_caller_kind(kind: u8) -> bool {
    kind != KIND_INVALID && !RESERVED_KINDS.contains(&kind)
}

/// Encodes frames into a caller-owned buffer, keeping the icount base and
/// frame count; the network sender's counterpart of [`crate::Writer`].
///
/// The first frame's delta is taken from icount 0, so a stream of frames is
/// self-contained: a receiver needs no base to reconstruct absolute icounts.
#[derive(Debug, Clone, Default)]
pub struct FrameEncoder {
    last_icount: u64,
    frames: u64,
    entries: u64,
    offset: u64,
    ended: bool,
}

impl FrameEncoder {
    /// An encoder whose first byte is byte 0 of the stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// An encoder whose first frame lands at byte `offset` of the log (after
    /// a header), so that error offsets match the log.
    pub fn starting_at(offset: u64) -> Self {
        FrameEncoder {
            offset,
            ..Self::default()
        }
    }

    /// Appends one entry frame to `out`. On error nothing is appended and the
    /// encoder is unchanged.
    pub fn encode(
        &mut self,
        icount: u64,
        kind: u8,
        payload: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), LogError> {
        let frame = self.check(icount, kind, payload.len())?;
        frame.write_to(payload, out);
        self.commit(&frame);
        Ok(())
    }

    /// Appends the end-of-log marker (kind 0xFF, delta 0, payload = number of
    /// entries encoded as a varint). Nothing may be encoded after it.
    pub fn encode_end(&mut self, out: &mut Vec<u8>) -> Result<(), LogError> {
        let mut count = [0u8; MAX_VARINT_LEN];
        let n = varint::encode(self.entries, &mut count);
        let frame = self.check_raw(self.last_icount, KIND_END, n)?;
        frame.write_to(&count[..n], out);
        self.commit(&frame);
        Ok(())
    }

    /// Icount of the last frame encoded (0 before any).
    pub fn last_icount(&self) -> u64 {
        self.last_icount
    }

    /// Frames encoded so far (the end marker included).
    pub fn frames_encoded(&self) -> u64 {
        self.frames
    }

    /// Entry frames encoded so far (the end marker excluded).
    pub fn entries_encoded(&self) -> u64 {
        self.entries
    }

    /// Offset of the next frame: the starting offset plus all bytes encoded.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether the end-of-log marker has been encoded.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Validates an entry frame without encoding it.
    pub(crate) fn check(
        &self,
        icount: u64,
        kind: u8,
        payload_len: usize,
    ) -> Result<CheckedFrame, LogError> {
        if !is_caller_kind(kind) {
            return Err(LogError::ReservedKind {
                offset: self.offset,
                frame: self.frames,
                kind,
            });
        }
        self.check_raw(icount, kind, payload_len)
    }

    fn check_raw(
        &self,
        icount: u64,
        kind: u8,
        payload_len: usize,
    ) -> Result<CheckedFrame, LogError> {
        if self.ended {
            return Err(LogError::AfterEnd {
                offset: self.offset,
                frame: self.frames,
            });
        }
        if icount < self.last_icount {
            return Err(LogError::IcountBackwards {
                offset: self.offset,
                frame: self.frames,
                prev: self.last_icount,
                got: icount,
            });
        }
        let delta = icount - self.last_icount;
        let body_len = (varint::encoded_len(delta) + 1) as u64 + payload_len as u64;
        if body_len > MAX_FRAME_BODY {
            return Err(LogError::FrameTooLarge {
                offset: self.offset,
                frame: self.frames,
                len: body_len,
                max: MAX_FRAME_BODY,
            });
        }
        Ok(CheckedFrame {
            icount,
            delta,
            kind,
            body_len,
            total_len: varint::encoded_len(body_len) + body_len as usize + 4,
        })
    }

    /// Records a frame as encoded.
    pub(crate) fn commit(&mut self, frame: &CheckedFrame) {
        self.last_icount = frame.icount;
        self.frames += 1;
        self.offset += frame.total_len as u64;
        if frame.kind == KIND_END {
            self.ended = true;
        } else {
            self.entries += 1;
        }
    }
}

/// A frame that passed validation, with its lengths worked out.
pub(crate) struct CheckedFrame {
    icount: u64,
    delta: u64,
    kind: u8,
    body_len: u64,
    /// Length prefix + body + checksum.
    pub total_len: usize,
}

impl CheckedFrame {
    /// Appends the frame to `out`.
    pub fn write_to(&self, payload: &[u8], out: &mut Vec<u8>) {
        out.reserve(self.total_len);
        varint::push(self.body_len, out);
        let body_start = out.len();
        varint::push(self.delta, out);
        out.push(self.kind);
        out.extend_from_slice(payload);
        let crc = crc32c::crc32c(&out[body_start..]);
        out.extend_from_slice(&crc.to_le_bytes());
    }

    /// The bytes before the payload and the checksum after it, for writing
    /// a large frame without copying its payload.
    pub fn head_and_crc(&self, payload: &[u8]) -> ([u8; MAX_FRAME_HEAD], usize, u32) {
        let mut head = [0u8; MAX_FRAME_HEAD];
        let mut tmp = [0u8; MAX_VARINT_LEN];
        let n_len = varint::encode(self.body_len, &mut tmp);
        head[..n_len].copy_from_slice(&tmp[..n_len]);
        let n_delta = varint::encode(self.delta, &mut tmp);
        head[n_len..n_len + n_delta].copy_from_slice(&tmp[..n_delta]);
        head[n_len + n_delta] = self.kind;
        let head_len = n_len + n_delta + 1;
        let crc = crc32c::crc32c_append(crc32c::crc32c(&head[n_len..head_len]), payload);
        (head, head_len, crc)
    }
}

/// Where a reader stands between frames.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DecodeState {
    pub prev_icount: u64,
    pub frames: u64,
    pub entries: u64,
}

pub(crate) enum Decoded<'a> {
    Entry(Entry<'a>),
    End,
}

pub(crate) enum Step<'a> {
    /// A complete, valid frame and its total size in bytes.
    Frame(Decoded<'a>, usize),
    /// `buf` ends inside this part of the frame.
    Incomplete(Part),
}

impl DecodeState {
    /// Decodes the frame at the start of `buf`, whose first byte is byte
    /// `offset` of the log. Does not advance the state; see [`Self::advance`].
    pub fn decode<'a>(&self, buf: &'a [u8], offset: u64) -> Result<Step<'a>, LogError> {
        let frame = self.frames;
        if buf.is_empty() {
            return Ok(Step::Incomplete(Part::NextFrame));
        }
        let (len, n_len) = match varint::decode(buf) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(Step::Incomplete(Part::FrameLength)),
            Err(problem) => {
                return Err(LogError::BadVarint {
                    offset,
                    frame,
                    problem,
                })
            }
        };
        if len > MAX_FRAME_BODY {
            return Err(LogError::FrameTooLarge {
                offset,
                frame,
                len,
                max: MAX_FRAME_BODY,
            });
        }
        let malformed = |reason| LogError::FrameMalformed {
            offset,
            frame,
            reason,
        };
        if len < MIN_FRAME_BODY {
            return Err(malformed(
                "body shorter than 2 bytes (icount delta and kind)",
            ));
        }
        let body_end = n_len + len as usize;
        if buf.len() < body_end {
            return Ok(Step::Incomplete(Part::FrameBody));
        }
        let total = body_end + 4;
        let Some(crc_bytes) = buf.get(body_end..total) else {
            return Ok(Step::Incomplete(Part::FrameCrc));
        };
        let body = &buf[n_len..body_end];
        let stored = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
        let computed = crc32c::crc32c(body);
        if stored != computed && !cfg!(fuzzing) {
            return Err(LogError::FrameCrc {
                offset,
                frame,
                stored,
                computed,
            });
        }
        let (delta, n_delta) = match varint::decode(body) {
            Ok(Some(v)) => v,
            Ok(None) => return Err(malformed("icount delta runs past the end of the body")),
            Err(problem) => {
                return Err(LogError::BadVarint {
                    offset: offset + n_len as u64,
                    frame,
                    problem,
                })
            }
        };
        let Some(&kind) = body.get(n_delta) else {
            return Err(malformed("no kind byte after the icount delta"));
        };
        let payload = &body[n_delta + 1..];
        let Some(icount) = self.prev_icount.checked_add(delta) else {
            return Err(LogError::IcountOverflow {
                offset,
                frame,
                prev: self.prev_icount,
                delta,
            });
        };
        if kind == KIND_END {
            if delta != 0 {
                return Err(malformed("end-of-log marker with a non-zero icount delta"));
            }
            let recorded = match varint::decode(payload) {
                Ok(Some((v, n))) if n == payload.len() => v,
                _ => {
                    return Err(malformed(
                        "end-of-log marker payload is not exactly one canonical varint",
                    ))
                }
            };
            if recorded != self.entries {
                return Err(LogError::EntryCountMismatch {
                    offset,
                    frame,
                    recorded,
                    seen: self.entries,
                });
            }
            return Ok(Step::Frame(Decoded::End, total));
        }
        if !is_caller_kind(kind) {
            return Err(LogError::InvalidKind {
                offset,
                frame,
                kind,
            });
        }
        Ok(Step::Frame(
            Decoded::Entry(Entry {
                icount,
                kind,
                payload,
            }),
            total,
        ))
    }

    /// Moves past a frame returned by [`Self::decode`].
    pub fn advance(&mut self, decoded: &Decoded<'_>) {
        self.frames += 1;
        if let Decoded::Entry(e) = decoded {
            self.prev_icount = e.icount;
            self.entries += 1;
        }
    }
}
