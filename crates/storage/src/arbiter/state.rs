//! The arbiter's rules as a pure state machine, and the byte format of the
//! state file. Per VM the state is the highest generation ever seen, the
//! claimant holding it (if any) and the append-only history of wins. The
//! rule: the first claimant for generation G wins; the same claimant asking
//! again is told it won (idempotent, not recorded twice); anyone else asking
//! for G loses; a claim below the highest generation loses; a claim above it
//! starts a new round and wins. ADVANCE raises the generation without a
//! holder, fencing out every older generation. Nothing here does I/O, so the
//! rules are tested directly and the durable store only persists results.

use std::collections::BTreeMap;

use super::wire::{Dec, Enc, Outcome, VmStatus, Win, MAX_NAME};

/// State file magic, `"FTVMARB\0"`.
pub const STATE_MAGIC: [u8; 8] = *b"FTVMARB\0";
/// State file format version.
pub const STATE_VERSION: u16 = 1;

/// Everything the arbiter knows about one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmRecord {
    pub generation: u64,
    pub holder: Option<String>,
    pub wins: Vec<Win>,
}

/// The whole arbiter state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArbiterState {
    vms: BTreeMap<String, VmRecord>,
}

impl VmRecord {
    /// Applies a test-and-set to this VM's record. Returns the outcome and
    /// whether the record changed (only a change needs to be made durable
    /// before answering). The built-in store and the etcd arbiter both apply
    /// exactly this rule.
    pub fn test_and_set(
        &mut self,
        generation: u64,
        claimant: &str,
        now_unix_ms: u64,
    ) -> (Outcome, bool) {
        if generation < self.generation {
            return (
                Outcome::Lost {
                    holder: self.holder.clone().unwrap_or_default(),
                    generation: self.generation,
                },
                false,
            );
        }
        if generation == self.generation {
            match &self.holder {
                Some(h) if h == claimant => return (Outcome::Won { generation }, false),
                Some(h) => {
                    return (
                        Outcome::Lost {
                            holder: h.clone(),
                            generation,
                        },
                        false,
                    )
                }
                None => {}
            }
        }
        self.generation = generation;
        self.holder = Some(claimant.to_string());
        self.wins.push(Win {
            generation,
            claimant: claimant.to_string(),
            at_unix_ms: now_unix_ms,
        });
        (Outcome::Won { generation }, true)
    }

    /// Raises the generation to `generation` with no holder. Succeeds if
    /// `generation` is above the current one, or equal to it while nobody
    /// holds it (a retried ADVANCE; `Ok(false)`, nothing changed). `Err`
    /// carries the current generation.
    pub fn advance(&mut self, generation: u64) -> Result<bool, u64> {
        if generation == self.generation && self.holder.is_none() && generation > 0 {
            return Ok(false);
        }
        if generation <= self.generation {
            return Err(self.generation);
        }
        self.generation = generation;
        self.holder = None;
        Ok(true)
    }
}

impl ArbiterState {
    /// Applies a test-and-set ([`VmRecord::test_and_set`]) to `vm`.
    pub fn test_and_set(
        &mut self,
        vm: &str,
        generation: u64,
        claimant: &str,
        now_unix_ms: u64,
    ) -> (Outcome, bool) {
        let mut rec = self.vms.get(vm).cloned().unwrap_or_default();
        let (outcome, changed) = rec.test_and_set(generation, claimant, now_unix_ms);
        if changed {
            self.vms.insert(vm.to_string(), rec);
        }
        (outcome, changed)
    }

    /// Raises `vm`'s generation ([`VmRecord::advance`]).
    pub fn advance(&mut self, vm: &str, generation: u64) -> Result<bool, u64> {
        let mut rec = self.vms.get(vm).cloned().unwrap_or_default();
        let changed = rec.advance(generation)?;
        if changed {
            self.vms.insert(vm.to_string(), rec);
        }
        Ok(changed)
    }

