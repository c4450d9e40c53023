//! `SliceReader`: zero-copy reading of a complete log held in memory (a file
//! read whole or mapped). Entries borrow their payloads from the input; the
//! reader insists on the end-of-log marker, so a log cut short is reported
//! as truncated at the exact byte where its last complete frame ends.

use crate::error::LogError;
use crate::frame::{DecodeState, Decoded, Entry, Step, MAX_FRAME_BODY};
use crate::header::LogHeader;
use crate::varint;

/// Bytes of the CRC32C that closes every frame.
const CRC_LEN: u64 = 4;

/// Reads entries from a complete in-memory log.
///
/// Errors are sticky: once `next_entry` has failed it returns the same error
/// on every later call.
#[derive(Debug, Clone)]
pub struct SliceReader<'a> {
    bytes: &'a [u8],
    pos: usize,
    state: DecodeState,
    finished: bool,
    error: Option<LogError>,
}

impl<'a> SliceReader<'a> {
    /// Decodes the header and returns it with a reader positioned at the first frame.
    pub fn new(bytes: &'a [u8]) -> Result<(LogHeader, Self), LogError> {
        let (header, len) = LogHeader::decode(bytes)?;
        Ok((
            header,
            SliceReader {
                bytes,
                pos: len,
                state: DecodeState::default(),
                finished: false,
                error: None,
            },
        ))
    }

    /// The next entry; `Ok(None)` only after the end-of-log marker (and only
    /// if no bytes follow it). A log that stops without the marker yields
    /// [`LogError::Truncated`] after its last complete entry.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'a>>, LogError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if self.finished {
            return Ok(None);
        }
        let bytes: &'a [u8] = self.bytes;
        let rest = &bytes[self.pos..];
        let offset = self.pos as u64;
        let result = match self.state.decode(rest, offset) {
            Ok(Step::Frame(decoded, len)) => {
                self.state.advance(&decoded);
                self.pos += len;
                match decoded {
                    Decoded::Entry(e) => Ok(Some(e)),
                    Decoded::End => {
                        self.finished = true;
                        if self.pos < bytes.len() {
                            Err(LogError::TrailingData {
                                offset: self.pos as u64,
                                len: (bytes.len() - self.pos) as u64,
                            })
                        } else {
                            Ok(None)
                        }
                    }
                }
            }
            Ok(Step::Incomplete(inside)) => Err(LogError::Truncated {
                offset,
                end: bytes.len() as u64,
                inside,
                frame: Some(self.state.frames),
            }),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            self.error = Some(e.clone());
        }
        result
    }

    /// Byte offset of the next frame to be read.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// Entries returned so far.
    pub fn entries_read(&self) -> u64 {
        self.state.entries
    }

    /// Icount of the last entry returned (0 before any).
    pub fn last_icount(&self) -> u64 {
        self.state.prev_icount
    }

    /// Whether the end-of-log marker has been read.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Whether the bytes from the next frame on look never written: zero
    /// bytes up to the end, except perhaps the beginning of that one frame
    /// (as far as its length prefix reaches), whose own last byte must then
    /// be zero too. A file whose length the kernel extended but whose last
    /// pages never reached the disk (a host crash) ends so. A damaged frame
    /// with data after it is not such a tail.
    pub fn rest_is_unwritten(&self) -> bool {
        let rest = &self.bytes[self.pos..];
        if rest.is_empty() {
            return false;
        }
        let frame_end = match varint::decode(rest) {
            Ok(Some((len, n))) if len <= MAX_FRAME_BODY => {
                (n as u64 + len + CRC_LEN).min(rest.len() as u64) as usize
            }
            _ => 0,
        };
        let (frame, after) = rest.split_at(frame_end);
        after.iter().all(|&b| b == 0) && frame.last().is_none_or(|&b| b == 0)
    }
}

/// Iterates entries; stops after the end-of-log marker or after yielding the
/// first error.
impl<'a> Iterator for SliceReader<'a> {
    type Item = Result<Entry<'a>, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.error.is_some() {
            return None;
        }
        self.next_entry().transpose()
    }
}
