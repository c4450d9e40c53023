//! The logging channel's byte format. Every message travels in one frame: a
//! 16-byte header (magic `"FT"`, format version, message type, the pair's
//! generation, body length) and its own CRC32C, then the body and a CRC32C
//! of everything before it. The decoders check the magic and version as soon as
//! those bytes arrive (so a stray connection is refused at once), check the
//! header's checksum before trusting the length (so a damaged length never
//! leaves a receiver waiting for bytes that will not come), bound the length,
//! verify the frame checksum before looking at the type or body, and require
//! the body to parse exactly; every failure is a typed [`WireError`] naming
//! the byte offset, and no input makes them panic. A `Log` body carries a batch
//! of `ftvm-log` frames (self-contained: the first frame's icount delta
//! counts from 0); [`encode_entries`] and [`decode_entries`] convert batches.
//! `docs/ft-protocol.md` lists every byte.

use std::fmt;

use ftvm_log::{FrameEncoder, LogError, OwnedEntry, StreamDecoder};

use crate::{Generation, Role, Seq};

/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"FT";
/// The frame format version this build reads and writes.
pub const WIRE_VERSION: u8 = 1;
/// Magic (2), version (1), type (1), generation (8), body length (4).
pub const HEADER_LEN: usize = 16;
/// A CRC32C: one after the header (of the header), one after the body (of
/// header and body).
pub const CRC_LEN: usize = 4;
/// Where the body starts.
pub const BODY_START: usize = HEADER_LEN + CRC_LEN;
/// Largest body accepted: one maximal `ftvm-log` frame (16 MiB body plus
/// prefix and checksum) plus the Log header, with room to spare.
pub const MAX_BODY: u32 = (16 << 20) + 4096;
/// Longest VM name in a Hello.
pub const MAX_VM_NAME: usize = 255;
/// Longest `ftvm-log` header carried in a Hello (1 MiB body + 18 bytes of
/// framing, rounded up).
pub const MAX_LOG_HEADER: usize = (1 << 20) + 64;
/// Longest free-text detail in a Goodbye.
pub const MAX_GOODBYE_DETAIL: usize = 255;

/// Message type byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Hello = 1,
    Log = 2,
    Ack = 3,
    Heartbeat = 4,
    Goodbye = 5,
    JoinRequest = 6,
    JoinPages = 7,
    JoinState = 8,
    JoinDisk = 9,
}

impl MessageType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => MessageType::Hello,
            2 => MessageType::Log,
            3 => MessageType::Ack,
            4 => MessageType::Heartbeat,
            5 => MessageType::Goodbye,
            6 => MessageType::JoinRequest,
            7 => MessageType::JoinPages,
            8 => MessageType::JoinState,
            9 => MessageType::JoinDisk,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::Hello => "Hello",
            MessageType::Log => "Log",
            MessageType::Ack => "Ack",
            MessageType::Heartbeat => "Heartbeat",
            MessageType::Goodbye => "Goodbye",
            MessageType::JoinRequest => "JoinRequest",
            MessageType::JoinPages => "JoinPages",
            MessageType::JoinState => "JoinState",
            MessageType::JoinDisk => "JoinDisk",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The handshake, sent by both sides as the first message of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the sender.
    pub version: u16,
    /// The VM's name; both sides must agree.
    pub vm: String,
    /// The sender's role; the receiver must have the other one.
    pub role: Role,
    /// Identity of the machine both sides run (a hash of the log header:
    /// configuration and images). Both sides must agree.
    pub machine_hash: [u8; 32],
    /// Primary: the last log entry it has appended. Backup: the last entry
    /// it has received; the primary resumes the stream after it.
    pub seq: Seq,
    /// Primary: the `ftvm-log` header (`LogHeader::encode`) of the recording
    /// the stream continues, for the backup's compatibility check and log
    /// file. Backup: empty.
    pub log_header: Vec<u8>,
}

