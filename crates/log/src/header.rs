//! The log header: magic, format version, a checksummed body of typed
//! tag-length-value fields, and the `LogHeader` struct those fields encode
//! (machine configuration, image identities, creation time, producer, digest
//! interval), plus the compatibility check a replayer runs before trusting a
//! log against the images and configuration it was given.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::{LogError, Part};

/// The 8 bytes every log starts with.
pub const MAGIC: [u8; 8] = *b"FTVMLOG\0";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Largest header body (the TLV fields), in bytes.
pub const MAX_HEADER_BODY: u32 = 1 << 20;

/// Magic (8) + version (2) + body length (4).
const PREFIX_LEN: usize = 14;
/// A TLV field's tag (2) + length (4).
const FIELD_HEAD_LEN: usize = 6;

/// Header field tags. Tags with bit 15 set are *critical*: a reader that does
/// not know one must reject the header. Other unknown tags are skipped.
pub mod tag {
    /// Opaque machine configuration bytes.
    pub const MACHINE_CONFIG: u16 = 0x0001;
    /// One image identity: size u64 LE, sha256 (32 bytes), role (UTF-8, rest).
    pub const IMAGE: u16 = 0x0002;
    /// Creation time, u64 LE milliseconds since the Unix epoch.
    pub const CREATED_UNIX_MS: u16 = 0x0003;
    /// Producer string, UTF-8.
    pub const PRODUCER: u16 = 0x0004;
    /// State-digest interval in instructions, u64 LE (0 = none).
    pub const DIGEST_INTERVAL: u16 = 0x0005;
    /// Bit that marks a tag as critical.
    pub const CRITICAL: u16 = 0x8000;
}

/// Identity of one image the machine was started with (firmware, kernel,
/// initrd, a disk, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default, Hash)]
pub struct ImageId {
    /// What the image is for, e.g. "firmware", "kernel", "initrd", "disk0".
    pub role: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the contents.
    pub sha256: [u8; 32],
}

/// The typed contents of a log header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogHeader {
    /// Opaque canonical encoding of the machine configuration (the recorder's business).
    pub machine_config: Vec<u8>,
    /// Images in the order the recorder listed them.
    pub images: Vec<ImageId>,
    /// When the log was created, milliseconds since the Unix epoch.
    pub created_unix_ms: u64,
    /// Who wrote the log, e.g. "ftvm 0.1.0".
    pub producer: String,
    /// Instructions between state-digest entries; 0 = no digests.
    pub digest_interval: u64,
}

