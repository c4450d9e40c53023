//! The arbiter's wire protocol: every message, in both directions, is one
//! frame — a 12-byte header (magic `FTAB`, version, message type, reserved
//! zero, body length), the body, and a CRC-32C over header and body. All
//! integers are little-endian, strings are a u16 byte length followed by
//! UTF-8. A connection carries one request at a time, each answered by one
//! reply. `docs/storage.md` specifies every byte; this module is the only
//! encoder and decoder, shared by the server and [`ArbiterClient`](crate::ArbiterClient).

use std::fmt;

/// Frame magic, `"FTAB"`.
pub const MAGIC: [u8; 4] = *b"FTAB";
/// Protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// Size of the frame header.
pub const HEADER_LEN: usize = 12;
/// Size of the CRC trailer.
pub const CRC_LEN: usize = 4;
/// Largest request body the server accepts.
pub const MAX_REQUEST_BODY: u32 = 4096;
/// Largest reply body a client accepts (a long win history).
pub const MAX_REPLY_BODY: u32 = 16 * 1024 * 1024;
/// Longest VM or claimant name, in bytes.
pub const MAX_NAME: usize = 255;
/// Longest error message, in bytes.
pub const MAX_MESSAGE: usize = 1024;

// Message types.
pub const T_TEST_AND_SET: u8 = 0x01;
pub const T_QUERY: u8 = 0x02;
pub const T_ADVANCE: u8 = 0x03;
pub const T_HISTORY: u8 = 0x04;
pub const T_WON: u8 = 0x81;
pub const T_LOST: u8 = 0x82;
pub const T_STATUS: u8 = 0x83;
pub const T_ADVANCED: u8 = 0x84;
pub const T_HISTORY_LIST: u8 = 0x85;
pub const T_ERROR: u8 = 0xFF;

// Error codes carried by T_ERROR.
/// The frame was well formed but its body was not.
pub const E_MALFORMED: u16 = 1;
/// The frame's version is not one the server speaks.
pub const E_VERSION: u16 = 2;
/// A name is empty or too long.
pub const E_INVALID: u16 = 3;
/// ADVANCE to a generation that is not higher than the current one.
pub const E_STALE: u16 = 4;
/// The server could not make the new state durable; nothing changed.
pub const E_STORAGE: u16 = 5;
/// Unknown message type.
pub const E_UNKNOWN_TYPE: u16 = 6;
/// The client's TLS identity may not make this request; nothing changed.
pub const E_DENIED: u16 = 7;

/// The answer to a test-and-set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The caller holds `generation` of the VM and may act alone.
    Won { generation: u64 },
    /// Someone else holds it, or a newer generation exists; the caller must
    /// halt. `holder` is the claimant holding `generation` (the highest
    /// generation of the VM), empty if nobody has claimed it yet.
    Lost { holder: String, generation: u64 },
}

impl Outcome {
    /// Whether this is a win.
    pub fn is_won(&self) -> bool {
        matches!(self, Outcome::Won { .. })
    }
}

/// What the arbiter knows about one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmStatus {
    /// Highest generation ever seen (0 for a VM never seen).
    pub generation: u64,
    /// Who won that generation, if anyone has.
    pub holder: Option<String>,
    /// Number of recorded wins over all generations.
    pub history_count: u64,
}

/// One recorded win.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Win {
    pub generation: u64,
    pub claimant: String,
    /// Server wall-clock time of the win, milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
}

/// A client-to-server message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    TestAndSet {
        vm: String,
        generation: u64,
        claimant: String,
    },
    Query {
        vm: String,
    },
    Advance {
        vm: String,
        generation: u64,
    },
    History {
        vm: String,
    },
}

/// A server-to-client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Won { generation: u64 },
    Lost { generation: u64, holder: String },
    Status(VmStatus),
    Advanced { generation: u64 },
    History(Vec<Win>),
    Error { code: u16, message: String },
}

/// Why a frame was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    BadMagic([u8; 4]),
    BadVersion(u8),
    BadReserved(u16),
    TooLong { len: u32, max: u32 },
    BadCrc { stored: u32, computed: u32 },
    UnknownType(u8),
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(f, "bad frame magic {m:02x?} (expected \"FTAB\")"),
            FrameError::BadVersion(v) => {
                write!(
                    f,
                    "unsupported protocol version {v} (this server speaks {VERSION})"
                )
            }
            FrameError::BadReserved(r) => {
                write!(f, "reserved header field is 0x{r:04x}, must be 0")
            }
            FrameError::TooLong { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the {max}-byte limit")
            }
            FrameError::BadCrc { stored, computed } => write!(
                f,
                "CRC mismatch (frame says 0x{stored:08x}, content gives 0x{computed:08x})"
            ),
            FrameError::UnknownType(t) => write!(f, "unknown message type 0x{t:02x}"),
            FrameError::Malformed(m) => write!(f, "malformed body: {m}"),
        }
    }
}