/// Why a peer closes the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodbyeReason {
    /// The primary's guest powered off: the backup stops too, it does not
    /// take over.
    PowerOff = 1,
    /// The sender is leaving on purpose (maintenance): the receiver treats
    /// it as failed at once, without waiting for the timeout.
    Leaving = 2,
    /// The sender hit a protocol error on this connection and closes it; the
    /// pair may reconnect.
    Error = 3,
}

impl GoodbyeReason {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => GoodbyeReason::PowerOff,
            2 => GoodbyeReason::Leaving,
            3 => GoodbyeReason::Error,
            _ => return None,
        })
    }
}

/// One logging-channel message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    /// Primary → backup: log entries `first_seq ..` as a self-contained
    /// batch of `ftvm-log` frames (no header, no END).
    Log {
        first_seq: Seq,
        entries: Vec<u8>,
    },
    /// Backup → primary: every entry up to `seq` received; the backup's
    /// machine has executed up to `executed_icount`.
    Ack {
        seq: Seq,
        executed_icount: u64,
    },
    /// Both directions when nothing else was sent for a heartbeat interval.
    /// `now_ms` is the sender's clock (informational); `icount` is the
    /// primary's current instruction count (no entry with a lower icount
    /// will follow) or the backup's executed instruction count.
    Heartbeat {
        now_ms: u64,
        icount: u64,
    },
    /// The sender closes the channel.
    Goodbye {
        reason: GoodbyeReason,
        detail: String,
    },
    /// A new backup → a running primary: send me your state and pair with
    /// me (re-protection). `listen` is where the joiner accepts the
    /// primary's reconnections (may be empty). Sent with generation 0.
    JoinRequest {
        vm: String,
        machine_hash: [u8; 32],
        listen: String,
    },
    /// Primary → joiner: RAM pages (4 KiB each, `data` = the pages in the
    /// order of `pages`) of a guest with `ram_size` bytes of RAM. A page may
    /// come again in a later round (it was written meanwhile): the last
    /// copy counts.
    JoinPages {
        ram_size: u64,
        pages: Vec<u32>,
        data: Vec<u8>,
    },
    /// Primary → joiner, once the guest is paused: the machine's state
    /// without RAM at instruction `icount`. The frame's generation is the
    /// new pair's; the logging protocol (Hello, Log, ...) follows on the
    /// same connection.
    JoinState {
        icount: u64,
        state: Vec<u8>,
    },
    /// Primary → joiner with non-shared disks: bytes of the disk in virtio
    /// slot `slot` at `offset`; a range may come again (it was written
    /// meanwhile): the last copy counts.
    JoinDisk {
        slot: u8,
        offset: u64,
        data: Vec<u8>,
    },
}

/// Most bytes in one [`Message::JoinDisk`].
pub const MAX_JOIN_DISK: usize = 4 << 20;

/// Bytes per page in [`Message::JoinPages`].
pub const JOIN_PAGE: usize = 4096;
/// Most pages in one [`Message::JoinPages`] (4 MiB of data).
pub const MAX_JOIN_PAGES: usize = 1024;
/// Longest state in a [`Message::JoinState`].
pub const MAX_JOIN_STATE: usize = 8 << 20;
/// Longest `listen` address in a [`Message::JoinRequest`].
pub const MAX_JOIN_LISTEN: usize = 255;

