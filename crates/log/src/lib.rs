//! ftvm-log: the byte format of ftvm's input log and its codecs. A log is a
//! versioned, checksummed header (machine configuration, image identities,
//! producer) followed by frames, each carrying one entry — an icount, a
//! caller-defined kind byte and an opaque payload — as a varint length, a
//! body and a CRC32C, closed by an end-of-log marker. The same frames travel
//! over the FT logging channel. This crate owns framing only; what entry
//! kinds and payloads mean belongs to its callers. `docs/log-format.md`
//! specifies every byte.
//!
//! ```
//! use ftvm_log::{LogHeader, SliceReader, Writer};
//!
//! let header = LogHeader { producer: "ftvm 0.1.0".into(), ..LogHeader::default() };
//! let mut w = Writer::new(Vec::new(), &header).unwrap();
//! w.append(100, 1, b"rx frame").unwrap();
//! w.append(250, 2, &[0x2a]).unwrap();
//! let bytes = w.finish().unwrap();
//!
//! let (h, mut r) = SliceReader::new(&bytes).unwrap();
//! assert_eq!(h, header);
//! let e = r.next_entry().unwrap().unwrap();
//! assert_eq!((e.icount, e.kind, e.payload), (100, 1, &b"rx frame"[..]));
//! assert_eq!(r.next_entry().unwrap().unwrap().icount, 250);
//! assert!(r.next_entry().unwrap().is_none()); // clean end
//! ```

#![forbid(unsafe_code)]

mod error;
mod frame;
mod header;
mod reader;
mod stream;
pub mod varint;
mod writer;

pub use error::{LogError, Part, VarintProblem};
pub use frame::{
    is_caller_kind, Entry, FrameEncoder, OwnedEntry, KIND_END, KIND_INVALID, MAX_FRAME_BODY,
    MIN_FRAME_BODY, RESERVED_KINDS,
};
pub use header::{
    tag, Difference, ImageId, LogHeader, Mismatch, FORMAT_VERSION, MAGIC, MAX_HEADER_BODY,
};
pub use reader::SliceReader;
pub use stream::StreamDecoder;
pub use writer::Writer;

#[cfg(test)]
mod tests;
