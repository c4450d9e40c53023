//! `StreamDecoder`: incremental decoding of log bytes that arrive in chunks of
//! any size (the FT logging channel over TCP). It owns a compacting buffer,
//! optionally decodes a header first, and yields entries as soon as their
//! frames are complete; it accepts and rejects exactly what `SliceReader` does.

use crate::error::LogError;
use crate::frame::{DecodeState, Decoded, Entry, OwnedEntry, Step};
use crate::header::LogHeader;

/// Consumed bytes are dropped from the front of the buffer once there are at
/// least this many and they make up at least half of it.
const COMPACT_MIN: usize = 64 * 1024;

/// Push bytes, pop complete entries.
///
/// Two modes:
/// - [`StreamDecoder::new`]: frames only. The FT channel sends the header in
///   its own handshake message (`LogHeader::encode`/`decode`), then frames
///   from a [`crate::FrameEncoder`]. Offsets in errors count from the first
///   byte pushed.
/// - [`StreamDecoder::with_header`]: a whole log as a byte stream (a file
///   read through a pipe); the header is decoded first and available from
///   [`StreamDecoder::header`]. Offsets are log offsets.
///
/// `next_entry` returns `Ok(None)` when it needs more bytes, and also once
/// the end-of-log marker has been decoded ([`StreamDecoder::is_finished`]
/// tells the two apart). After [`StreamDecoder::end_of_input`] it behaves
/// like [`crate::SliceReader`]: an incomplete frame or a missing end marker
/// is [`LogError::Truncated`]. Errors are sticky.
#[derive(Debug, Clone, Default)]
pub struct StreamDecoder {
    buf: Vec<u8>,
    /// Index in `buf` of the next undecoded byte.
    start: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    state: DecodeState,
    expect_header: bool,
    header: Option<LogHeader>,
    finished: bool,
    eof: bool,
    error: Option<LogError>,
}

impl StreamDecoder {
    /// A decoder for frames only (no header).
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder for a complete log: header, then frames.
    pub fn with_header() -> Self {
        StreamDecoder {
            expect_header: true,
            ..Self::default()
        }
    }

    /// The header, once decoded (`with_header` mode).
    pub fn header(&self) -> Option<&LogHeader> {
        self.header.as_ref()
    }

    /// Adds bytes received from the stream. Bytes pushed after
    /// [`StreamDecoder::end_of_input`] are ignored.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.eof || self.error.is_some() {
            return;
        }
        if self.start == self.buf.len() {
            self.base += self.start as u64;
            self.buf.clear();
            self.start = 0;
        } else if self.start >= COMPACT_MIN && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.base += self.start as u64;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Declares that no more bytes will come.
    pub fn end_of_input(&mut self) {
        self.eof = true;
    }

    /// The next entry, copied out of the buffer.
    pub fn next_entry(&mut self) -> Result<Option<OwnedEntry>, LogError> {
        Ok(self.next_entry_ref()?.map(|e| e.into_owned()))
    }

    /// The next entry, borrowing its payload from the decoder's buffer (valid
    /// until the next call that takes `&mut self`).
    pub fn next_entry_ref(&mut self) -> Result<Option<Entry<'_>>, LogError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.expect_header && self.header.is_none() {
            match LogHeader::decode(&self.buf[self.start..]) {
                Ok((header, len)) => {
                    self.header = Some(header);
                    self.start += len;
                }
                Err(LogError::Truncated { .. }) if !self.eof => return Ok(None),
                Err(e) => {
                    self.error = Some(e.clone());
                    return Err(e);
                }
            }
        }
        let offset = self.base + self.start as u64;
        let rest = &self.buf[self.start..];
        if self.finished {
            if rest.is_empty() {
                return Ok(None);
            }
            let e = LogError::TrailingData {
                offset,
                len: rest.len() as u64,
            };
            self.error = Some(e.clone());
            return Err(e);
        }
        let err = match self.state.decode(rest, offset) {
            Ok(Step::Frame(decoded, len)) => {
                self.state.advance(&decoded);
                self.start += len;
                match decoded {
                    Decoded::Entry(e) => return Ok(Some(e)),
                    Decoded::End => {
                        self.finished = true;
                        let after = rest.len() - len;
                        if after == 0 {
                            return Ok(None);
                        }
                        LogError::TrailingData {
                            offset: offset + len as u64,
                            len: after as u64,
                        }
                    }
                }
            }
            Ok(Step::Incomplete(_)) if !self.eof => return Ok(None),
            Ok(Step::Incomplete(inside)) => LogError::Truncated {
                offset,
                end: self.base + self.buf.len() as u64,
                inside,
                frame: Some(self.state.frames),
            },
            Err(e) => e,
        };
        self.error = Some(err.clone());
        Err(err)
    }

    /// Whether the end-of-log marker has been decoded.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Stream offset of the next undecoded byte (= bytes consumed so far).
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Bytes pushed but not yet consumed by a returned entry.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Entries returned so far.
    pub fn entries_decoded(&self) -> u64 {
        self.state.entries
    }

    /// Icount of the last entry returned (0 before any).
    pub fn last_icount(&self) -> u64 {
        self.state.prev_icount
    }
}