impl Message {
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Hello(_) => MessageType::Hello,
            Message::Log { .. } => MessageType::Log,
            Message::Ack { .. } => MessageType::Ack,
            Message::Heartbeat { .. } => MessageType::Heartbeat,
            Message::Goodbye { .. } => MessageType::Goodbye,
            Message::JoinRequest { .. } => MessageType::JoinRequest,
            Message::JoinPages { .. } => MessageType::JoinPages,
            Message::JoinState { .. } => MessageType::JoinState,
            Message::JoinDisk { .. } => MessageType::JoinDisk,
        }
    }

    fn body_len(&self) -> usize {
        match self {
            Message::Hello(h) => 2 + 1 + 32 + 8 + 1 + h.vm.len() + 4 + h.log_header.len(),
            Message::Log { entries, .. } => 8 + entries.len(),
            Message::Ack { .. } | Message::Heartbeat { .. } => 16,
            Message::Goodbye { detail, .. } => 2 + detail.len(),
            Message::JoinRequest { vm, listen, .. } => 1 + vm.len() + 32 + 1 + listen.len(),
            Message::JoinPages { pages, data, .. } => 8 + 4 + 4 * pages.len() + data.len(),
            Message::JoinState { state, .. } => 8 + state.len(),
            Message::JoinDisk { data, .. } => 1 + 8 + data.len(),
        }
    }
}

/// A message with the generation of the pair that sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub generation: Generation,
    pub message: Message,
}

/// A frame that cannot be encoded (a field over its limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("cannot encode {kind}: {reason}")]
    Invalid {
        kind: MessageType,
        reason: &'static str,
    },
}

impl Frame {
    /// Total encoded size: header, header checksum, body, frame checksum.
    pub fn encoded_len(&self) -> usize {
        BODY_START + self.message.body_len() + CRC_LEN
    }

    /// Appends the encoded frame to `out`. On error nothing is appended.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let kind = self.message.message_type();
        let invalid = |reason| EncodeError::Invalid { kind, reason };
        match &self.message {
            Message::Hello(h) => {
                if h.vm.is_empty() || h.vm.len() > MAX_VM_NAME {
                    return Err(invalid("VM name must be 1 to 255 bytes"));
                }
                if h.log_header.len() > MAX_LOG_HEADER {
                    return Err(invalid("log header too large"));
                }
            }
            Message::Log { first_seq, entries } => {
                if *first_seq == 0 {
                    return Err(invalid("first_seq must be at least 1"));
                }
                if entries.is_empty() {
                    return Err(invalid("a Log message carries at least one entry"));
                }
            }
            Message::Goodbye { detail, .. } => {
                if detail.len() > MAX_GOODBYE_DETAIL {
                    return Err(invalid("detail longer than 255 bytes"));
                }
            }
            Message::Ack { .. } | Message::Heartbeat { .. } => {}
            Message::JoinRequest { vm, listen, .. } => {
                if vm.is_empty() || vm.len() > MAX_VM_NAME {
                    return Err(invalid("VM name must be 1 to 255 bytes"));
                }
                if listen.len() > MAX_JOIN_LISTEN {
                    return Err(invalid("listen address longer than 255 bytes"));
                }
            }
            Message::JoinPages { pages, data, .. } => {
                if pages.is_empty() || pages.len() > MAX_JOIN_PAGES {
                    return Err(invalid("1 to 1024 pages per JoinPages"));
                }
                if data.len() != pages.len() * JOIN_PAGE {
                    return Err(invalid("data is not 4096 bytes per page"));
                }
            }
            Message::JoinState { state, .. } => {
                if state.len() > MAX_JOIN_STATE {
                    return Err(invalid("state larger than 8 MiB"));
                }
            }
            Message::JoinDisk { data, .. } => {
                if data.is_empty() || data.len() > MAX_JOIN_DISK {
                    return Err(invalid("1 byte to 4 MiB of disk per JoinDisk"));
                }
            }
        }
        let body_len = self.message.body_len();
        if body_len > MAX_BODY as usize {
            return Err(invalid("body larger than the maximum frame"));
        }
        let start = out.len();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&MAGIC);
        out.push(WIRE_VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&self.generation.to_le_bytes());
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        let header_crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&header_crc.to_le_bytes());
        match &self.message {
            Message::Hello(h) => {
                out.extend_from_slice(&h.version.to_le_bytes());
                out.push(role_byte(h.role));
                out.extend_from_slice(&h.machine_hash);
                out.extend_from_slice(&h.seq.to_le_bytes());
                out.push(h.vm.len() as u8);
                out.extend_from_slice(h.vm.as_bytes());
                out.extend_from_slice(&(h.log_header.len() as u32).to_le_bytes());
                out.extend_from_slice(&h.log_header);
            }
            Message::Log { first_seq, entries } => {
                out.extend_from_slice(&first_seq.to_le_bytes());
                out.extend_from_slice(entries);
            }
            Message::Ack {
                seq,
                executed_icount,
            } => {
                out.extend_from_slice(&seq.to_le_bytes());
                out.extend_from_slice(&executed_icount.to_le_bytes());
            }
            Message::Heartbeat { now_ms, icount } => {
                out.extend_from_slice(&now_ms.to_le_bytes());
                out.extend_from_slice(&icount.to_le_bytes());
            }
            Message::Goodbye { reason, detail } => {
                out.push(*reason as u8);
                out.push(detail.len() as u8);
                out.extend_from_slice(detail.as_bytes());
            }
            Message::JoinRequest {
                vm,
                machine_hash,
                listen,
            } => {
                out.push(vm.len() as u8);
                out.extend_from_slice(vm.as_bytes());
                out.extend_from_slice(machine_hash);
                out.push(listen.len() as u8);
                out.extend_from_slice(listen.as_bytes());
            }
            Message::JoinPages {
                ram_size,
                pages,
                data,
            } => {
                out.extend_from_slice(&ram_size.to_le_bytes());
                out.extend_from_slice(&(pages.len() as u32).to_le_bytes());
                for p in pages {
                    out.extend_from_slice(&p.to_le_bytes());
                }
                out.extend_from_slice(data);
            }
            Message::JoinState { icount, state } => {
                out.extend_from_slice(&icount.to_le_bytes());
                out.extend_from_slice(state);
            }
            Message::JoinDisk { slot, offset, data } => {
                out.push(*slot);
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(data);
            }
        }
        let crc = crc32c::crc32c(&out[start..]);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(())
    }

    /// The encoded frame as a new vector.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode(&mut out)?;
        Ok(out)
    }
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Primary => 1,
        Role::Backup => 2,
    }
}

