//! Re-protection: a new backup joins a running primary. The joiner dials
//! the primary's `--join-listen` address and sends a `JoinRequest`; the
//! primary (the *donor*, which must be running without a backup) checks
//! the VM and machine identity and copies its RAM while the guest keeps
//! running: a full pass, then the pages written meanwhile (the machine's
//! dirty-page log), round after round, until what is left is small. Then it
//! pauses the guest for one step of its loop: the last dirty pages, the
//! caches flushed (so both copies continue from identical state), the
//! machine state without RAM and the new pair's generation — advanced at
//! the arbiter first, so that no process of the old pair can ever win
//! again — go out as a `JoinState`, and the same connection becomes the
//! logging connection of the new pair, starting at that instruction. A join
//! that fails before that leaves the donor exactly as it was (running alone,
//! generation unchanged); one that fails after it is a backup failure like
//! any other. This module holds the donor's copy state and the joiner's
//! receiving side; `primary.rs` and `backup.rs` call them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ftvm_ft::wire::{JOIN_PAGE, MAX_JOIN_PAGES};
use ftvm_ft::{Frame, GoodbyeReason, Message};
use ftvm_machine::Machine;
use ftvm_machine::Slot;

use super::link::Link;
use super::secure::FtTls;
use crate::devices::DiskBackend;
use crate::events::{FtEvent, LinkStream};
use crate::reactor::Reactor;

/// Stop pre-copying when a round has at most this many dirty pages left
/// (8 MiB): they are sent during the pause.
const FINAL_PAGES: usize = 2048;
/// A joiner gives up when the donor sends nothing for this long.
const JOIN_SILENCE: Duration = Duration::from_secs(30);
/// At most this many pre-copy rounds before pausing anyway (a guest that
/// writes faster than the link carries never converges).
const MAX_ROUNDS: u32 = 8;
/// Bytes queued on the joiner's connection beyond which the donor stops
/// copying for this turn (the guest runs on meanwhile).
const MAX_QUEUED: usize = 32 << 20;
/// Bytes copied per turn of the donor's loop at most: the copy runs on the
/// machine's thread, so each turn's share must stay short (a few ms) for
/// the guest to keep serving while it runs.
const MAX_PER_TURN: u64 = 4 << 20;

/// Bytes per disk chunk copied (and tracked as written) during a join.
const DISK_CHUNK: u64 = 1 << 20;

/// One non-shared disk being copied to the joiner: a full pass, then the
/// chunks the guest wrote meanwhile.
struct DiskCopy {
    slot: Slot,
    file: File,
    size: u64,
    /// Next offset of the full pass.
    cursor: u64,
    /// Chunks written since the pass covered them.
    dirty: BTreeSet<u64>,
}

/// Where a donation stands.
enum Stage {
    /// Connected; waiting for the joiner's JoinRequest.
    Request,
    /// Copying RAM: the pages of this round still to send.
    Copy { left: Vec<u32>, round: u32 },
}

/// The donor's side of one join.
pub struct Donation {
    pub conn: u64,
    pub link: Link,
    stage: Stage,
    /// Where the joiner accepts reconnections of the logging connection.
    pub joiner_listen: Option<SocketAddr>,
    pub started: Instant,
    pub bytes: u64,
    pub pages_sent: u64,
    /// Non-shared disks being copied.
    disks: Vec<DiskCopy>,
}

/// What the donor's loop must do after a step of the donation.
pub enum DonorStep {
    /// Nothing more this turn.
    Wait,
    /// Pre-copy has converged: pause and finish (`finish`).
    Finish,
}

impl Donation {
    pub fn new(conn: u64, link: Link) -> Donation {
        Donation {
            conn,
            link,
            stage: Stage::Request,
            joiner_listen: None,
            started: Instant::now(),
            bytes: 0,
            pages_sent: 0,
            disks: Vec::new(),
        }
    }

    /// The guest wrote `len` bytes at `offset` of the disk in `slot`
    /// (called as the write goes to the disk): copied again before the pause.
    pub fn disk_written(&mut self, slot: Slot, offset: u64, len: u64) {
        for d in self.disks.iter_mut().filter(|d| d.slot == slot) {
            let first = offset / DISK_CHUNK;
            let last = (offset + len.max(1) - 1) / DISK_CHUNK;
            for c in first..=last {
                if c * DISK_CHUNK < d.cursor {
                    d.dirty.insert(c);
                }
            }
        }
    }