    /// What is known about a VM (generation 0, no holder, for an unknown VM).
    pub fn status(&self, vm: &str) -> VmStatus {
        match self.vms.get(vm) {
            Some(r) => VmStatus {
                generation: r.generation,
                holder: r.holder.clone(),
                history_count: r.wins.len() as u64,
            },
            None => VmStatus {
                generation: 0,
                holder: None,
                history_count: 0,
            },
        }
    }

    /// The wins recorded for a VM, oldest first.
    pub fn history(&self, vm: &str) -> Vec<Win> {
        self.vms.get(vm).map(|r| r.wins.clone()).unwrap_or_default()
    }

    /// Number of VMs known.
    pub fn vm_count(&self) -> usize {
        self.vms.len()
    }

    /// The state file bytes (see docs/storage.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Enc::default();
        body.u32(self.vms.len() as u32);
        for (vm, rec) in &self.vms {
            body.str(vm).u64(rec.generation);
            match &rec.holder {
                Some(h) => body.u8(1).str(h),
                None => body.u8(0).str(""),
            };
            body.u32(rec.wins.len() as u32);
            for w in &rec.wins {
                body.u64(w.generation).u64(w.at_unix_ms).str(&w.claimant);
            }
        }
        let mut f = Vec::with_capacity(20 + body.0.len());
        f.extend_from_slice(&STATE_MAGIC);
        f.extend_from_slice(&STATE_VERSION.to_le_bytes());
        f.extend_from_slice(&0u16.to_le_bytes());
        f.extend_from_slice(&(body.0.len() as u32).to_le_bytes());
        f.extend_from_slice(&body.0);
        let crc = crc32c::crc32c(&f);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    /// Parses state file bytes; `Err` says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<ArbiterState, String> {
        if bytes.len() < 20 {
            return Err(format!(
                "{} bytes is shorter than the 20-byte minimum",
                bytes.len()
            ));
        }
        if bytes[0..8] != STATE_MAGIC {
            return Err("bad magic (not an ftvm arbiter state file)".into());
        }
        let version = u16::from_le_bytes([bytes[8], bytes[9]]);
        if version != STATE_VERSION {
            return Err(format!("unsupported state file version {version}"));
        }
        let reserved = u16::from_le_bytes([bytes[10], bytes[11]]);
        if reserved != 0 {
            return Err(format!("reserved field is 0x{reserved:04x}, must be 0"));
        }
        let len = u32::from_le_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]) as usize;
        if bytes.len() != 16 + len + 4 {
            return Err(format!(
                "length field says {len} body bytes but the file holds {} (truncated or extended)",
                bytes.len().saturating_sub(20)
            ));
        }
        let stored = u32::from_le_bytes([
            bytes[16 + len],
            bytes[17 + len],
            bytes[18 + len],
            bytes[19 + len],
        ]);
        let computed = crc32c::crc32c(&bytes[..16 + len]);
        if stored != computed {
            return Err(format!(
                "CRC mismatch (file says 0x{stored:08x}, content gives 0x{computed:08x})"
            ));
        }
        let mut d = Dec::new(&bytes[16..16 + len]);
        let n = d.u32("VM count")? as usize;
        let mut vms = BTreeMap::new();
        for _ in 0..n {
            let vm = d.str("VM name", MAX_NAME)?;
            let generation = d.u64("generation")?;
            let has = d.u8("holder flag")?;
            let holder = d.str("holder", MAX_NAME)?;
            let holder = match has {
                0 if holder.is_empty() => None,
                1 => Some(holder),
                _ => return Err(format!("VM {vm:?}: bad holder flag {has}")),
            };
            let count = d.u32("win count")? as usize;
            if count > d.remaining() / 18 {
                return Err(format!(
                    "VM {vm:?}: win count {count} does not fit the file"
                ));
            }
            let mut wins = Vec::with_capacity(count);
            for _ in 0..count {
                wins.push(Win {
                    generation: d.u64("win generation")?,
                    at_unix_ms: d.u64("win time")?,
                    claimant: d.str("claimant", MAX_NAME)?,
                });
            }
            if vms
                .insert(
                    vm.clone(),
                    VmRecord {
                        generation,
                        holder,
                        wins,
                    },
                )
                .is_some()
            {
                return Err(format!("VM {vm:?} appears twice"));
            }
        }
        d.finish()?;
        Ok(ArbiterState { vms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn won(g: u64) -> Outcome {
        Outcome::Won { generation: g }
    }
    fn lost(h: &str, g: u64) -> Outcome {
        Outcome::Lost {
            holder: h.into(),
            generation: g,
        }
    }

    #[test]
    fn first_claimant_wins_and_repeats_are_idempotent() {
        let mut s = ArbiterState::default();
        assert_eq!(s.test_and_set("vm", 1, "backup", 10), (won(1), true));
        assert_eq!(
            s.test_and_set("vm", 1, "primary", 11),
            (lost("backup", 1), false)
        );
        assert_eq!(s.test_and_set("vm", 1, "backup", 12), (won(1), false));
        assert_eq!(s.history("vm").len(), 1);
        assert_eq!(
            s.status("vm"),
            VmStatus {
                generation: 1,
                holder: Some("backup".into()),
                history_count: 1
            }
        );
    }

    #[test]
    fn stale_generations_lose_and_newer_ones_start_a_round() {
        let mut s = ArbiterState::default();
        assert!(s.test_and_set("vm", 5, "a", 0).0.is_won());
        assert_eq!(s.test_and_set("vm", 4, "a", 0), (lost("a", 5), false));
        assert_eq!(s.test_and_set("vm", 4, "b", 0), (lost("a", 5), false));
        assert_eq!(s.test_and_set("vm", 6, "b", 0), (won(6), true));
        assert_eq!(s.test_and_set("vm", 5, "a", 0), (lost("b", 6), false));
        assert_eq!(s.history("vm").len(), 2);
        // VMs are independent.
        assert!(s.test_and_set("other", 1, "a", 0).0.is_won());
    }

    #[test]
    fn advance_fences_out_older_generations() {
        let mut s = ArbiterState::default();
        assert!(s.test_and_set("vm", 1, "primary", 0).0.is_won());
        assert_eq!(s.advance("vm", 1), Err(1));
        assert_eq!(s.advance("vm", 2), Ok(true));
        assert_eq!(
            s.advance("vm", 2),
            Ok(false),
            "a retried advance is harmless"
        );
        assert_eq!(s.status("vm").holder, None);
        assert_eq!(s.test_and_set("vm", 1, "primary", 0), (lost("", 2), false));
        assert!(s.test_and_set("vm", 2, "backup2", 0).0.is_won());
        assert_eq!(s.advance("vm", 2), Err(2));
        assert_eq!(s.advance("new", 0), Err(0));
    }

    #[test]
    fn queries_do_not_create_records() {
        let mut s = ArbiterState::default();
        assert!(s.test_and_set("vm", 0, "a", 0).0.is_won());
        assert_eq!(s.vm_count(), 1);
        assert_eq!(s.status("nobody").generation, 0);
        assert_eq!(s.vm_count(), 1);
    }

    #[test]
    fn state_file_round_trips_and_detects_damage() {
        let mut s = ArbiterState::default();
        s.test_and_set("vm1", 1, "a", 100);
        s.test_and_set("vm1", 2, "b", 200);
        s.advance("vm2", 7).unwrap();
        let bytes = s.encode();
        assert_eq!(ArbiterState::decode(&bytes).unwrap(), s);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(ArbiterState::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(ArbiterState::decode(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ArbiterState::decode(&longer).is_err());
        assert!(ArbiterState::decode(b"").is_err());
        assert_eq!(
            ArbiterState::decode(&ArbiterState::default().encode()).unwrap(),
            ArbiterState::default()
        );
    }
}