/// Why bytes on the logging channel were refused. `offset` is the stream
/// offset of the first byte of the frame concerned. All are fatal for the
/// connection: the driver logs the error and drops it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error(
        "not an ftvm logging channel: bad magic {found:02x?} at byte {offset} (expected \"FT\")"
    )]
    BadMagic { offset: u64, found: Vec<u8> },
    #[error("unsupported logging-channel frame version {version} at byte {offset} (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion { offset: u64, version: u8 },
    #[error("frame at byte {offset}: body of {len} bytes exceeds the maximum of {MAX_BODY}")]
    TooLarge { offset: u64, len: u32 },
    #[error("frame at byte {offset} truncated: {have} of {need} bytes present")]
    Truncated { offset: u64, have: u64, need: u64 },
    #[error("frame at byte {offset}: header checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    BadHeaderCrc {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error(
        "frame at byte {offset}: checksum mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    BadCrc {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("frame at byte {offset}: unknown message type {kind}")]
    UnknownType { offset: u64, kind: u8 },
    #[error("{kind} frame at byte {offset} malformed: {reason}")]
    Malformed {
        offset: u64,
        kind: MessageType,
        reason: &'static str,
    },
    #[error("{len} bytes after the frame, starting at byte {offset}")]
    TrailingBytes { offset: u64, len: u64 },
}

impl WireError {
    /// Stream offset of the frame the error concerns.
    pub fn offset(&self) -> u64 {
        match self {
            WireError::BadMagic { offset, .. }
            | WireError::UnsupportedVersion { offset, .. }
            | WireError::TooLarge { offset, .. }
            | WireError::BadHeaderCrc { offset, .. }
            | WireError::Truncated { offset, .. }
            | WireError::BadCrc { offset, .. }
            | WireError::UnknownType { offset, .. }
            | WireError::Malformed { offset, .. }
            | WireError::TrailingBytes { offset, .. } => *offset,
        }
    }
}

