//! The simulated logging network. A connection behaves like TCP: in each
//! direction bytes arrive in the order sent (split into chunks of random
//! sizes, with random but monotone delays) or not at all once the connection
//! is reset; a close arrives after the bytes sent before it. The failure
//! modes are resets, partitions (nothing crosses while one lasts, so the
//! stream stalls and resumes, and no connection can be opened), delay spikes
//! and corruption of bytes in flight. Racing connection attempts (a dial
//! duplicated, a stale process connecting) are opened by the world above.

use std::collections::{BTreeMap, VecDeque};

use crate::rng::Rng;

pub type ConnId = u64;

/// An end of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The primary's host.
    P,
    /// The backup's host.
    B,
}

impl End {
    pub fn other(self) -> End {
        match self {
            End::P => End::B,
            End::B => End::P,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Delivery {
    /// The connection is established at this end.
    Open,
    Bytes(Vec<u8>),
    /// The peer closed or the connection was reset.
    Fin,
}

#[derive(Debug, Default)]
struct Pipe {
    queue: VecDeque<(u64, Delivery)>,
    last_at: u64,
    /// This end has closed: nothing more is delivered to it.
    closed: bool,
}

#[derive(Debug, Default)]
struct Conn {
    to_p: Pipe,
    to_b: Pipe,
}

impl Conn {
    fn pipe(&mut self, to: End) -> &mut Pipe {
        match to {
            End::P => &mut self.to_p,
            End::B => &mut self.to_b,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct NetParams {
    pub min_delay: u64,
    pub max_delay: u64,
    /// Largest chunk a send is split into.
    pub max_chunk: usize,
}

#[derive(Debug)]
pub struct Net {
    pub params: NetParams,
    conns: BTreeMap<ConnId, Conn>,
    next_id: ConnId,
    down_until: u64,
    spike_until: u64,
    spike_extra: u64,
    rng: Rng,
}

impl Net {
    pub fn new(params: NetParams, rng: Rng) -> Self {
        Net {
            params,
            conns: BTreeMap::new(),
            next_id: 1,
            down_until: 0,
            spike_until: 0,
            spike_extra: 0,
            rng,
        }
    }

    pub fn partitioned(&self, now: u64) -> bool {
        now < self.down_until
    }

    pub fn partition(&mut self, now: u64, dur: u64) {
        self.down_until = self.down_until.max(now + dur);
    }

    pub fn spike(&mut self, now: u64, dur: u64, extra: u64) {
        self.spike_until = now + dur;
        self.spike_extra = extra;
    }

    /// The largest one-way delay a byte sent at `now` can see, partitions
    /// aside.
    pub fn max_delay(&self) -> u64 {
        self.params.max_delay + self.spike_extra
    }

    fn delay(&mut self, now: u64) -> u64 {
        let mut d = self.rng.range(self.params.min_delay, self.params.max_delay);
        if now < self.spike_until {
            d += self.spike_extra;
        }
        d
    }

    /// Opens a connection dialled from `from`; `None` if the network is
    /// partitioned. The dialled end learns of it first, then the dialler.
    pub fn dial(&mut self, now: u64, from: End) -> Option<ConnId> {
        if self.partitioned(now) {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let d1 = self.delay(now);
        let d2 = self.delay(now);
        let mut c = Conn::default();
        push(c.pipe(from.other()), now + d1, Delivery::Open);
        push(c.pipe(from), now + d1 + d2, Delivery::Open);
        self.conns.insert(id, c);
        Some(id)
    }

    /// Sends bytes from `from` to the other end.
    pub fn send(&mut self, now: u64, id: ConnId, from: End, bytes: &[u8]) {
        let max_chunk = self.params.max_chunk.max(1);
        let d = self.delay(now);
        let mut chunks = Vec::new();
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = (self.rng.range(1, max_chunk as u64) as usize).min(rest.len());
            chunks.push(rest[..n].to_vec());
            rest = &rest[n..];
        }
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.pipe(from).closed {
            return;
        }
        let pipe = c.pipe(from.other());
        for chunk in chunks {
            push(pipe, now + d, Delivery::Bytes(chunk));
        }
    }

    /// `from` closes its end: the other end sees Fin after the bytes already
    /// sent; nothing more is delivered to `from`.
    pub fn close(&mut self, now: u64, id: ConnId, from: End) {
        let d = self.delay(now);
        let Some(c) = self.conns.get_mut(&id) else {
            return;
        };
        if c.pipe(from).closed {
            return;
        }
        c.pipe(from).closed = true;
        c.pipe(from).queue.clear();
        push(c.pipe(from.other()), now + d, Delivery::Fin);
    }

    /// Resets every connection: bytes in flight are lost, both ends see Fin.
    pub fn reset_all(&mut self, now: u64) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            let d1 = self.delay(now);
            let d2 = self.delay(now);
            let c = self.conns.get_mut(&id).expect("listed");
            for (end, d) in [(End::P, d1), (End::B, d2)] {
                let pipe = c.pipe(end);
                if !pipe.closed {
                    pipe.queue.clear();
                    pipe.last_at = 0;
                    push(pipe, now + d, Delivery::Fin);
                }
            }
        }
    }

    /// Flips one bit of some byte in flight, if any.
    pub fn corrupt(&mut self) -> bool {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        if ids.is_empty() {
            return false;
        }
        let id = ids[self.rng.below(ids.len() as u64) as usize];
        let to = if self.rng.chance(0.5) { End::P } else { End::B };
        let bit = self.rng.below(8) as u8;
        let pick = self.rng.next_u64();
        let c = self.conns.get_mut(&id).expect("listed");
        let chunks: Vec<&mut Vec<u8>> = c
            .pipe(to)
            .queue
            .iter_mut()
            .filter_map(|(_, d)| match d {
                Delivery::Bytes(b) if !b.is_empty() => Some(b),
                _ => None,
            })
            .collect();
        if chunks.is_empty() {
            return false;
        }
        let n = chunks.len() as u64;
        let chunk = chunks
            .into_iter()
            .nth((pick % n) as usize)
            .expect("in range");
        let i = (pick >> 32) as usize % chunk.len();
        chunk[i] ^= 1 << bit;
        true
    }

    /// Everything due at `now`, per connection in order. Nothing crosses a
    /// partition.
    pub fn poll(&mut self, now: u64) -> Vec<(ConnId, End, Delivery)> {
        let mut out = Vec::new();
        if self.partitioned(now) {
            return out;
        }
        let mut dead = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            for end in [End::P, End::B] {
                let pipe = c.pipe(end);
                while let Some((at, _)) = pipe.queue.front() {
                    if *at > now {
                        break;
                    }
                    let (_, d) = pipe.queue.pop_front().expect("front");
                    if pipe.closed {
                        continue;
                    }
                    if matches!(d, Delivery::Fin) {
                        pipe.closed = true;
                    }
                    out.push((id, end, d));
                }
            }
            if c.to_p.closed && c.to_b.closed && c.to_p.queue.is_empty() && c.to_b.queue.is_empty()
            {
                dead.push(id);
            }
        }
        for id in dead {
            self.conns.remove(&id);
        }
        out
    }
}

fn push(pipe: &mut Pipe, at: u64, d: Delivery) {
    let at = at.max(pipe.last_at);
    pipe.last_at = at;
    pipe.queue.push_back((at, d));
}