/// Encodes a frame of type `kind` around `body`.
pub fn encode_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(HEADER_LEN + body.len() + CRC_LEN);
    f.extend_from_slice(&MAGIC);
    f.push(VERSION);
    f.push(kind);
    f.extend_from_slice(&0u16.to_le_bytes());
    f.extend_from_slice(&(body.len() as u32).to_le_bytes());
    f.extend_from_slice(body);
    let crc = crc32c::crc32c(&f);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

/// Checks a header; returns the message type and body length.
pub fn parse_header(h: &[u8; HEADER_LEN], max_body: u32) -> Result<(u8, u32), FrameError> {
    let mut magic = [0u8; 4];
    magic.copy_from_slice(&h[0..4]);
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion(h[4]));
    }
    let reserved = u16::from_le_bytes([h[6], h[7]]);
    if reserved != 0 {
        return Err(FrameError::BadReserved(reserved));
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if len > max_body {
        return Err(FrameError::TooLong { len, max: max_body });
    }
    Ok((h[5], len))
}

/// Checks the CRC of a frame given its header and `body_and_crc` (the body
/// followed by the 4-byte trailer); returns the body.
pub fn check_crc<'a>(
    header: &[u8; HEADER_LEN],
    body_and_crc: &'a [u8],
) -> Result<&'a [u8], FrameError> {
    let split = body_and_crc
        .len()
        .checked_sub(CRC_LEN)
        .ok_or_else(|| FrameError::Malformed("frame shorter than its CRC".into()))?;
    let (body, trailer) = body_and_crc.split_at(split);
    let stored = u32::from_le_bytes([trailer[0], trailer[1], trailer[2], trailer[3]]);
    let computed = crc32c::crc32c_append(crc32c::crc32c(header), body);
    if stored != computed && !cfg!(fuzzing) {
        return Err(FrameError::BadCrc { stored, computed });
    }
    Ok(body)
}

/// Decodes a whole frame held in memory (tests and tools).
pub fn decode_frame(bytes: &[u8], max_body: u32) -> Result<(u8, &[u8]), FrameError> {
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(FrameError::Malformed(format!(
            "{} bytes is shorter than a frame",
            bytes.len()
        )));
    }
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&bytes[..HEADER_LEN]);
    let (kind, len) = parse_header(&h, max_body)?;
    let rest = &bytes[HEADER_LEN..];
    if rest.len() != len as usize + CRC_LEN {
        return Err(FrameError::Malformed(format!(
            "frame says {len} body bytes, {} present",
            rest.len().saturating_sub(CRC_LEN)
        )));
    }
    Ok((kind, check_crc(&h, rest)?))
}

/// Little-endian body writer.
#[derive(Default)]
pub(crate) struct Enc(pub Vec<u8>);

impl Enc {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// A string; the caller has checked it fits a u16 length.
    pub fn str(&mut self, s: &str) -> &mut Self {
        let n = s.len().min(u16::MAX as usize);
        self.u16(n as u16);
        self.0.extend_from_slice(&s.as_bytes()[..n]);
        self
    }
}

/// Little-endian body reader that never reads past its slice.
pub(crate) struct Dec<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Dec<'a> {
    pub fn new(b: &'a [u8]) -> Self {
        Dec { b, pos: 0 }
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if self.b.len() - self.pos < n {
            return Err(format!(
                "{what} needs {n} bytes at offset {}, only {} left",
                self.pos,
                self.b.len() - self.pos
            ));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }
    pub fn u16(&mut self, what: &str) -> Result<u16, String> {
        let s = self.take(2, what)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    pub fn u64(&mut self, what: &str) -> Result<u64, String> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    pub fn str(&mut self, what: &str, max: usize) -> Result<String, String> {
        let n = self.u16(what)? as usize;
        if n > max {
            return Err(format!("{what} is {n} bytes, limit {max}"));
        }
        let s = self.take(n, what)?;
        String::from_utf8(s.to_vec()).map_err(|_| format!("{what} is not UTF-8"))
    }
    pub fn remaining(&self) -> usize {
        self.b.len() - self.pos
    }
    pub fn finish(&self) -> Result<(), String> {
        if self.pos == self.b.len() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.b.len() - self.pos))
        }
    }
}

/// Checks a VM or claimant name: 1 to [`MAX_NAME`] bytes, no control characters.
pub fn check_name(what: &str, s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if s.len() > MAX_NAME {
        return Err(format!("{what} is {} bytes, limit {MAX_NAME}", s.len()));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{what} contains control characters"));
    }
    Ok(())
}

