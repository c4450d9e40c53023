//! The hidden `--test-fault STEP:KIND` of `ftvm primary` and `ftvm backup`:
//! a fault injected when the guest reaches instruction STEP, so that a
//! fault campaign (`ftvm-chaos`) can reproduce a failure at the same point
//! of the guest's execution rather than at a wall-clock time. The drivers
//! run the machine to STEP exactly ([`TestFault::limit`]) and then call
//! [`TestFault::due`]; what the fault does is theirs to carry out, except
//! for the parts that are the same on both sides (dying, stalling, damaging
//! one log entry). Kinds:
//!
//! - `die`: SIGKILL to itself;
//! - `stall:MS`: the driver's thread sleeps MS milliseconds (heartbeats,
//!   acknowledgements and replay stop, as in a host stall);
//! - `drop`: the logging connection is closed;
//! - `corrupt`: one bit of the next log entry is flipped — on the primary
//!   after the frame was encoded (damage on the wire: the frame checksum
//!   must catch it), on the backup after the frame was decoded and before
//!   its entries are (the entries' own ftvm-log checksums must catch it).
//!   Either way the backup must refuse the entry, never replay it.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use ftvm_ft::{Frame, Message};

/// What happens at the step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Die,
    Stall(u64),
    Drop,
    Corrupt,
}

/// A `--test-fault` option: armed until the guest reaches `step`.
#[derive(Clone, Debug)]
pub struct TestFault {
    pub step: u64,
    pub kind: FaultKind,
    fired: bool,
    corrupt_armed: bool,
}

impl FromStr for TestFault {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected STEP:die, STEP:stall:MS, STEP:drop or STEP:corrupt");
        let mut parts = s.split(':');
        let step = parts
            .next()
            .and_then(|p| p.trim().parse::<u64>().ok())
            .ok_or_else(bad)?;
        let kind = match (parts.next(), parts.next(), parts.next()) {
            (Some("die"), None, _) => FaultKind::Die,
            (Some("drop"), None, _) => FaultKind::Drop,
            (Some("corrupt"), None, _) => FaultKind::Corrupt,
            (Some("stall"), Some(ms), None) => {
                FaultKind::Stall(ms.trim().parse().map_err(|_| bad())?)
            }
            _ => return Err(bad()),
        };
        Ok(TestFault {
            step,
            kind,
            fired: false,
            corrupt_armed: false,
        })
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultKind::Die => write!(f, "die"),
            FaultKind::Stall(ms) => write!(f, "stall {ms} ms"),
            FaultKind::Drop => write!(f, "drop the logging connection"),
            FaultKind::Corrupt => write!(f, "corrupt the next log entry"),
        }
    }
}

impl TestFault {
    /// The step a run starting at `icount` may go to instead of `end`, so
    /// that it stops exactly at the fault's step.
    pub fn limit(&self, icount: u64, end: u64) -> u64 {
        if !self.fired && self.step > icount {
            end.min(self.step)
        } else {
            end
        }
    }

    /// The fault, once, when the guest is at (or past) its step. Dying and
    /// stalling happen here; the rest is the caller's.
    pub fn due(&mut self, who: &str, icount: u64) -> Option<FaultKind> {
        if self.fired || icount < self.step {
            return None;
        }
        self.fired = true;
        eprintln!(
            "ftvm: {who}: test fault: step {} reached (guest at step {icount}): {}",
            self.step, self.kind
        );
        match self.kind {
            FaultKind::Die => {
                // SAFETY: kill(2) on our own pid with a valid signal.
                unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
            }
            FaultKind::Stall(ms) => std::thread::sleep(Duration::from_millis(ms)),
            FaultKind::Corrupt => self.corrupt_armed = true,
            FaultKind::Drop => {}
        }
        Some(self.kind)
    }

    /// Whether the next log frame is to be damaged (consumes the arming).
    fn take_corrupt(&mut self, frame: &Frame) -> bool {
        if self.corrupt_armed && matches!(frame.message, Message::Log { .. }) {
            self.corrupt_armed = false;
            true
        } else {
            false
        }
    }