/// Decodes the frame at the start of `buf`, whose first byte is byte
/// `offset` of the stream. `Ok(None)`: the bytes so far are a valid prefix
/// and more are needed. `Ok(Some((frame, len)))`: a frame of `len` bytes.
pub fn decode_frame(buf: &[u8], offset: u64) -> Result<Option<(Frame, usize)>, WireError> {
    // Check what is present of the fixed header as early as possible.
    for (i, &m) in MAGIC.iter().enumerate() {
        match buf.get(i) {
            Some(&b) if b == m => {}
            Some(_) => {
                return Err(WireError::BadMagic {
                    offset,
                    found: buf[..=i].to_vec(),
                })
            }
            None => return Ok(None),
        }
    }
    match buf.get(2) {
        Some(&v) if v == WIRE_VERSION => {}
        Some(&v) => return Err(WireError::UnsupportedVersion { offset, version: v }),
        None => return Ok(None),
    }
    let Some(head) = buf.get(..BODY_START) else {
        return Ok(None);
    };
    let header = &head[..HEADER_LEN];
    let stored = u32::from_le_bytes([head[16], head[17], head[18], head[19]]);
    let computed = crc32c::crc32c(header);
    if stored != computed && !cfg!(fuzzing) {
        return Err(WireError::BadHeaderCrc {
            offset,
            stored,
            computed,
        });
    }
    let len = u32::from_le_bytes([header[12], header[13], header[14], header[15]]);
    if len > MAX_BODY {
        return Err(WireError::TooLarge { offset, len });
    }
    let body_end = BODY_START + len as usize;
    let total = body_end + CRC_LEN;
    let Some(frame) = buf.get(..total) else {
        return Ok(None);
    };
    let stored = u32::from_le_bytes([
        frame[body_end],
        frame[body_end + 1],
        frame[body_end + 2],
        frame[body_end + 3],
    ]);
    let computed = crc32c::crc32c(&frame[..body_end]);
    if stored != computed && !cfg!(fuzzing) {
        return Err(WireError::BadCrc {
            offset,
            stored,
            computed,
        });
    }
    let Some(kind) = MessageType::from_u8(header[3]) else {
        return Err(WireError::UnknownType {
            offset,
            kind: header[3],
        });
    };
    let mut g = [0u8; 8];
    g.copy_from_slice(&header[4..12]);
    let generation = u64::from_le_bytes(g);
    let message =
        decode_body(kind, &frame[BODY_START..body_end]).map_err(|reason| WireError::Malformed {
            offset,
            kind,
            reason,
        })?;
    Ok(Some((
        Frame {
            generation,
            message,
        },
        total,
    )))
}

/// Decodes exactly one frame occupying all of `buf`.
pub fn decode_exact(buf: &[u8]) -> Result<Frame, WireError> {
    match decode_frame(buf, 0)? {
        Some((frame, len)) if len == buf.len() => Ok(frame),
        Some((_, len)) => Err(WireError::TrailingBytes {
            offset: len as u64,
            len: (buf.len() - len) as u64,
        }),
        None => Err(WireError::Truncated {
            offset: 0,
            have: buf.len() as u64,
            need: needed(buf),
        }),
    }
}

/// How many bytes the frame starting `buf` needs in all, as far as known.
fn needed(buf: &[u8]) -> u64 {
    let fixed = (BODY_START + CRC_LEN) as u64;
    match buf.get(12..HEADER_LEN) {
        Some(l) => fixed + u64::from(u32::from_le_bytes([l[0], l[1], l[2], l[3]])),
        None => fixed,
    }
}