    /// Sends one chunk of a disk; false if there was nothing to send.
    fn send_disk_chunk(&mut self, dirty_only: bool) -> std::result::Result<bool, String> {
        for d in self.disks.iter_mut() {
            let off = if !dirty_only && d.cursor < d.size {
                let off = d.cursor;
                d.cursor = (off + DISK_CHUNK).min(d.size);
                off
            } else if let Some(c) = d.dirty.pop_first() {
                c * DISK_CHUNK
            } else {
                continue;
            };
            let len = DISK_CHUNK.min(d.size - off) as usize;
            let mut data = vec![0u8; len];
            d.file
                .read_exact_at(&mut data, off)
                .map_err(|e| format!("cannot read the disk in slot {} to copy it: {e}", d.slot))?;
            self.bytes += len as u64;
            self.link.send(&Frame {
                generation: 0,
                message: Message::JoinDisk {
                    slot: d.slot,
                    offset: off,
                    data,
                },
            });
            return Ok(true);
        }
        Ok(false)
    }

    fn disks_copied(&self) -> bool {
        self.disks.iter().all(|d| d.cursor >= d.size)
    }

    /// Refuses the join with `why` (sent to the joiner) and closes.
    pub fn refuse(mut self, why: &str) {
        let detail: String = why.chars().take(200).collect();
        self.link.send(&Frame {
            generation: 0,
            message: Message::Goodbye {
                reason: GoodbyeReason::Error,
                detail,
            },
        });
        // The guest runs on meanwhile: no waiting for the joiner to read it.
        self.link.finish_in_background(Duration::from_millis(500));
    }

    /// The joiner's request. `Err` carries why it is refused.
    pub fn on_request(
        &mut self,
        frame: Frame,
        vm: &str,
        identity: &[u8; 32],
        machine: &mut Machine,
        local_disks: &[(Slot, PathBuf)],
    ) -> std::result::Result<(), String> {
        let Message::JoinRequest {
            vm: their_vm,
            machine_hash,
            listen,
        } = frame.message
        else {
            return Err(format!(
                "expected a JoinRequest, got {}",
                frame.message.message_type()
            ));
        };
        if !matches!(self.stage, Stage::Request) {
            return Err("a second JoinRequest".into());
        }
        if their_vm != vm {
            return Err(format!("this is VM {vm:?}, not {their_vm:?}"));
        }
        if &machine_hash != identity {
            return Err(
                "the joiner's machine differs from this one (memory, devices or images)".into(),
            );
        }
        self.joiner_listen = listen.parse().ok();
        for (slot, path) in local_disks {
            let file = File::open(path)
                .map_err(|e| format!("cannot open {} to copy it: {e}", path.display()))?;
            let size = file
                .metadata()
                .map_err(|e| format!("cannot size {}: {e}", path.display()))?
                .len();
            self.disks.push(DiskCopy {
                slot: *slot,
                file,
                size,
                cursor: 0,
                dirty: BTreeSet::new(),
            });
        }
        machine.start_dirty_log();
        let pages = (machine.ram.size() / JOIN_PAGE as u64) as u32;
        self.stage = Stage::Copy {
            left: (0..pages).rev().collect(),
            round: 0,
        };
        Ok(())
    }

    /// Sends what the connection can take of the current round; starts the
    /// next round when one is done. Returns `Finish` when it is time to
    /// pause.
    pub fn pump(&mut self, machine: &mut Machine) -> std::result::Result<DonorStep, String> {
        if !matches!(self.stage, Stage::Copy { .. }) {
            return Ok(DonorStep::Wait);
        }
        let budget_end = self.bytes + MAX_PER_TURN;
        // The disks' full pass first, as far as the connection takes it.
        while !self.disks_copied() {
            if self.link.queued_bytes() >= MAX_QUEUED || self.bytes >= budget_end {
                return Ok(DonorStep::Wait);
            }
            self.send_disk_chunk(false)?;
        }
        loop {
            let Stage::Copy { left, round } = &mut self.stage else {
                return Ok(DonorStep::Wait);
            };
            if left.is_empty() {
                let dirty = machine.take_dirty_log();
                let converged = dirty.len() <= FINAL_PAGES || *round + 1 >= MAX_ROUNDS;
                *round += 1;
                *left = dirty.into_iter().rev().collect();
                // Disk chunks written meanwhile go with each round.
                while self.send_disk_chunk(true)? {}
                if converged {
                    // The rest goes during the pause.
                    return Ok(DonorStep::Finish);
                }
                continue;
            }
            if self.link.queued_bytes() >= MAX_QUEUED || self.bytes >= budget_end {
                return Ok(DonorStep::Wait);
            }
            let n = left.len().min(MAX_JOIN_PAGES);
            let at = left.len() - n;
            let mut pages: Vec<u32> = left.split_off(at);
            pages.reverse();
            send_pages(
                &mut self.link,
                machine,
                pages,
                &mut self.bytes,
                &mut self.pages_sent,
            );
        }
    }