    /// Primary: flips a bit of the last body byte of an encoded Log frame
    /// (`bytes`: the whole frame), if one is to be damaged.
    pub fn damage_encoded(&mut self, who: &str, frame: &Frame, bytes: &mut [u8]) {
        if !self.take_corrupt(frame) {
            return;
        }
        // The frame ends with its 4-byte checksum; the byte before is body.
        if let Some(i) = bytes.len().checked_sub(ftvm_ft::wire::CRC_LEN + 1) {
            bytes[i] ^= 0x10;
            eprintln!("ftvm: {who}: test fault: flipped a bit of log frame byte {i} on the wire");
        }
    }

    /// Backup: flips a bit of the last entry's last body byte of a decoded
    /// Log frame's batch, if one is to be damaged.
    pub fn damage_decoded(&mut self, who: &str, frame: &mut Frame) {
        if !self.take_corrupt(frame) {
            return;
        }
        if let Message::Log { entries, .. } = &mut frame.message {
            // The batch ends with its last entry's 4-byte checksum.
            if let Some(i) = entries.len().checked_sub(5) {
                entries[i] ^= 0x10;
                eprintln!("ftvm: {who}: test fault: flipped a bit of received log batch byte {i}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind() {
        let t: TestFault = "123:die".parse().unwrap();
        assert_eq!((t.step, t.kind), (123, FaultKind::Die));
        let t: TestFault = "5:stall:250".parse().unwrap();
        assert_eq!(t.kind, FaultKind::Stall(250));
        assert_eq!("7:drop".parse::<TestFault>().unwrap().kind, FaultKind::Drop);
        assert_eq!(
            "7:corrupt".parse::<TestFault>().unwrap().kind,
            FaultKind::Corrupt
        );
        for bad in [
            "",
            "x:die",
            "5",
            "5:stall",
            "5:stall:x",
            "5:die:1",
            "5:explode",
        ] {
            assert!(bad.parse::<TestFault>().is_err(), "{bad}");
        }
    }

    #[test]
    fn stops_a_run_at_the_step_and_fires_once() {
        let mut t: TestFault = "1000:drop".parse().unwrap();
        assert_eq!(t.limit(0, 4000), 1000);
        assert_eq!(t.limit(0, 500), 500);
        assert_eq!(t.due("test", 999), None);
        assert_eq!(t.due("test", 1000), Some(FaultKind::Drop));
        assert_eq!(t.due("test", 1000), None);
        assert_eq!(t.limit(1000, 5000), 5000);
    }

    #[test]
    fn damages_one_log_frame_so_that_its_checksum_fails() {
        let mut batch = Vec::new();
        ftvm_ft::wire::encode_entries([(10u64, 1u8, &b"payload"[..])], &mut batch).unwrap();
        let frame = Frame {
            generation: 1,
            message: Message::Log {
                first_seq: 1,
                entries: batch,
            },
        };
        // On the wire: the frame checksum catches it.
        let mut t: TestFault = "0:corrupt".parse().unwrap();
        assert_eq!(t.due("test", 0), Some(FaultKind::Corrupt));
        let mut bytes = frame.to_bytes().unwrap();
        t.damage_encoded("test", &frame, &mut bytes);
        let err = ftvm_ft::wire::decode_exact(&bytes).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        // Only once.
        let mut again = frame.to_bytes().unwrap();
        t.damage_encoded("test", &frame, &mut again);
        assert!(ftvm_ft::wire::decode_exact(&again).is_ok());
        // After decoding: the entry's own checksum catches it.
        let mut t: TestFault = "0:corrupt".parse().unwrap();
        t.due("test", 0);
        let mut f = frame.clone();
        t.damage_decoded("test", &mut f);
        let Message::Log { entries, .. } = &f.message else {
            unreachable!()
        };
        let err = ftvm_ft::wire::decode_entries(entries).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }
}