/// A cursor over a body that fails with a reason instead of panicking.
struct Body<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], &'static str> {
        let end = self.pos.checked_add(n).ok_or(what)?;
        let s = self.buf.get(self.pos..end).ok_or(what)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, &'static str> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, &'static str> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, &'static str> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, &'static str> {
        let s = self.take(8, what)?;
        let mut b = [0u8; 8];
        b.copy_from_slice(s);
        Ok(u64::from_le_bytes(b))
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos.min(self.buf.len())..];
        self.pos = self.buf.len();
        s
    }

    fn finish(&self) -> Result<(), &'static str> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err("bytes left over after the last field")
        }
    }
}

fn decode_body(kind: MessageType, buf: &[u8]) -> Result<Message, &'static str> {
    let mut b = Body { buf, pos: 0 };
    let msg = match kind {
        MessageType::Hello => {
            let version = b.u16("body ends inside the version")?;
            let role = match b.u8("body ends before the role")? {
                1 => Role::Primary,
                2 => Role::Backup,
                _ => return Err("role is neither primary (1) nor backup (2)"),
            };
            let mut machine_hash = [0u8; 32];
            machine_hash.copy_from_slice(b.take(32, "body ends inside the machine hash")?);
            let seq = b.u64("body ends inside the sequence number")?;
            let vm_len = b.u8("body ends before the VM name length")? as usize;
            if vm_len == 0 {
                return Err("empty VM name");
            }
            let vm = std::str::from_utf8(b.take(vm_len, "VM name runs past the body")?)
                .map_err(|_| "VM name is not UTF-8")?
                .to_owned();
            let header_len = b.u32("body ends inside the log header length")? as usize;
            if header_len > MAX_LOG_HEADER {
                return Err("log header longer than the maximum");
            }
            let log_header = b
                .take(header_len, "log header runs past the body")?
                .to_vec();
            Message::Hello(Hello {
                version,
                vm,
                role,
                machine_hash,
                seq,
                log_header,
            })
        }
        MessageType::Log => {
            let first_seq = b.u64("body ends inside first_seq")?;
            if first_seq == 0 {
                return Err("first_seq is 0 (sequence numbers start at 1)");
            }
            let entries = b.rest().to_vec();
            if entries.is_empty() {
                return Err("no entries");
            }
            Message::Log { first_seq, entries }
        }
        MessageType::Ack => Message::Ack {
            seq: b.u64("body ends inside seq")?,
            executed_icount: b.u64("body ends inside executed_icount")?,
        },
        MessageType::Heartbeat => Message::Heartbeat {
            now_ms: b.u64("body ends inside now_ms")?,
            icount: b.u64("body ends inside icount")?,
        },
        MessageType::Goodbye => {
            let reason = GoodbyeReason::from_u8(b.u8("body ends before the reason")?)
                .ok_or("unknown goodbye reason")?;
            let n = b.u8("body ends before the detail length")? as usize;
            let detail = std::str::from_utf8(b.take(n, "detail runs past the body")?)
                .map_err(|_| "detail is not UTF-8")?
                .to_owned();
            Message::Goodbye { reason, detail }
        }
        MessageType::JoinRequest => {
            let n = b.u8("body ends before the VM name length")? as usize;
            if n == 0 {
                return Err("empty VM name");
            }
            let vm = std::str::from_utf8(b.take(n, "VM name runs past the body")?)
                .map_err(|_| "VM name is not UTF-8")?
                .to_owned();
            let mut machine_hash = [0u8; 32];
            machine_hash.copy_from_slice(b.take(32, "body ends inside the machine hash")?);
            let n = b.u8("body ends before the listen address length")? as usize;
            let listen = std::str::from_utf8(b.take(n, "listen address runs past the body")?)
                .map_err(|_| "listen address is not UTF-8")?
                .to_owned();
            Message::JoinRequest {
                vm,
                machine_hash,
                listen,
            }
        }
        MessageType::JoinPages => {
            let ram_size = b.u64("body ends inside ram_size")?;
            let count = b.u32("body ends inside the page count")? as usize;
            if count == 0 || count > MAX_JOIN_PAGES {
                return Err("page count outside 1..=1024");
            }
            let mut pages = Vec::with_capacity(count);
            for _ in 0..count {
                let p = b.u32("body ends inside the page list")?;
                if (p as u64 + 1) * JOIN_PAGE as u64 > ram_size {
                    return Err("page index beyond the RAM size");
                }
                pages.push(p);
            }
            let data = b
                .take(count * JOIN_PAGE, "page data runs past the body")?
                .to_vec();
            Message::JoinPages {
                ram_size,
                pages,
                data,
            }
        }
        MessageType::JoinState => {
            let icount = b.u64("body ends inside icount")?;
            let state = b.rest().to_vec();
            if state.len() > MAX_JOIN_STATE {
                return Err("state larger than 8 MiB");
            }
            Message::JoinState { icount, state }
        }
        MessageType::JoinDisk => {
            let slot = b.u8("body ends before the slot")?;
            let offset = b.u64("body ends inside the offset")?;
            let data = b.rest().to_vec();
            if data.is_empty() || data.len() > MAX_JOIN_DISK {
                return Err("disk data empty or larger than 4 MiB");
            }
            Message::JoinDisk { slot, offset, data }
        }
    };
    b.finish()?;
    Ok(msg)
}

