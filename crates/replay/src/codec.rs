//! Log entry kinds and payloads: the mapping between [`Record`]s and the
//! `(kind, payload)` pairs of an `ftvm-log` frame. Payloads are postcard
//! encodings (varints for integers, length-prefixed byte strings), so a
//! time input costs a few bytes and a frame costs its length plus a few.

use ftvm_machine::{Input, StateDigest};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub const KIND_TIME: u8 = 1;
pub const KIND_CONSOLE_RX: u8 = 2;
pub const KIND_NET_RX: u8 = 3;
pub const KIND_BLK_DONE: u8 = 4;
pub const KIND_RNG_DATA: u8 = 5;
pub const KIND_DIGEST: u8 = 0x20;
pub const KIND_OUTPUTS: u8 = 0x21;
pub const KIND_END: u8 = 0x22;

/// Why a recorded run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EndReason {
    /// The guest powered off (or a bare-metal program passed).
    PowerOff,
    /// A bare-metal program failed with this code.
    Fail(u16),
    /// The guest asked for a reset.
    Reset,
    /// The recorder was stopped (step limit, console quit, signal).
    Stopped,
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    Input(Input),
    Digest(Box<StateDigest>),
    /// Hash of every output produced since the previous `Outputs` record, and how many.
    Outputs {
        hash: u64,
        count: u64,
    },
    End(EndReason),
}

#[derive(Debug, Error)]
pub enum CodecError {
    #[error("unknown log entry kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed payload for entry kind {kind:#04x}: {reason}")]
    Payload { kind: u8, reason: String },
}

#[derive(Serialize, Deserialize)]
struct NetRx {
    slot: u8,
    frame: Vec<u8>,
}
#[derive(Serialize, Deserialize)]
struct BlkDone {
    slot: u8,
    id: u64,
    status: u8,
    data: Vec<u8>,
}
#[derive(Serialize, Deserialize)]
struct RngData {
    slot: u8,
    id: u64,
    data: Vec<u8>,
}

fn enc<T: Serialize>(v: &T, out: &mut Vec<u8>) {
    // Serialising these plain structs into a Vec cannot fail.
    if let Ok(b) = postcard::to_stdvec(v) {
        out.extend_from_slice(&b);
    }
}

fn dec<'a, T: Deserialize<'a>>(kind: u8, payload: &'a [u8]) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(payload) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(CodecError::Payload {
            kind,
            reason: format!("{} trailing bytes", rest.len()),
        }),
        Err(e) => Err(CodecError::Payload {
            kind,
            reason: e.to_string(),
        }),
    }
}

impl Record {
    /// Encodes into `out` (cleared first) and returns the entry kind.
    pub fn encode(&self, out: &mut Vec<u8>) -> u8 {
        out.clear();
        match self {
            Record::Input(Input::Time(t)) => {
                enc(t, out);
                KIND_TIME
            }
            Record::Input(Input::ConsoleRx(b)) => {
                out.extend_from_slice(b);
                KIND_CONSOLE_RX
            }
            Record::Input(Input::NetRx { slot, frame }) => {
                enc(
                    &NetRx {
                        slot: *slot,
                        frame: frame.clone(),
                    },
                    out,
                );
                KIND_NET_RX
            }
            Record::Input(Input::BlkDone {
                slot,
                id,
                status,
                data,
            }) => {
                enc(
                    &BlkDone {
                        slot: *slot,
                        id: *id,
                        status: *status,
                        data: data.clone(),
                    },
                    out,
                );
                KIND_BLK_DONE
            }
            Record::Input(Input::RngData { slot, id, data }) => {
                enc(
                    &RngData {
                        slot: *slot,
                        id: *id,
                        data: data.clone(),
                    },
                    out,
                );
                KIND_RNG_DATA
            }
            Record::Digest(d) => {
                enc(d, out);
                KIND_DIGEST
            }
            Record::Outputs { hash, count } => {
                enc(&(*hash, *count), out);
                KIND_OUTPUTS
            }
            Record::End(r) => {
                enc(r, out);
                KIND_END
            }
        }
    }

    pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, CodecError> {
        Ok(match kind {
            KIND_TIME => Record::Input(Input::Time(dec(kind, payload)?)),
            KIND_CONSOLE_RX => Record::Input(Input::ConsoleRx(payload.to_vec())),
            KIND_NET_RX => {
                let v: NetRx = dec(kind, payload)?;
                Record::Input(Input::NetRx {
                    slot: v.slot,
                    frame: v.frame,
                })
            }
            KIND_BLK_DONE => {
                let v: BlkDone = dec(kind, payload)?;
                Record::Input(Input::BlkDone {
                    slot: v.slot,
                    id: v.id,
                    status: v.status,
                    data: v.data,
                })
            }
            KIND_RNG_DATA => {
                let v: RngData = dec(kind, payload)?;
                Record::Input(Input::RngData {
                    slot: v.slot,
                    id: v.id,
                    data: v.data,
                })
            }
            KIND_DIGEST => Record::Digest(Box::new(dec(kind, payload)?)),
            KIND_OUTPUTS => {
                let (hash, count) = dec(kind, payload)?;
                Record::Outputs { hash, count }
            }
            KIND_END => Record::End(dec(kind, payload)?),
            k => return Err(CodecError::UnknownKind(k)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let recs = vec![
            Record::Input(Input::Time(123_456_789)),
            Record::Input(Input::ConsoleRx(b"ls\n".to_vec())),
            Record::Input(Input::NetRx {
                slot: 1,
                frame: vec![0xff; 60],
            }),
            Record::Input(Input::BlkDone {
                slot: 0,
                id: 7,
                status: 0,
                data: vec![1, 2, 3],
            }),
            Record::Input(Input::RngData {
                slot: 2,
                id: 9,
                data: vec![4; 16],
            }),
            Record::Digest(Box::new(StateDigest {
                icount: 5,
                pc: 0x8000_0000,
                x: [3; 32],
                f: [4; 32],
                hart: 1,
                board: 2,
                ram: vec![9, 8, 7],
            })),
            Record::Outputs { hash: 42, count: 3 },
            Record::End(EndReason::Fail(3)),
        ];
        let mut buf = Vec::new();
        for r in recs {
            let kind = r.encode(&mut buf);
            assert_eq!(Record::decode(kind, &buf).unwrap(), r);
        }
    }

    #[test]
    fn garbage_payloads_are_errors() {
        assert!(Record::decode(KIND_TIME, &[0xff; 11]).is_err());
        assert!(Record::decode(KIND_DIGEST, &[1, 2, 3]).is_err());
        assert!(Record::decode(0x7e, &[]).is_err());
        assert!(Record::decode(KIND_TIME, &[1, 0]).is_err()); // trailing byte
    }
}
