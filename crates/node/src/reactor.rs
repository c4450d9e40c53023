//! The readiness loop of a VM process: one `mio` poll (epoll on Linux) per
//! driver, on which the driver's own thread waits for the logging
//! connection, its listeners and a waker that host threads (TAP readers,
//! the disk worker, the console, the arbiter client) ring after queueing an
//! event on the channel this module also owns. The drivers interleave it
//! with the machine: between short slices of guest execution they poll with
//! a zero timeout, and while the guest idles they block here until the next
//! timer. Sockets register themselves through [`Reactor::registry`] under a
//! token of their choosing; the reserved tokens are listed below.

use std::io;
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use mio::{Events, Poll, Registry, Token};

use crate::events::{EventSender, HostEvent};

/// The waker of the event channel.
pub const WAKER: Token = Token(usize::MAX);
/// The backup's logging listener.
pub const LISTENER: Token = Token(usize::MAX - 1);
/// The `--join-listen` listener.
pub const JOIN_LISTENER: Token = Token(usize::MAX - 2);

pub struct Reactor {
    poll: Poll,
    events: Events,
    rx: Receiver<HostEvent>,
    tx: EventSender,
}

impl Reactor {
    pub fn new() -> Result<Reactor> {
        let poll = Poll::new().context("cannot create the event loop (epoll)")?;
        let waker = mio::Waker::new(poll.registry(), WAKER)
            .context("cannot create the event loop's waker")?;
        let (tx, rx) = mpsc::channel();
        Ok(Reactor {
            poll,
            events: Events::with_capacity(64),
            rx,
            tx: EventSender::new(tx, Arc::new(waker)),
        })
    }

    /// A sender for host threads.
    pub fn sender(&self) -> EventSender {
        self.tx.clone()
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Waits at most `timeout` (`Some(ZERO)`: just looks) for readiness and
    /// appends the tokens that became ready to `ready` (the waker's
    /// included). Interrupted waits return with nothing.
    pub fn poll(&mut self, timeout: Duration, ready: &mut Vec<Token>) -> io::Result<()> {
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e),
        }
        ready.extend(self.events.iter().map(|e| e.token()));
        Ok(())
    }

    /// The next queued host event, if any.
    pub fn try_recv(&self) -> Option<HostEvent> {
        match self.rx.try_recv() {
            Ok(ev) => Some(ev),
            Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => None,
        }
    }
}
