//! The real-time driver: runs a machine against the host clock, the
//! terminal, TAP devices, disk images and the host entropy source, through
//! one readiness loop ([`crate::reactor`]) that reads the TAP devices and
//! stdin itself and that the disk worker wakes with completions. It is
//! the only place where `ftvm run` and `ftvm record` touch the outside world.
//!
//! Each turn of the loop: read the host clock and apply it as a time input,
//! apply console bytes, received frames and completions of the previous
//! turn's requests, run one quantum of steps, then serve the outputs (console
//! bytes, transmitted frames, block and entropy requests). While the guest
//! idles, the driver sleeps until the next timer deadline or until a host
//! event arrives. With a recorder attached, every input is logged at the
//! step where it is applied, and the run is stopped at each digest point so
//! digests land on a regular grid.

use std::collections::VecDeque;
use std::fs::File;
use std::io::BufWriter;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ftvm_machine::layout::TIMEBASE_HZ;
use ftvm_machine::{Finisher, Input, Machine, Output, Stop};
use ftvm_replay::{EndReason, Recorder};

use crate::console::{Console, ConsoleTarget, Filtered};
use crate::devices::{self, Backends};
use crate::events::HostEvent;
use crate::metrics::VmMetrics;
use crate::reactor::Reactor;

/// Steps executed per turn of the host loop (about 4 ms at 120 MIPS); the
/// host clock is read once per turn, which bounds how far guest time can
/// trail real time.
pub const QUANTUM: u64 = 500_000;
/// Longest the driver sleeps while the guest idles.
const MAX_IDLE_WAIT: Duration = Duration::from_millis(50);
/// How often a recording is written to its file (a `write`, no `fsync`): a
/// SIGKILLed recorder loses at most this much real time of guest execution
/// plus one quantum. Also before an idle sleep that would pass this mark.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

pub static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP_REQUESTED.store(true, Ordering::SeqCst);
}

/// SIGINT, SIGTERM and SIGHUP end the run cleanly (a recording gets its end
/// record) instead of killing the process mid-write.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}

pub struct Options {
    pub console: ConsoleTarget,
    pub read_input: bool,
    pub max_steps: Option<u64>,
    /// The process's metric handles (served or not).
    pub metrics: VmMetrics,
}

/// How a driven run ended.
pub struct Ended {
    pub exit_code: u8,
    pub reason: EndReason,
}

pub struct Driver {
    pub machine: Machine,
    backends: Backends,
    console: Console,
    /// The readiness loop: TAP devices and stdin are read on it, the disk
    /// worker wakes it with its completions.
    reactor: Reactor,
    ready: Vec<mio::Token>,
    recorder: Option<Recorder<BufWriter<File>>>,
    pending: VecDeque<Input>,
    start: Instant,
    last_flush: Instant,
    max_steps: Option<u64>,
    quit: bool,
    metrics: VmMetrics,
}

fn host_ticks(start: Instant) -> u64 {
    (start.elapsed().as_nanos() * TIMEBASE_HZ as u128 / 1_000_000_000) as u64
}

impl Driver {
    pub fn new(
        machine: Machine,
        mut backends: Backends,
        opts: Options,
        recorder: Option<Recorder<BufWriter<File>>>,
    ) -> Result<Driver> {
        let mut reactor = Reactor::new()?;
        let tx = reactor.sender();
        backends.meter(&opts.metrics.devices);
        backends.register_nets(&mut reactor)?;
        backends.start_disk_worker(&tx)?;
        let console = Console::open(&opts.console, opts.read_input.then_some(&mut reactor))?;
        Ok(Driver {
            machine,
            backends,
            console,
            reactor,
            ready: Vec::new(),
            recorder,
            pending: VecDeque::new(),
            start: Instant::now(),
            last_flush: Instant::now(),
            max_steps: opts.max_steps,
            quit: false,
            metrics: opts.metrics,
        })
    }

    /// Logs (when recording) and applies an input at the current step.
    fn apply(&mut self, input: Input) -> Result<()> {
        if let Some(r) = self.recorder.as_mut() {
            r.input(self.machine.icount(), &input)
                .context("cannot write the log")?;
        }
        self.machine.apply(&input);
        Ok(())
    }

    /// Handles one host event; returns true if the user asked to quit.
    fn host_event(&mut self, ev: HostEvent) -> Result<bool> {
        match ev {
            HostEvent::Console(bytes) => match self.console.filter(bytes) {
                Filtered::Bytes(b) if !b.is_empty() => self.apply(Input::ConsoleRx(b))?,
                Filtered::Bytes(_) => {}
                Filtered::Quit => return Ok(true),
            },
            HostEvent::Frame(slot, frame) => self.apply(Input::NetRx { slot, frame })?,
            HostEvent::Completion(input) => self.apply(input)?,
            // `ftvm run` has no FT peer.
            HostEvent::Ft(_) => {}
        }
        Ok(false)
    }

