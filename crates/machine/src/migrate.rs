//! Machine-level primitives for live migration by iterative pre-copy.
//!
//! The sender starts a dirty-page log, copies all of RAM while the guest
//! runs, then repeatedly copies the pages the log reports as written since
//! the previous round. Finally, with the guest stopped between runs, it
//! copies the last dirty pages and [`Machine::save_state_without_ram`]; the
//! receiver builds the machine with [`Machine::from_state_and_ram`].
//!
//! RAM keeps a single dirty bitmap ([`ftvm_cpu::Ram::take_dirty`]) that
//! both the digest and the migration log need. Whoever takes it goes
//! through [`Machine::collect_dirty`], which ORs it into every consumer's
//! pending set, so neither consumer ever loses a page to the other.

use ftvm_cpu::Ram;

use crate::Machine;

/// Pages written and not yet seen, per consumer of the RAM dirty bitmap.
/// One bit per 4 KiB page from the RAM base.
#[derive(Clone, Debug, Default)]
pub(crate) struct DirtyPages {
    /// Pending for the next [`Machine::digest`].
    pub digest: Vec<u64>,
    /// Pending for the next [`Machine::take_dirty_log`]; `None` when no
    /// migration log is running.
    pub log: Option<Vec<u64>>,
}

fn or_into(acc: &mut Vec<u64>, bits: &[u64]) {
    if acc.len() < bits.len() {
        acc.resize(bits.len(), 0);
    }
    for (a, b) in acc.iter_mut().zip(bits) {
        *a |= b;
    }
}

fn words_for(ram: &Ram) -> usize {
    ram.size().div_ceil(4096).div_ceil(64) as usize
}

impl Machine {
    /// Takes RAM's dirty bitmap, drops the hart's store translations (so the
    /// next store to any page marks it again; stores through the fast TLB
    /// path do not mark pages themselves) and ORs the bitmap into the
    /// digest's pending set and, if one runs, the migration log.
    ///
    /// The only place that may take the RAM bitmap.
    pub(crate) fn collect_dirty(&mut self) {
        let bits = self.ram.take_dirty();
        self.hart.flush_store_tlb();
        or_into(&mut self.dirty.digest, &bits);
        if let Some(log) = &mut self.dirty.log {
            or_into(log, &bits);
        }
    }

    /// Starts a dirty-page log for live migration: from now on every page
    /// written is recorded (in addition to, and without disturbing, the
    /// digest's own dirty tracking). Writes before this call are not in the
    /// log (the sender copies all of RAM after starting it). Restarts the
    /// log empty if one is already running.
    pub fn start_dirty_log(&mut self) {
        // Earlier writes go to the digest only; the store TLB is flushed, so
        // every later store marks its page.
        self.collect_dirty();
        self.dirty.log = Some(vec![0; words_for(&self.ram)]);
    }

    /// Page indices (4 KiB pages from RAM base) written since the previous
    /// call or since [`Machine::start_dirty_log`], ascending. Exact: includes
    /// guest stores through the fast TLB path, AMOs, page-table A/D updates,
    /// device DMA and [`ftvm_cpu::Ram::write_bytes`] (but not writes through
    /// [`ftvm_cpu::Ram::as_bytes_mut`], which nothing tracks). Empty if no
    /// log is running.
    pub fn take_dirty_log(&mut self) -> Vec<u32> {
        if self.dirty.log.is_none() {
            return Vec::new();
        }
        self.collect_dirty();
        let fresh = vec![0; words_for(&self.ram)];
        let bits = self.dirty.log.replace(fresh).unwrap_or_default();
        let pages = self.ram.size().div_ceil(4096) as usize;
        let mut out = Vec::new();
        for (i, &w) in bits.iter().enumerate() {
            let mut w = w;
            while w != 0 {
                let p = i * 64 + w.trailing_zeros() as usize;
                if p < pages {
                    out.push(p as u32);
                }
                w &= w - 1;
            }
        }
        out
    }

    /// Stops the dirty-page log; pages it had not reported are forgotten
    /// (the digest still sees them).
    pub fn stop_dirty_log(&mut self) {
        self.dirty.log = None;
    }

    /// Whether a dirty-page log is running.
    pub fn dirty_log_running(&self) -> bool {
        self.dirty.log.is_some()
    }

    /// Drops every cached translation (all TLBs) and every decoded
    /// instruction page, so that this machine continues exactly as a copy
    /// freshly built by [`Machine::from_state_and_ram`] would. Dirty tracking
    /// and the digest's cached RAM hashes are kept (they never affect
    /// execution).
    pub fn flush_caches(&mut self) {
        self.hart.flush_caches();
    }
}
