//! The values this arbiter stores, as JSON so that `etcdctl get` shows them
//! to an operator. [`State`] is the VM's current generation and holder;
//! [`WinValue`] one recorded win.

use ftvm_storage::{VmRecord, Win};
use serde::{Deserialize, Serialize};

/// The value of a VM's state key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub generation: u64,
    pub holder: Option<String>,
}

impl State {
    /// The rules' view of this state (the wins live in keys of their own,
    /// and the rules only append to them).
    pub fn to_record(&self) -> VmRecord {
        VmRecord {
            generation: self.generation,
            holder: self.holder.clone(),
            wins: Vec::new(),
        }
    }

    pub fn from_record(r: &VmRecord) -> State {
        State {
            generation: r.generation,
            holder: r.holder.clone(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of integers and strings serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<State, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The value of a win key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinValue {
    pub generation: u64,
    pub claimant: String,
    pub at_unix_ms: u64,
}

impl WinValue {
    pub fn from_win(w: &Win) -> WinValue {
        WinValue {
            generation: w.generation,
            claimant: w.claimant.clone(),
            at_unix_ms: w.at_unix_ms,
        }
    }

    pub fn to_win(&self) -> Win {
        Win {
            generation: self.generation,
            claimant: self.claimant.clone(),
            at_unix_ms: self.at_unix_ms,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a struct of integers and strings serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<WinValue, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_and_garbage_is_an_error() {
        let s = State {
            generation: 3,
            holder: Some("backup".into()),
        };
        assert_eq!(State::decode(&s.encode()).unwrap(), s);
        let w = WinValue {
            generation: 3,
            claimant: "backup".into(),
            at_unix_ms: 1,
        };
        assert_eq!(WinValue::decode(&w.encode()).unwrap(), w);
        assert!(State::decode(b"\xff{").is_err());
    }
}