impl Request {
    /// The frame for this request.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        let kind = match self {
            Request::TestAndSet {
                vm,
                generation,
                claimant,
            } => {
                e.str(vm).u64(*generation).str(claimant);
                T_TEST_AND_SET
            }
            Request::Query { vm } => {
                e.str(vm);
                T_QUERY
            }
            Request::Advance { vm, generation } => {
                e.str(vm).u64(*generation);
                T_ADVANCE
            }
            Request::History { vm } => {
                e.str(vm);
                T_HISTORY
            }
        };
        encode_frame(kind, &e.0)
    }

    /// Decodes a request body of type `kind`. Names are length-limited here
    /// but checked for content by the server (so it can answer E_INVALID).
    pub fn decode(kind: u8, body: &[u8]) -> Result<Request, FrameError> {
        let mut d = Dec::new(body);
        let m = FrameError::Malformed;
        let req = match kind {
            T_TEST_AND_SET => Request::TestAndSet {
                vm: d.str("vm", MAX_NAME).map_err(m)?,
                generation: d.u64("generation").map_err(m)?,
                claimant: d.str("claimant", MAX_NAME).map_err(m)?,
            },
            T_QUERY => Request::Query {
                vm: d.str("vm", MAX_NAME).map_err(m)?,
            },
            T_ADVANCE => Request::Advance {
                vm: d.str("vm", MAX_NAME).map_err(m)?,
                generation: d.u64("generation").map_err(m)?,
            },
            T_HISTORY => Request::History {
                vm: d.str("vm", MAX_NAME).map_err(m)?,
            },
            other => return Err(FrameError::UnknownType(other)),
        };
        d.finish().map_err(FrameError::Malformed)?;
        Ok(req)
    }
}

