//! The few Linux calls the standard library does not wrap: `fallocate(2)` to
//! punch holes and zero ranges in export images (TRIM and WRITE_ZEROES),
//! `flock(2)` to make sure only one storage server owns a directory's arbiter
//! state at a time, `poll(2)` so the accept loops wake the moment a client
//! connects, and TCP keepalive so a peer whose host vanished without
//! closing its connections is noticed. Every `unsafe` block of the crate lives here, each one a
//! plain system call on a file descriptor the caller keeps open.

use std::fs::File;
use std::io;
use std::net::TcpStream;
use std::os::unix::io::AsRawFd;

/// Deallocates `len` bytes at `offset`, keeping the file size; the range then
/// reads as zeroes.
pub(crate) fn punch_hole(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

/// Zeroes `len` bytes at `offset` with the blocks left allocated.
pub(crate) fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    fallocate(
        file,
        libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
        offset,
        len,
    )
}

fn fallocate(file: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let n = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    loop {
        // SAFETY: fallocate only reads its integer arguments; the descriptor
        // stays open for the duration of the call because `file` is borrowed.
        let rc = unsafe { libc::fallocate(file.as_raw_fd(), mode, off, n) };
        if rc == 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Takes an exclusive, non-blocking `flock` on `file`. `Ok(false)` means some
/// other open file description holds it. The lock lives as long as `file`.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: flock only takes the descriptor and flags; `file` is borrowed,
    // so the descriptor is open for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// Turns on TCP keepalive: probes after `idle_secs` of silence, every
/// `interval_secs`, and the connection fails after `count` unanswered ones.
pub(crate) fn set_keepalive(
    stream: &TcpStream,
    idle_secs: i32,
    interval_secs: i32,
    count: i32,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    for (level, name, value) in [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, 1),
        (libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, idle_secs),
        (libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, interval_secs),
        (libc::IPPROTO_TCP, libc::TCP_KEEPCNT, count),
    ] {
        // SAFETY: `value` is a live c_int for the duration of the call and
        // its exact size is passed; the descriptor is borrowed from `stream`.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                level,
                name,
                (&value as *const libc::c_int).cast::<libc::c_void>(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits until `fd` is readable (for a listener: a connection is waiting)
/// or `timeout` passes; `Ok(false)` on timeout or a signal.
pub(crate) fn wait_readable(fd: &impl AsRawFd, timeout: std::time::Duration) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    // SAFETY: `p` is one valid pollfd for the duration of the call, and the
    // caller keeps the descriptor open.
    let rc = unsafe { libc::poll(&mut p, 1, ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(e);
    }
    Ok(rc > 0)
}