    /// The pause: the last pages, flushed caches, the state without RAM,
    /// sent under the new generation. The guest must not run during it.
    /// Returns the step at which the new pair starts.
    pub fn finish(
        &mut self,
        machine: &mut Machine,
        generation: u64,
    ) -> std::result::Result<u64, String> {
        // Every write has completed (the caller waits for that): the disks'
        // last written chunks are final.
        while self.send_disk_chunk(true)? {}
        let mut last = match std::mem::replace(&mut self.stage, Stage::Request) {
            Stage::Copy { left, .. } => left,
            Stage::Request => Vec::new(),
        };
        last.extend(machine.take_dirty_log());
        last.sort_unstable();
        last.dedup();
        machine.stop_dirty_log();
        for chunk in last.chunks(MAX_JOIN_PAGES) {
            send_pages(
                &mut self.link,
                machine,
                chunk.to_vec(),
                &mut self.bytes,
                &mut self.pages_sent,
            );
        }
        machine.flush_caches();
        let state = machine.save_state_without_ram();
        let icount = machine.icount();
        self.bytes += state.len() as u64;
        self.link.send(&Frame {
            generation,
            message: Message::JoinState { icount, state },
        });
        Ok(icount)
    }

    /// Stops tracking dirty pages after a join that failed before the pause.
    pub fn abandon(self, machine: &mut Machine) {
        machine.stop_dirty_log();
        let mut link = self.link;
        link.close();
    }
}

fn send_pages(
    link: &mut Link,
    machine: &Machine,
    pages: Vec<u32>,
    bytes: &mut u64,
    sent: &mut u64,
) {
    let ram = machine.ram.as_bytes();
    let mut data = Vec::with_capacity(pages.len() * JOIN_PAGE);
    for &p in &pages {
        let start = p as usize * JOIN_PAGE;
        data.extend_from_slice(&ram[start..start + JOIN_PAGE]);
    }
    *bytes += data.len() as u64;
    *sent += pages.len() as u64;
    link.send(&Frame {
        generation: 0,
        message: Message::JoinPages {
            ram_size: machine.ram.size(),
            pages,
            data,
        },
    });
}

/// What a joiner received: the machine at the join step, the new pair's
/// generation, and the connection that continues as the logging link.
pub struct Joined {
    pub machine: Machine,
    pub icount: u64,
    pub generation: u64,
    pub link: Link,
    /// What arrived on the link after the state (the new pair's Hello,
    /// perhaps its first entries), for the follower to handle first.
    pub pending: Vec<FtEvent>,
}