fn put_field(out: &mut Vec<u8>, tag: u16, value_parts: &[&[u8]]) {
    let len: usize = value_parts.iter().map(|p| p.len()).sum();
    out.extend_from_slice(&tag.to_le_bytes());
    // Callers bound the total header size before calling, so this fits.
    out.extend_from_slice(&(len as u32).to_le_bytes());
    for p in value_parts {
        out.extend_from_slice(p);
    }
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

impl LogHeader {
    /// Size of the TLV body this header encodes to.
    fn body_len(&self) -> u64 {
        let field = |len: usize| (FIELD_HEAD_LEN + len) as u64;
        let mut n =
            field(self.machine_config.len()) + field(8) + field(self.producer.len()) + field(8);
        for img in &self.images {
            n += field(8 + 32 + img.role.len());
        }
        n
    }

    /// Encodes the complete header: magic, version, body length, body, CRC.
    ///
    /// Fields are written in tag order (images in list order). Fails with
    /// [`LogError::HeaderTooLarge`] if the body would exceed [`MAX_HEADER_BODY`].
    pub fn encode(&self) -> Result<Vec<u8>, LogError> {
        let body_len = self.body_len();
        if body_len > u64::from(MAX_HEADER_BODY) {
            return Err(LogError::HeaderTooLarge {
                len: body_len,
                max: u64::from(MAX_HEADER_BODY),
            });
        }
        let mut out = Vec::with_capacity(PREFIX_LEN + body_len as usize + 4);
        out.extend_from_slice(&MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(body_len as u32).to_le_bytes());
        put_field(&mut out, tag::MACHINE_CONFIG, &[&self.machine_config]);
        for img in &self.images {
            put_field(
                &mut out,
                tag::IMAGE,
                &[&img.size.to_le_bytes(), &img.sha256, img.role.as_bytes()],
            );
        }
        put_field(
            &mut out,
            tag::CREATED_UNIX_MS,
            &[&self.created_unix_ms.to_le_bytes()],
        );
        put_field(&mut out, tag::PRODUCER, &[self.producer.as_bytes()]);
        put_field(
            &mut out,
            tag::DIGEST_INTERVAL,
            &[&self.digest_interval.to_le_bytes()],
        );
        debug_assert_eq!(out.len(), PREFIX_LEN + body_len as usize);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes a header from the start of `bytes`, returning it and the
    /// number of bytes it occupies (the first frame starts there).
    ///
    /// If `bytes` is a strict prefix of a header that is valid so far, the
    /// error is [`LogError::Truncated`]; any other error is final.
    pub fn decode(bytes: &[u8]) -> Result<(LogHeader, usize), LogError> {
        let end = bytes.len() as u64;
        let truncated = |inside| LogError::Truncated {
            offset: 0,
            end,
            inside,
            frame: None,
        };
        let magic_len = bytes.len().min(MAGIC.len());
        if bytes[..magic_len] != MAGIC[..magic_len] {
            return Err(LogError::NotALog {
                found: bytes[..magic_len].to_vec(),
            });
        }
        if bytes.len() < MAGIC.len() {
            return Err(truncated(Part::Magic));
        }
        if bytes.len() < 10 {
            return Err(truncated(Part::HeaderPrefix));
        }
        let version = le_u16(bytes, 8);
        if version != FORMAT_VERSION {
            return Err(LogError::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if bytes.len() < PREFIX_LEN {
            return Err(truncated(Part::HeaderPrefix));
        }
        let body_len = le_u32(bytes, 10);
        if body_len > MAX_HEADER_BODY {
            return Err(LogError::HeaderTooLarge {
                len: u64::from(body_len),
                max: u64::from(MAX_HEADER_BODY),
            });
        }
        let body_end = PREFIX_LEN + body_len as usize;
        if bytes.len() < body_end {
            return Err(truncated(Part::HeaderBody));
        }
        if bytes.len() < body_end + 4 {
            return Err(truncated(Part::HeaderCrc));
        }
        let stored = le_u32(bytes, body_end);
        let computed = crc32c::crc32c(&bytes[..body_end]);
        if stored != computed && !cfg!(fuzzing) {
            return Err(LogError::HeaderCorrupt {
                offset: body_end as u64,
                stored,
                computed,
            });
        }
        let header = parse_fields(&bytes[PREFIX_LEN..body_end])?;
        Ok((header, body_end + 4))
    }

    /// Checks that a log recorded with `self` can be replayed on a machine
    /// set up as `expected` describes.
    ///
    /// Compared: the machine configuration bytes and the images, matched by
    /// role (size and sha256 must agree; an image present on one side only
    /// is a difference; if a role occurs more than once, occurrences are
    /// paired in list order). Not compared: `created_unix_ms`, `producer` and
    /// `digest_interval`, which describe the recording rather than the
    /// machine (a replayer takes the digest interval from the log).
    pub fn check_compatible(&self, expected: &LogHeader) -> Result<(), Mismatch> {
        let mut differences = Vec::new();
        if self.machine_config != expected.machine_config {
            let first_diff = self
                .machine_config
                .iter()
                .zip(&expected.machine_config)
                .position(|(a, b)| a != b)
                .unwrap_or(self.machine_config.len().min(expected.machine_config.len()));
            differences.push(Difference::MachineConfig {
                log_len: self.machine_config.len(),
                given_len: expected.machine_config.len(),
                log_crc32c: crc32c::crc32c(&self.machine_config),
                given_crc32c: crc32c::crc32c(&expected.machine_config),
                first_diff,
            });
        }
        let mut used = vec![false; expected.images.len()];
        for img in &self.images {
            let found = expected
                .images
                .iter()
                .enumerate()
                .find(|(i, g)| !used[*i] && g.role == img.role);
            match found {
                Some((i, given)) => {
                    used[i] = true;
                    if given.size != img.size || given.sha256 != img.sha256 {
                        differences.push(Difference::Image {
                            role: img.role.clone(),
                            log_size: img.size,
                            given_size: given.size,
                            log_sha256: img.sha256,
                            given_sha256: given.sha256,
                        });
                    }
                }
                None => differences.push(Difference::ImageMissing(img.clone())),
            }
        }
        for (i, given) in expected.images.iter().enumerate() {
            if !used[i] {
                differences.push(Difference::ImageUnexpected(given.clone()));
            }
        }
        if differences.is_empty() {
            Ok(())
        } else {
            Err(Mismatch { differences })
        }
    }
}

/// Parses the TLV body. Offsets in errors are absolute (the body starts at byte 14).
fn parse_fields(body: &[u8]) -> Result<LogHeader, LogError> {
    let invalid = |at: usize, reason: String| LogError::HeaderInvalid {
        offset: (PREFIX_LEN + at) as u64,
        reason,
    };
    let mut machine_config: Option<Vec<u8>> = None;
    let mut images = Vec::new();
    let mut created: Option<u64> = None;
    let mut producer: Option<String> = None;
    let mut digest: Option<u64> = None;
    let mut seen = BTreeSet::new();

    let mut pos = 0usize;
    while pos < body.len() {
        if body.len() - pos < FIELD_HEAD_LEN {
            return Err(invalid(
                pos,
                "field tag/length runs past the end of the header body".into(),
            ));
        }
        let t = le_u16(body, pos);
        let len = le_u32(body, pos + 2) as usize;
        let start = pos + FIELD_HEAD_LEN;
        if len > body.len() - start {
            return Err(invalid(
                pos,
                format!(
                    "field {t:#06x} claims {len} bytes, only {} remain in the header body",
                    body.len() - start
                ),
            ));
        }
        let value = &body[start..start + len];
        let singular = matches!(
            t,
            tag::MACHINE_CONFIG | tag::CREATED_UNIX_MS | tag::PRODUCER | tag::DIGEST_INTERVAL
        );
        if singular && !seen.insert(t) {
            return Err(invalid(
                pos,
                format!("field {t:#06x} appears more than once"),
            ));
        }
        let utf8 = |v: &[u8], what: &str| {
            String::from_utf8(v.to_vec())
                .map_err(|_| invalid(pos, format!("{what} is not valid UTF-8")))
        };
        let u64_field = |v: &[u8], what: &str| {
            if v.len() == 8 {
                Ok(le_u64(v))
            } else {
                Err(invalid(
                    pos,
                    format!("{what} field is {} bytes, expected 8", v.len()),
                ))
            }
        };
        match t {
            0 => return Err(invalid(pos, "field tag 0 is reserved".into())),
            tag::MACHINE_CONFIG => machine_config = Some(value.to_vec()),
            tag::IMAGE => {
                if value.len() < 40 {
                    return Err(invalid(
                        pos,
                        format!("image field is {} bytes, at least 40 expected", value.len()),
                    ));
                }
                let mut sha256 = [0u8; 32];
                sha256.copy_from_slice(&value[8..40]);
                images.push(ImageId {
                    size: le_u64(value),
                    sha256,
                    role: utf8(&value[40..], "image role")?,
                });
            }
            tag::CREATED_UNIX_MS => created = Some(u64_field(value, "creation time")?),
            tag::PRODUCER => producer = Some(utf8(value, "producer")?),
            tag::DIGEST_INTERVAL => digest = Some(u64_field(value, "digest interval")?),
            t if t & tag::CRITICAL != 0 => {
                return Err(invalid(
                    pos,
                    format!("unknown critical field {t:#06x} (written by a newer ftvm?)"),
                ))
            }
            _ => {} // Unknown, non-critical: skipped.
        }
        pos = start + len;
    }
    let missing = |what: &str| invalid(body.len(), format!("required field {what} is missing"));
    Ok(LogHeader {
        machine_config: machine_config.ok_or_else(|| missing("machine configuration (0x0001)"))?,
        images,
        created_unix_ms: created.ok_or_else(|| missing("creation time (0x0003)"))?,
        producer: producer.ok_or_else(|| missing("producer (0x0004)"))?,
        digest_interval: digest.ok_or_else(|| missing("digest interval (0x0005)"))?,
    })
}

/// One way a log's header differs from what the replayer was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// The machine configuration bytes differ.
    MachineConfig {
        log_len: usize,
        given_len: usize,
        log_crc32c: u32,
        given_crc32c: u32,
        /// First byte index at which they differ (or the shorter length).
        first_diff: usize,
    },
    /// An image of the same role differs in size and/or contents.
    Image {
        role: String,
        log_size: u64,
        given_size: u64,
        log_sha256: [u8; 32],
        given_sha256: [u8; 32],
    },
    /// The log was recorded with this image; no image of its role was given.
    ImageMissing(ImageId),
    /// This image was given; the log was recorded without an image of its role.
    ImageUnexpected(ImageId),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Difference::MachineConfig {
                log_len,
                given_len,
                log_crc32c,
                given_crc32c,
                first_diff,
            } => write!(
                f,
                "machine configuration differs: {log_len} bytes (crc32c {log_crc32c:08x}) in the log, \
                 {given_len} bytes (crc32c {given_crc32c:08x}) given, first difference at byte {first_diff}"
            ),
            Difference::Image {
                role,
                log_size,
                given_size,
                log_sha256,
                given_sha256,
            } => {
                write!(f, "{role} image differs:")?;
                let mut sep = " ";
                if log_size != given_size {
                    write!(f, "{sep}size {log_size} bytes in the log, {given_size} given")?;
                    sep = "; ";
                }
                if log_sha256 != given_sha256 {
                    write!(f, "{sep}sha256 {} in the log, {} given", hex(log_sha256), hex(given_sha256))?;
                }
                Ok(())
            }
            Difference::ImageMissing(img) => write!(
                f,
                "the log was recorded with a {} image ({} bytes, sha256 {}) but none was given",
                img.role,
                img.size,
                hex(&img.sha256)
            ),
            Difference::ImageUnexpected(img) => write!(
                f,
                "a {} image ({} bytes, sha256 {}) was given but the log was recorded without one",
                img.role,
                img.size,
                hex(&img.sha256)
            ),
        }
    }
}

/// The result of a failed [`LogHeader::check_compatible`]: every difference found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("log does not match the given machine: {}", join(.differences))]
pub struct Mismatch {
    pub differences: Vec<Difference>,
}

fn join(diffs: &[Difference]) -> String {
    diffs
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}
