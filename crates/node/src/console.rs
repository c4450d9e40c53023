//! The host side of the guest console: the terminal in raw mode (restored on
//! exit, even on error), stdin read by the driver's event loop
//! ([`Reactor::read_stdin`]), the `Ctrl-A x` escape to quit, and where guest
//! output goes.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::reactor::Reactor;

/// Where console output goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConsoleTarget {
    Stdio,
    Null,
    File(PathBuf),
}

impl std::str::FromStr for ConsoleTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "stdio" => Ok(ConsoleTarget::Stdio),
            "null" | "none" => Ok(ConsoleTarget::Null),
            _ => match s.strip_prefix("file:") {
                Some(p) if !p.is_empty() => Ok(ConsoleTarget::File(PathBuf::from(p))),
                _ => Err(format!("expected stdio, null or file:PATH, got {s:?}")),
            },
        }
    }
}

/// Puts the terminal in raw mode for as long as it lives.
struct RawMode {
    fd: i32,
    saved: libc::termios,
}

impl RawMode {
    fn enable(fd: i32) -> io::Result<RawMode> {
        // SAFETY: termios is plain data; tcgetattr fills it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let saved = t;
        // SAFETY: valid termios pointer.
        unsafe { libc::cfmakeraw(&mut t) };
        // Keep output post-processing so that guest "\n" stays a newline.
        t.c_oflag |= libc::OPOST;
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes saved in enable().
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

pub struct Console {
    out: Option<Box<dyn Write>>,
    _raw: Option<RawMode>,
    escape_pending: bool,
    interactive: bool,
}

/// Result of filtering terminal input for the escape sequence.
pub enum Filtered {
    Bytes(Vec<u8>),
    Quit,
}

impl Console {
    /// Opens the console; if `input` is given, stdin is read on that loop
    /// and its bytes arrive there as `Console` events.
    pub fn open(target: &ConsoleTarget, input: Option<&mut Reactor>) -> Result<Console> {
        let read_stdin = input.is_some();
        let out: Option<Box<dyn Write>> = match target {
            ConsoleTarget::Stdio => Some(Box::new(io::stdout())),
            ConsoleTarget::Null => None,
            ConsoleTarget::File(p) => {
                Some(Box::new(File::create(p).with_context(|| {
                    format!("cannot create console file {}", p.display())
                })?))
            }
        };
        let stdin_fd = io::stdin().as_raw_fd();
        // SAFETY: isatty only inspects the descriptor.
        let interactive = read_stdin && unsafe { libc::isatty(stdin_fd) } == 1;
        let raw = if interactive {
            Some(RawMode::enable(stdin_fd).context("cannot put the terminal in raw mode")?)
        } else {
            None
        };
        if let Some(reactor) = input {
            reactor.read_stdin()?;
        }
        if interactive {
            eprint!("ftvm: console attached; press Ctrl-A x to quit\r\n");
        }
        Ok(Console {
            out,
            _raw: raw,
            escape_pending: false,
            interactive,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if let Some(out) = self.out.as_mut() {
            out.write_all(bytes)
                .context("cannot write console output")?;
            out.flush().ok();
        }
        Ok(())
    }

    /// Applies the `Ctrl-A x` escape (interactive terminals only).
    pub fn filter(&mut self, bytes: Vec<u8>) -> Filtered {
        if !self.interactive {
            return Filtered::Bytes(bytes);
        }
        let mut out = Vec::with_capacity(bytes.len());
        for b in bytes {
            if self.escape_pending {
                self.escape_pending = false;
                match b {
                    b'x' | b'X' => return Filtered::Quit,
                    0x01 => out.push(0x01),
                    _ => {}
                }
            } else if b == 0x01 {
                self.escape_pending = true;
            } else {
                out.push(b);
            }
        }
        Filtered::Bytes(out)
    }
}

/// Parses a memory size like QEMU's `-m`: a plain number is MiB; suffixes
/// K, M, G (binary) are accepted.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1 << 20),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("bad memory size {s:?}"))?;
    let bytes = n.checked_mul(mult).context("memory size overflows")?;
    if bytes == 0 || bytes % (1 << 20) != 0 {
        bail!("memory size {s:?} must be a non-zero multiple of 1 MiB");
    }
    if bytes > (1 << 36) {
        bail!("memory size {s:?} is larger than the 64 GiB ftvm supports");
    }
    Ok(bytes)
}
