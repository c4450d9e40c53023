//! Host entropy for the guest's virtio-rng device.
//!
//! [`fill`] fills a buffer from the kernel's random source with getrandom(2)
//! (blocking only until the kernel pool is first initialised, early at boot),
//! falling back to `/dev/urandom` on kernels without the system call. The
//! bytes become logged inputs, so a backup replays exactly what the primary's
//! guest received.

use crate::HostError;
use std::io::{self, Read};

/// Fills `buf` with random bytes from the host.
pub fn fill(buf: &mut [u8]) -> Result<(), HostError> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into the valid,
        // writable slice `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast::<libc::c_void>(), rest.len(), 0) };
        if n > 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) | Some(libc::EAGAIN) => continue,
            Some(libc::ENOSYS) => return fill_from_urandom(rest),
            _ if n == 0 => {
                return Err(HostError::Entropy(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "getrandom returned no bytes",
                )))
            }
            _ => return Err(HostError::Entropy(e)),
        }
    }
    Ok(())
}

fn fill_from_urandom(buf: &mut [u8]) -> Result<(), HostError> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(HostError::Entropy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_large_and_empty_buffers() {
        fill(&mut []).expect("empty");
        let mut a = vec![0u8; 1 << 20];
        let mut b = vec![0u8; 1 << 20];
        fill(&mut a).expect("fill a");
        fill(&mut b).expect("fill b");
        assert_ne!(a, b);
        // A mebibyte of zeros from a working source is beyond unlikely; a
        // crude check that every byte value shows up catches a stuck source.
        let mut seen = [false; 256];
        for &x in &a {
            seen[x as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }

    #[test]
    fn urandom_fallback_works() {
        let mut a = [0u8; 64];
        fill_from_urandom(&mut a).expect("urandom");
        assert_ne!(a, [0u8; 64]);
    }
}