/// Consumed bytes are dropped from the front of the buffer once there are at
/// least this many and they make up at least half of it.
const COMPACT_MIN: usize = 64 * 1024;

/// Incremental decoder for one connection: push bytes as they arrive, pop
/// frames. Errors are sticky; after one the driver drops the connection.
#[derive(Debug, Default)]
pub struct WireDecoder {
    buf: Vec<u8>,
    start: usize,
    base: u64,
    error: Option<WireError>,
}

impl WireDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
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

    /// The next complete frame, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let offset = self.base + self.start as u64;
        match decode_frame(&self.buf[self.start..], offset) {
            Ok(Some((frame, len))) => {
                self.start += len;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The connection closed: an incomplete frame left in the buffer is a
    /// truncation.
    pub fn finish(&mut self) -> Result<(), WireError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let rest = &self.buf[self.start..];
        if rest.is_empty() {
            return Ok(());
        }
        let e = WireError::Truncated {
            offset: self.base + self.start as u64,
            have: rest.len() as u64,
            need: needed(rest),
        };
        self.error = Some(e.clone());
        Err(e)
    }

    /// Bytes consumed by returned frames.
    pub fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    /// Bytes received but not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }
}

/// A batch of log entries that does not decode.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("end-of-log marker inside a Log batch")]
    EndMarker,
}

/// Decodes a Log body's batch into entries. The batch must be whole frames,
/// without an end-of-log marker.
pub fn decode_entries(bytes: &[u8]) -> Result<Vec<OwnedEntry>, BatchError> {
    let mut dec = StreamDecoder::new();
    dec.push(bytes);
    let mut out = Vec::new();
    while let Some(e) = dec.next_entry()? {
        out.push(e);
    }
    if dec.is_finished() {
        return Err(BatchError::EndMarker);
    }
    if dec.buffered() > 0 {
        dec.end_of_input();
        // Reports the incomplete frame as a truncation.
        dec.next_entry()?;
        return Err(BatchError::Log(LogError::Truncated {
            offset: dec.offset(),
            end: bytes.len() as u64,
            inside: ftvm_log::Part::FrameBody,
            frame: Some(dec.entries_decoded()),
        }));
    }
    Ok(out)
}

/// Encodes entries `(icount, kind, payload)` as a self-contained batch.
pub fn encode_entries<'a, I>(entries: I, out: &mut Vec<u8>) -> Result<(), LogError>
where
    I: IntoIterator<Item = (u64, u8, &'a [u8])>,
{
    let mut enc = FrameEncoder::new();
    for (icount, kind, payload) in entries {
        enc.encode(icount, kind, payload, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