impl Reply {
    /// The frame for this reply.
    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::default();
        let kind = match self {
            Reply::Won { generation } => {
                e.u64(*generation);
                T_WON
            }
            Reply::Lost { generation, holder } => {
                e.u64(*generation).str(holder);
                T_LOST
            }
            Reply::Status(s) => {
                e.u64(s.generation);
                match &s.holder {
                    Some(h) => e.u8(1).str(h),
                    None => e.u8(0).str(""),
                };
                e.u64(s.history_count);
                T_STATUS
            }
            Reply::Advanced { generation } => {
                e.u64(*generation);
                T_ADVANCED
            }
            Reply::History(wins) => {
                e.u32(wins.len() as u32);
                for w in wins {
                    e.u64(w.generation).u64(w.at_unix_ms).str(&w.claimant);
                }
                T_HISTORY_LIST
            }
            Reply::Error { code, message } => {
                let mut msg = message.as_str();
                if msg.len() > MAX_MESSAGE {
                    let mut cut = MAX_MESSAGE;
                    while !msg.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    msg = &msg[..cut];
                }
                e.u16(*code).str(msg);
                T_ERROR
            }
        };
        encode_frame(kind, &e.0)
    }

    /// Decodes a reply body of type `kind`.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Reply, FrameError> {
        let mut d = Dec::new(body);
        let m = FrameError::Malformed;
        let reply = match kind {
            T_WON => Reply::Won {
                generation: d.u64("generation").map_err(m)?,
            },
            T_LOST => Reply::Lost {
                generation: d.u64("generation").map_err(m)?,
                holder: d.str("holder", MAX_NAME).map_err(m)?,
            },
            T_STATUS => {
                let generation = d.u64("generation").map_err(m)?;
                let has = d.u8("holder flag").map_err(m)?;
                let holder = d.str("holder", MAX_NAME).map_err(m)?;
                let history_count = d.u64("history count").map_err(m)?;
                let holder = match has {
                    0 if holder.is_empty() => None,
                    1 => Some(holder),
                    _ => return Err(m("bad holder flag".into())),
                };
                Reply::Status(VmStatus {
                    generation,
                    holder,
                    history_count,
                })
            }
            T_ADVANCED => Reply::Advanced {
                generation: d.u64("generation").map_err(m)?,
            },
            T_HISTORY_LIST => {
                let n = d.u32("count").map_err(m)? as usize;
                // Each entry takes at least 18 bytes: a lying count cannot
                // make us allocate more than the body could hold.
                if n > d.remaining() / 18 {
                    return Err(m(format!("history count {n} does not fit the body")));
                }
                let mut wins = Vec::with_capacity(n);
                for _ in 0..n {
                    wins.push(Win {
                        generation: d.u64("generation").map_err(m)?,
                        at_unix_ms: d.u64("time").map_err(m)?,
                        claimant: d.str("claimant", MAX_NAME).map_err(m)?,
                    });
                }
                Reply::History(wins)
            }
            T_ERROR => Reply::Error {
                code: d.u16("code").map_err(m)?,
                message: d.str("message", MAX_MESSAGE).map_err(m)?,
            },
            other => return Err(FrameError::UnknownType(other)),
        };
        d.finish().map_err(FrameError::Malformed)?;
        Ok(reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_request(r: Request) {
        let f = r.encode();
        let (kind, body) = decode_frame(&f, MAX_REQUEST_BODY).unwrap();
        assert_eq!(Request::decode(kind, body).unwrap(), r);
    }

    fn round_trip_reply(r: Reply) {
        let f = r.encode();
        let (kind, body) = decode_frame(&f, MAX_REPLY_BODY).unwrap();
        assert_eq!(Reply::decode(kind, body).unwrap(), r);
    }

    #[test]
    fn every_message_round_trips() {
        round_trip_request(Request::TestAndSet {
            vm: "vm1".into(),
            generation: 7,
            claimant: "backup@host-b".into(),
        });
        round_trip_request(Request::Query { vm: "vm1".into() });
        round_trip_request(Request::Advance {
            vm: "vm1".into(),
            generation: u64::MAX,
        });
        round_trip_request(Request::History { vm: "ü".into() });
        round_trip_reply(Reply::Won { generation: 3 });
        round_trip_reply(Reply::Lost {
            generation: 3,
            holder: "primary".into(),
        });
        round_trip_reply(Reply::Status(VmStatus {
            generation: 9,
            holder: None,
            history_count: 0,
        }));
        round_trip_reply(Reply::Status(VmStatus {
            generation: 9,
            holder: Some("p".into()),
            history_count: 4,
        }));
        round_trip_reply(Reply::Advanced { generation: 10 });
        round_trip_reply(Reply::History(vec![
            Win {
                generation: 1,
                claimant: "a".into(),
                at_unix_ms: 5,
            },
            Win {
                generation: 2,
                claimant: "b".into(),
                at_unix_ms: 6,
            },
        ]));
        round_trip_reply(Reply::Error {
            code: E_STALE,
            message: "stale".into(),
        });
    }

    #[test]
    fn golden_bytes_match_the_worked_examples() {
        // The worked examples in docs/storage.md.
        let f = Request::Query { vm: "vm1".into() }.encode();
        let mut want = vec![
            0x46, 0x54, 0x41, 0x42, 0x01, 0x02, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00, 0x03, 0x00,
            b'v', b'm', b'1',
        ];
        want.extend_from_slice(&[0x09, 0x39, 0x45, 0x09]);
        assert_eq!(f, want);
        let tas = Request::TestAndSet {
            vm: "vm1".into(),
            generation: 7,
            claimant: "backup1".into(),
        }
        .encode();
        let hex: Vec<String> = tas.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            hex.join(" "),
            "46 54 41 42 01 01 00 00 16 00 00 00 03 00 76 6D 31 07 00 00 00 00 00 00 00 \
             07 00 62 61 63 6B 75 70 31 96 14 86 2C"
        );
        let won = Reply::Won { generation: 7 }.encode();
        let hex: Vec<String> = won.iter().map(|b| format!("{b:02X}")).collect();
        assert_eq!(
            hex.join(" "),
            "46 54 41 42 01 81 00 00 08 00 00 00 07 00 00 00 00 00 00 00 FE D3 14 6E"
        );
    }

    #[test]
    fn damaged_frames_are_rejected() {
        let f = Request::Query { vm: "vm1".into() }.encode();
        for i in 0..f.len() {
            let mut bad = f.clone();
            bad[i] ^= 0x40;
            assert!(
                decode_frame(&bad, MAX_REQUEST_BODY)
                    .and_then(|(k, b)| Request::decode(k, b))
                    .is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
        let mut v2 = f.clone();
        v2[4] = 2;
        assert_eq!(
            decode_frame(&v2, MAX_REQUEST_BODY),
            Err(FrameError::BadVersion(2))
        );
        assert!(decode_frame(&f[..f.len() - 1], MAX_REQUEST_BODY).is_err());
        let huge = encode_frame(T_QUERY, &vec![0u8; 5000]);
        assert!(matches!(
            decode_frame(&huge, MAX_REQUEST_BODY),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn bodies_must_be_exact() {
        let mut body = Enc::default();
        body.str("vm").u8(0);
        assert!(Request::decode(T_QUERY, &body.0).is_err());
        assert!(Request::decode(T_QUERY, &[5, 0, b'a']).is_err());
        assert!(matches!(
            Request::decode(0x42, &[]),
            Err(FrameError::UnknownType(0x42))
        ));
        // A history count that lies about its size.
        let mut lie = Enc::default();
        lie.u32(u32::MAX);
        assert!(Reply::decode(T_HISTORY_LIST, &lie.0).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("vm", "vm-1").is_ok());
        assert!(check_name("vm", "").is_err());
        assert!(check_name("vm", "a\nb").is_err());
        assert!(check_name("vm", &"x".repeat(256)).is_err());
    }
}
