//! Raw disk images: the backend of a virtio-blk device.
//!
//! A [`DiskImage`] is a file (or a block device) holding the disk's bytes
//! from offset 0, nothing else. Its size must be a non-zero multiple of the
//! 512-byte sector. It is held under an advisory `flock` for as long as it is
//! open — exclusive when writable, shared when read-only — so two ftvm
//! processes on one host can never write the same image, nor one write an
//! image another is reading ([`HostError::DiskLocked`]). (flock is
//! per-host: storage shared between hosts needs its own arbiter.)
//!
//! All access is positional (`pread`/`pwrite`) and bounds-checked: a request
//! past the end is an error, never a panic or a short transfer. Methods take
//! `&self`, so one image can be shared between threads.
//!
//! Durability: [`DiskImage::write_at`] with `fua` returns only after the data
//! is on stable storage (write + fdatasync); [`DiskImage::flush`] makes all
//! completed writes durable. [`DiskImage::discard`] punches a hole (reads
//! then return zeros) and is a no-op on filesystems that cannot.

use crate::HostError;
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The sector size every image size must be a multiple of.
pub const SECTOR: u64 = 512;

/// An open raw disk image. See the module documentation.
#[derive(Debug)]
pub struct DiskImage {
    file: File,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl DiskImage {
    /// Opens the image at `path`, checks its size and takes its lock.
    pub fn open(path: impl AsRef<Path>, read_only: bool) -> Result<DiskImage, HostError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source: io::Error| HostError::DiskOpen {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(&path)
            .map_err(open_err)?;

        let op = if read_only {
            libc::LOCK_SH
        } else {
            libc::LOCK_EX
        };
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Err(HostError::DiskLocked { path });
            }
            return Err(open_err(e));
        }

        // Seeking to the end gives the size of block devices too (their
        // metadata length is 0).
        let size = file.seek(SeekFrom::End(0)).map_err(open_err)?;
        if size == 0 {
            return Err(HostError::DiskEmpty { path });
        }
        if size % SECTOR != 0 {
            let rounded = size.div_ceil(SECTOR) * SECTOR;
            return Err(HostError::DiskUnaligned {
                path,
                size,
                rounded,
            });
        }
        tracing::debug!(path = %path.display(), size, read_only, "opened disk image");
        Ok(DiskImage {
            file,
            path,
            size,
            read_only,
        })
    }

    /// The image size in bytes (a multiple of [`SECTOR`]).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the image was opened read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The path the image was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads `len` bytes at byte offset `offset`.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, HostError> {
        self.check_bounds(offset, len as u64)?;
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, offset)
            .map_err(|e| self.io_err("read", e))?;
        Ok(buf)
    }

    /// Writes `data` at byte offset `offset`. With `fua` (force unit access)
    /// the data is durable (fdatasync) before this returns.
    pub fn write_at(&self, offset: u64, data: &[u8], fua: bool) -> Result<(), HostError> {
        self.check_writable("write")?;
        self.check_bounds(offset, data.len() as u64)?;
        self.file
            .write_all_at(data, offset)
            .map_err(|e| self.io_err("write", e))?;
        if fua {
            self.file
                .sync_data()
                .map_err(|e| self.io_err("fdatasync after a FUA write", e))?;
        }
        Ok(())
    }

    /// Makes every completed write durable (fdatasync). On a read-only image
    /// there is nothing to flush and this succeeds.
    pub fn flush(&self) -> Result<(), HostError> {
        if self.read_only {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| self.io_err("fdatasync", e))
    }

    /// Discards `len` bytes at `offset`: punches a hole so that the range
    /// reads as zeros and frees its space. Where the filesystem cannot punch
    /// holes this does nothing and succeeds (discard is only a hint).
    pub fn discard(&self, offset: u64, len: u64) -> Result<(), HostError> {
        self.check_writable("discard")?;
        self.check_bounds(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        // Bounds are checked against a size that fits an off_t (it came from
        // lseek), so these conversions cannot fail.
        let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(self.out_of_bounds(offset, len));
        };
        // SAFETY: fallocate(2) on a descriptor we own; no memory is passed.
        let rc = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                off,
                n,
            )
        };
        if rc < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => {
                    tracing::debug!(path = %self.path.display(), "discard unsupported; ignored");
                }
                _ => return Err(self.io_err("discard (punch hole)", e)),
            }
        }
        Ok(())
    }

    fn check_bounds(&self, offset: u64, len: u64) -> Result<(), HostError> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(self.out_of_bounds(offset, len)),
        }
    }

    fn out_of_bounds(&self, offset: u64, len: u64) -> HostError {
        HostError::OutOfBounds {
            path: self.path.clone(),
            offset,
            len,
            size: self.size,
        }
    }

    fn check_writable(&self, op: &'static str) -> Result<(), HostError> {
        if self.read_only {
            return Err(HostError::DiskReadOnly {
                path: self.path.clone(),
                op,
            });
        }
        Ok(())
    }

    fn io_err(&self, op: &'static str, source: io::Error) -> HostError {
        HostError::DiskIo {
            path: self.path.clone(),
            op,
            source,
        }
    }
}

