//! The few Linux calls the standard library does not wrap: `fallocate(2)` to
//! punch holes and zero ranges in export images (TRIM and WRITE_ZEROES), and
//! `flock(2)` to make sure only one storage server owns a directory's arbiter
//! state at a time. Every `unsafe` block of the crate lives here, each one a
//! plain system call on a file descriptor the caller keeps open.

use std::fs::File;
use std::io;
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