/// The joiner's side: dials `donor`, asks to join and receives the state.
#[allow(clippy::too_many_arguments)]
pub fn receive(
    donor: SocketAddr,
    vm: &str,
    identity: [u8; 32],
    listen: SocketAddr,
    link: Link,
    reactor: &mut Reactor,
    local: Option<&BTreeMap<Slot, Box<dyn DiskBackend>>>,
    tls: Option<&FtTls>,
) -> Result<Joined> {
    let mut link = link;
    let stream = TcpStream::connect_timeout(&donor, Duration::from_secs(5))
        .with_context(|| format!("cannot reach the primary's join address {donor}"))?;
    // No guest runs yet: the handshake may block this thread.
    let stream = match tls {
        None => LinkStream::Plain(stream),
        Some(tls) => tls
            .connect(stream)
            .map_err(|why| anyhow::anyhow!("refused the primary at {donor}: {why}"))?,
    };
    let conn = link.next_conn_id();
    link.attach(conn, stream)?;
    link.send(&Frame {
        generation: 0,
        message: Message::JoinRequest {
            vm: vm.to_string(),
            machine_hash: identity,
            listen: listen.to_string(),
        },
    });
    let started = Instant::now();
    // Pages land directly in the machine's RAM, so that nothing is copied
    // once the state arrives (the new pair's first outputs wait for us).
    let mut ram: Option<ftvm_cpu::Ram> = None;
    let mut received = 0u64;
    let mut last_report = Instant::now();
    let mut heard = Instant::now();
    let mut ready = Vec::new();
    let mut events = std::collections::VecDeque::new();
    loop {
        let Some(ev) = events.pop_front() else {
            if heard.elapsed() >= JOIN_SILENCE {
                bail!("the primary stopped sending its state (30 s of silence)");
            }
            ready.clear();
            reactor
                .poll(JOIN_SILENCE - heard.elapsed(), &mut ready)
                .context("the event loop failed")?;
            // The only connection on this loop so far: read it whatever
            // woke the loop.
            link.ready();
            let mut got = Vec::new();
            link.collect(&mut got);
            if !got.is_empty() {
                heard = Instant::now();
            }
            events.extend(got);
            continue;
        };
        match ev {
            FtEvent::Frame { conn: c, frame } if c == conn => match frame.message {
                Message::JoinPages {
                    ram_size,
                    pages,
                    data,
                } => {
                    let r = match &mut ram {
                        Some(r) if r.size() == ram_size => r,
                        Some(_) => bail!("the primary changed the RAM size mid-join"),
                        None => {
                            if ram_size == 0
                                || ram_size > (1 << 36)
                                || ram_size % (JOIN_PAGE as u64) != 0
                            {
                                bail!("the primary announced {ram_size} bytes of RAM");
                            }
                            eprintln!(
                                "ftvm: backup: joining: receiving {} MiB of guest RAM from {donor}",
                                ram_size >> 20
                            );
                            ram.insert(ftvm_cpu::Ram::new(ftvm_machine::layout::RAM_BASE, ram_size))
                        }
                    };
                    let bytes = r.as_bytes_mut();
                    for (i, &p) in pages.iter().enumerate() {
                        let dst = p as usize * JOIN_PAGE;
                        bytes[dst..dst + JOIN_PAGE]
                            .copy_from_slice(&data[i * JOIN_PAGE..(i + 1) * JOIN_PAGE]);
                    }
                    received += data.len() as u64;
                    if last_report.elapsed() >= Duration::from_secs(1) {
                        last_report = Instant::now();
                        eprintln!("ftvm: backup: joining: {} MiB received", received >> 20);
                    }
                }
                Message::JoinDisk { slot, offset, data } => {
                    let Some(disk) = local.and_then(|l| l.get(&slot)) else {
                        bail!("the primary sends the contents of disk {slot}, but this backup has no own copy of it (both sides need --local-disks and the same drives)");
                    };
                    disk.write_at(offset, &data, false)
                        .with_context(|| format!("cannot write the copy of disk {slot}"))?;
                    received += data.len() as u64;
                }
                Message::JoinState { icount, state } => {
                    for (slot, disk) in local.into_iter().flatten() {
                        disk.flush()
                            .with_context(|| format!("cannot flush the copy of disk {slot}"))?;
                    }
                    let Some(ram) = ram.take() else {
                        bail!("the primary sent its state before any RAM");
                    };
                    let mut machine = Machine::from_state_and_filled_ram(&state, ram)
                        .context("the primary's state is unusable")?;
                    // So that this side's first digest hashes only what
                    // the guest writes from now on (see `prime_digest`).
                    let primed = Instant::now();
                    machine.prime_digest();
                    let primed_ms = primed.elapsed().as_millis();
                    if machine.icount() != icount {
                        bail!(
                            "the primary's state is at step {} but it said {icount}",
                            machine.icount()
                        );
                    }
                    eprintln!(
                        "ftvm: backup: joined at step {icount} (generation {}): {} MiB in {:.2} s (digest cache primed in {primed_ms} ms)",
                        frame.generation,
                        received >> 20,
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(Joined {
                        machine,
                        icount,
                        generation: frame.generation,
                        link,
                        pending: events.into_iter().collect(),
                    });
                }
                Message::Goodbye { detail, .. } => {
                    bail!("the primary refused the join: {detail}")
                }
                other => bail!(
                    "unexpected {} from the primary during the join",
                    other.message_type()
                ),
            },
            FtEvent::Closed { conn: c, error } if c == conn => {
                bail!(
                    "the primary closed the connection during the join{}",
                    error.map(|e| format!(": {e}")).unwrap_or_default()
                )
            }
            _ => {}
        }
    }
}