    fn serve_outputs(&mut self) -> Result<()> {
        let outs = self.machine.take_outputs();
        if let Some(r) = self.recorder.as_mut() {
            r.outputs(&outs);
        }
        for o in outs {
            match o {
                Output::Console(bytes) => self.console.write(&bytes)?,
                Output::NetTx { slot, frame } => self.backends.transmit(slot, &frame),
                Output::Blk { slot, id, op } => {
                    if let Some(done) = self.backends.submit_block(slot, id, op) {
                        self.pending.push_back(done);
                    }
                }
                Output::Rng { slot, id, len } => {
                    self.pending.push_back(devices::entropy(slot, id, len))
                }
            }
        }
        Ok(())
    }

    /// Drives the machine until it powers off, the user quits, a signal
    /// arrives or the step limit is reached.
    pub fn run(&mut self) -> Result<Ended> {
        loop {
            if STOP_REQUESTED.load(Ordering::SeqCst) {
                eprint!("\r\nftvm: stopped by a signal\r\n");
                return Ok(Ended {
                    exit_code: 130,
                    reason: EndReason::Stopped,
                });
            }
            let t = host_ticks(self.start);
            self.apply(Input::Time(t))?;
            while let Some(input) = self.pending.pop_front() {
                self.apply(input)?;
            }
            while let Some(ev) = self.reactor.try_recv() {
                self.quit |= self.host_event(ev)?;
            }
            if self.quit {
                eprint!("\r\nftvm: quit from the console\r\n");
                return Ok(Ended {
                    exit_code: 0,
                    reason: EndReason::Stopped,
                });
            }
            let mut limit = self.machine.icount() + QUANTUM;
            if let Some(r) = self.recorder.as_mut() {
                r.checkpoint(&mut self.machine)
                    .context("cannot write the log")?;
                limit = limit.min(r.next_digest_at());
            }
            self.flush_log_if_due(Duration::ZERO)?;
            if let Some(max) = self.max_steps {
                if self.machine.icount() >= max {
                    return Ok(Ended {
                        exit_code: 0,
                        reason: EndReason::Stopped,
                    });
                }
                limit = limit.min(max);
            }
            let stop = self.machine.run(limit);
            self.metrics.exit(&self.machine, stop, false);
            self.serve_outputs()?;
            match stop {
                Stop::Limit => {}
                Stop::Idle { wake_at } => {
                    if !self.pending.is_empty() {
                        continue;
                    }
                    let wait = match wake_at {
                        Some(t) => {
                            let target =
                                Duration::from_nanos(t.saturating_mul(1_000_000_000 / TIMEBASE_HZ));
                            target
                                .saturating_sub(self.start.elapsed())
                                .min(MAX_IDLE_WAIT)
                        }
                        None => MAX_IDLE_WAIT,
                    };
                    self.flush_log_if_due(wait)?;
                    self.ready.clear();
                    self.reactor
                        .poll(wait, &mut self.ready)
                        .context("the event loop failed")?;
                    if let Some(ev) = self.reactor.try_recv() {
                        // Applied at once, after a time input; the rest at
                        // the top of the next turn.
                        self.pending_event(ev)?;
                    }
                }
                Stop::Finished(f) => {
                    return Ok(match f {
                        Finisher::Pass => Ended {
                            exit_code: 0,
                            reason: EndReason::PowerOff,
                        },
                        Finisher::Fail(code) => Ended {
                            exit_code: (code as u8).max(1),
                            reason: EndReason::Fail(code),
                        },
                        Finisher::Reset => {
                            eprint!("\r\nftvm: the guest requested a reset; exiting\r\n");
                            Ended {
                                exit_code: 0,
                                reason: EndReason::Reset,
                            }
                        }
                    })
                }
            }
        }
    }

    /// Writes the recording's buffered frames to its file if `FLUSH_EVERY`
    /// will have passed since the last write within `ahead` (the idle sleep
    /// about to start, or zero while the guest runs).
    fn flush_log_if_due(&mut self, ahead: Duration) -> Result<()> {
        if let Some(r) = self.recorder.as_mut() {
            if self.last_flush.elapsed() + ahead >= FLUSH_EVERY {
                r.flush().context("cannot write the log")?;
                self.last_flush = Instant::now();
            }
        }
        Ok(())
    }

    /// An event that woke the idle driver: apply it after the time input of
    /// the next turn, so the guest sees the time at which it arrived.
    fn pending_event(&mut self, ev: HostEvent) -> Result<()> {
        let t = host_ticks(self.start);
        self.apply(Input::Time(t))?;
        self.quit |= self.host_event(ev)?;
        Ok(())
    }

    /// Closes the recording (final digest and end record), if any.
    pub fn finish(mut self, reason: EndReason) -> Result<Machine> {
        if let Some(r) = self.recorder.take() {
            let bytes = r.bytes_written();
            let (inputs, digests) = (r.inputs_logged(), r.digests_logged());
            let w = r
                .finish(&mut self.machine, reason)
                .context("cannot finish the log")?;
            w.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|f| f.sync_all())
                .context("cannot flush the log to disk")?;
            eprintln!(
                "ftvm: recorded {} steps: {inputs} inputs, {} digests, {bytes} bytes of log",
                self.machine.icount(),
                digests + 1
            );
        }
        drop(self.console);
        Ok(self.machine)
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}