impl Drop for DiskImage {
    fn drop(&mut self) {
        // Release the lock explicitly rather than by closing: a child being
        // forked by another thread right now holds a copy of the descriptor
        // until it execs, and would otherwise keep the image locked a moment
        // longer.
        // SAFETY: flock(2) on a descriptor we own; no memory is passed.
        unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A file under the temp dir, removed when dropped.
    struct TempImage(PathBuf);

    impl TempImage {
        fn with_size(size: u64) -> TempImage {
            static N: AtomicU32 = AtomicU32::new(0);
            let path = std::env::temp_dir().join(format!(
                "ftvm-host-disk-{}-{}.img",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let f = File::create(&path).expect("create temp image");
            f.set_len(size).expect("size temp image");
            TempImage(path)
        }
    }

    impl Drop for TempImage {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn odd_size_is_refused_with_the_fix() {
        let img = TempImage::with_size(1000);
        match DiskImage::open(&img.0, false) {
            Err(
                e @ HostError::DiskUnaligned {
                    size: 1000,
                    rounded: 1024,
                    ..
                },
            ) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("1000") && msg.contains("truncate -s 1024"),
                    "{msg}"
                );
            }
            other => panic!("expected DiskUnaligned, got {other:?}"),
        }
    }

    #[test]
    fn empty_and_missing_are_refused() {
        let img = TempImage::with_size(0);
        assert!(matches!(
            DiskImage::open(&img.0, true),
            Err(HostError::DiskEmpty { .. })
        ));
        let missing = std::env::temp_dir().join("ftvm-host-no-such-image.img");
        assert!(matches!(
            DiskImage::open(missing, true),
            Err(HostError::DiskOpen { .. })
        ));
    }

    #[test]
    fn round_trip_flush_and_discard() {
        let img = TempImage::with_size(8 * 512);
        let disk = DiskImage::open(&img.0, false).expect("open");
        assert_eq!(disk.size(), 4096);
        let data: Vec<u8> = (0..1024u32).map(|i| (i * 7) as u8).collect();
        disk.write_at(512, &data, false).expect("write");
        disk.write_at(3584, &[0xab; 512], true).expect("FUA write");
        disk.flush().expect("flush");
        assert_eq!(disk.read_at(512, 1024).expect("read"), data);
        assert_eq!(disk.read_at(3584, 512).expect("read"), vec![0xab; 512]);
        assert_eq!(disk.read_at(0, 512).expect("read"), vec![0; 512]);
        assert_eq!(disk.read_at(4096, 0).expect("empty read at end"), vec![]);

        disk.discard(512, 512).expect("discard");
        let after = disk.read_at(512, 1024).expect("read");
        // Either the hole was punched (zeros) or discard was ignored.
        assert!(after[..512] == [0; 512] || after[..512] == data[..512]);
        assert_eq!(after[512..], data[512..]);
        drop(disk);

        // Data survives closing and reopening.
        let disk = DiskImage::open(&img.0, true).expect("reopen");
        assert_eq!(disk.read_at(3584, 512).expect("read"), vec![0xab; 512]);
    }

    #[test]
    fn bounds_are_checked() {
        let img = TempImage::with_size(1024);
        let disk = DiskImage::open(&img.0, false).expect("open");
        let oob = |r: Result<_, HostError>| matches!(r, Err(HostError::OutOfBounds { .. }));
        assert!(oob(disk.read_at(1024, 1).map(|_| ())));
        assert!(oob(disk.read_at(512, 513).map(|_| ())));
        assert!(oob(disk.read_at(u64::MAX, 2).map(|_| ())));
        assert!(oob(disk.write_at(1000, &[0; 25], false)));
        assert!(oob(disk.write_at(u64::MAX - 1, &[0; 4], true)));
        assert!(oob(disk.discard(512, 1024)));
        assert!(oob(disk.discard(u64::MAX, u64::MAX)));
        // Nothing was written by the refused requests.
        assert_eq!(disk.read_at(0, 1024).expect("read"), vec![0; 1024]);
    }

    #[test]
    fn locking() {
        let img = TempImage::with_size(512);
        let w = DiskImage::open(&img.0, false).expect("open");
        assert!(matches!(
            DiskImage::open(&img.0, false),
            Err(HostError::DiskLocked { .. })
        ));
        assert!(matches!(
            DiskImage::open(&img.0, true),
            Err(HostError::DiskLocked { .. })
        ));
        drop(w);
        // Readers share; a writer is kept out while any reader is there.
        let r1 = DiskImage::open(&img.0, true).expect("reader 1");
        let r2 = DiskImage::open(&img.0, true).expect("reader 2");
        assert!(matches!(
            DiskImage::open(&img.0, false),
            Err(HostError::DiskLocked { .. })
        ));
        drop((r1, r2));
        DiskImage::open(&img.0, false).expect("writable again after readers left");
    }

    #[test]
    fn read_only_refuses_writes() {
        let img = TempImage::with_size(1024);
        let disk = DiskImage::open(&img.0, true).expect("open");
        assert!(disk.is_read_only());
        assert!(matches!(
            disk.write_at(0, &[1; 512], false),
            Err(HostError::DiskReadOnly { op: "write", .. })
        ));
        assert!(matches!(
            disk.discard(0, 512),
            Err(HostError::DiskReadOnly { .. })
        ));
        disk.flush().expect("flush of a read-only image is a no-op");
        assert_eq!(disk.read_at(0, 1024).expect("read"), vec![0; 1024]);
    }
}
