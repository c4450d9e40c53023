//! `Writer`: writes a complete log (header, entry frames, end-of-log marker)
//! to any `std::io::Write`, batching small frames in an internal buffer so a
//! recorder does not pay a system call per entry, and refusing to go on after
//! an I/O error has left the log in an unknown state.

use std::io::Write;

use crate::error::LogError;
use crate::frame::FrameEncoder;
use crate::header::LogHeader;

/// Frames are gathered up to this many bytes before being handed to the
/// underlying writer; frames at least this large bypass the buffer.
const BUFFER_SIZE: usize = 64 * 1024;

/// Writes a log to `W`.
///
/// Bytes may sit in an internal buffer until [`Writer::flush`],
/// [`Writer::finish`] or the buffer fills. Dropping a `Writer` without
/// `finish` writes out what is buffered (ignoring errors) but no end-of-log
/// marker, so readers will report the log as truncated after its last
/// complete frame: a crashed recorder still leaves a readable prefix.
pub struct Writer<W: Write> {
    inner: Option<W>,
    buf: Vec<u8>,
    enc: FrameEncoder,
    /// Offset of the first byte of `buf` (= bytes handed to `inner`).
    flushed: u64,
    /// Set after an I/O error: the offset of the first byte whose fate is unknown.
    poisoned: Option<u64>,
}

impl<W: Write> Writer<W> {
    /// Writes the header to `w` and returns a writer positioned at the first frame.
    pub fn new(mut w: W, header: &LogHeader) -> Result<Self, LogError> {
        let bytes = header.encode()?;
        w.write_all(&bytes).map_err(|e| LogError::io(0, e))?;
        let len = bytes.len() as u64;
        Ok(Writer {
            inner: Some(w),
            buf: Vec::with_capacity(BUFFER_SIZE),
            enc: FrameEncoder::starting_at(len),
            flushed: len,
            poisoned: None,
        })
    }

    /// Appends one entry; returns the number of bytes its frame takes.
    ///
    /// Fails without writing anything if `kind` is 0 or in 0xF0..=0xFF, if
    /// `icount` is below the previous entry's, or if the frame body would
    /// exceed [`crate::MAX_FRAME_BODY`]; those errors leave the writer usable.
    pub fn append(&mut self, icount: u64, kind: u8, payload: &[u8]) -> Result<u64, LogError> {
        self.check_poisoned()?;
        let frame = self.enc.check(icount, kind, payload.len())?;
        let total = frame.total_len;
        if self.buf.len() + total > BUFFER_SIZE {
            self.write_buffer()?;
        }
        if total >= BUFFER_SIZE {
            // Large frame: straight through, without copying the payload.
            let (head, head_len, crc) = frame.head_and_crc(payload);
            let offset = self.flushed;
            let w = self.inner_mut()?;
            let res = w
                .write_all(&head[..head_len])
                .and_then(|()| w.write_all(payload))
                .and_then(|()| w.write_all(&crc.to_le_bytes()));
            if let Err(e) = res {
                self.poisoned = Some(offset);
                return Err(LogError::io(offset, e));
            }
            self.flushed += total as u64;
        } else {
            frame.write_to(payload, &mut self.buf);
        }
        self.enc.commit(&frame);
        Ok(total as u64)
    }

    /// Hands all buffered bytes to the underlying writer and flushes it.
    pub fn flush(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        self.write_buffer()?;
        let offset = self.flushed;
        let res = self.inner_mut()?.flush();
        res.map_err(|e| {
            self.poisoned = Some(offset);
            LogError::io(offset, e)
        })
    }

    /// Writes the end-of-log marker, flushes, and returns the underlying writer.
    pub fn finish(mut self) -> Result<W, LogError> {
        self.check_poisoned()?;
        self.enc.encode_end(&mut self.buf)?;
        self.flush()?;
        // Taking the writer out leaves Drop nothing to do.
        let offset = self.flushed;
        self.inner.take().ok_or(LogError::Poisoned { offset })
    }

    /// Bytes of log produced so far (header included), whether or not they
    /// have left the internal buffer yet.
    pub fn bytes_written(&self) -> u64 {
        self.enc.offset()
    }

    /// Icount of the last entry appended (0 before any).
    pub fn last_icount(&self) -> u64 {
        self.enc.last_icount()
    }

    /// Entries appended so far.
    pub fn entries_written(&self) -> u64 {
        self.enc.entries_encoded()
    }

    /// The underlying writer (bytes may still be buffered in `self`).
    pub fn get_ref(&self) -> Option<&W> {
        self.inner.as_ref()
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match self.poisoned {
            Some(offset) => Err(LogError::Poisoned { offset }),
            None => Ok(()),
        }
    }

    fn inner_mut(&mut self) -> Result<&mut W, LogError> {
        let offset = self.flushed;
        self.inner.as_mut().ok_or(LogError::Poisoned { offset })
    }

    fn write_buffer(&mut self) -> Result<(), LogError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let offset = self.flushed;
        let Some(w) = self.inner.as_mut() else {
            return Err(LogError::Poisoned { offset });
        };
        match w.write_all(&self.buf) {
            Ok(()) => {
                self.flushed += self.buf.len() as u64;
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.poisoned = Some(offset);
                Err(LogError::io(offset, e))
            }
        }
    }
}

impl<W: Write> Drop for Writer<W> {
    fn drop(&mut self) {
        if self.poisoned.is_none() {
            if let Some(w) = self.inner.as_mut() {
                if w.write_all(&self.buf).is_ok() {
                    let _ = w.flush();
                }
            }
        }
    }
}
