//! NBD exports: the raw image files `DIR/<name>.img` of the storage
//! directory. Names are looked up afresh on every handshake, so an image
//! dropped into the directory is served without a restart. A name must be
//! 1 to 255 characters from `[A-Za-z0-9._+-]` and must not start with a dot,
//! which keeps every export inside the directory. Each connection opens its
//! own descriptor; all of them share the kernel page cache, so a flush on
//! one connection covers writes made through another (CAN_MULTI_CONN).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::sys;

/// Suffix of export image files.
pub const IMAGE_SUFFIX: &str = ".img";

/// Whether `name` is an acceptable export name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// How the server finds exports.
#[derive(Debug, Clone)]
pub(crate) struct Catalog {
    pub dir: PathBuf,
    pub read_only: bool,
    pub read_only_exports: Vec<String>,
    pub default_export: Option<String>,
}

impl Catalog {
    /// Maps a requested name (empty = the default export) to a canonical name
    /// and the image path, if such an image exists.
    pub fn resolve(&self, requested: &str) -> Option<(String, PathBuf)> {
        let name = if requested.is_empty() {
            self.default_export.clone()?
        } else {
            requested.to_string()
        };
        if !valid_name(&name) {
            return None;
        }
        let path = self.dir.join(format!("{name}{IMAGE_SUFFIX}"));
        match std::fs::metadata(&path) {
            Ok(m) if m.is_file() || is_block_device(&m) => Some((name, path)),
            _ => None,
        }
    }

    /// Names of all exports, sorted.
    pub fn list(&self) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            let Some(name) = file_name.strip_suffix(IMAGE_SUFFIX) else {
                continue;
            };
            if valid_name(name) && self.resolve(name).is_some() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    fn configured_read_only(&self, name: &str) -> bool {
        self.read_only || self.read_only_exports.iter().any(|n| n == name)
    }

    /// Opens an export for one connection.
    pub fn open(&self, name: &str, path: &Path) -> io::Result<Export> {
        let mut read_only = self.configured_read_only(name);
        let file = if read_only {
            File::open(path)?
        } else {
            match OpenOptions::new().read(true).write(true).open(path) {
                Ok(f) => f,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
                    ) =>
                {
                    read_only = true;
                    File::open(path)?
                }
                Err(e) => return Err(e),
            }
        };
        let size = (&file).seek(SeekFrom::End(0))?;
        Ok(Export {
            name: name.to_string(),
            file,
            size,
            read_only,
        })
    }
}

fn is_block_device(m: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    m.file_type().is_block_device()
}

/// One connection's open export.
#[derive(Debug)]
pub(crate) struct Export {
    pub name: String,
    pub file: File,
    pub size: u64,
    pub read_only: bool,
}

impl Export {
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    /// fdatasync: data and the metadata needed to read it back are durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// TRIM: punches a hole. Discarding is advisory, so a file system that
    /// cannot punch holes makes this a successful no-op.
    pub fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        match sys::punch_hole(&self.file, offset, len) {
            Err(e) if unsupported(&e) => Ok(()),
            other => other,
        }
    }

    /// WRITE_ZEROES: a hole when allowed, else an allocated zero range, else
    /// explicit zero bytes.
    pub fn write_zeroes(&self, offset: u64, len: u64, may_punch: bool) -> io::Result<()> {
        if may_punch {
            match sys::punch_hole(&self.file, offset, len) {
                Ok(()) => return Ok(()),
                Err(e) if unsupported(&e) => {}
                Err(e) => return Err(e),
            }
        }
        match sys::zero_range(&self.file, offset, len) {
            Ok(()) => return Ok(()),
            Err(e) if unsupported(&e) => {}
            Err(e) => return Err(e),
        }
        let zeroes = vec![0u8; len.min(1 << 20) as usize];
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            self.file.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}

fn unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
    )
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_stay_inside_the_directory() {
        assert!(valid_name("vm1-disk0"));
        assert!(valid_name("a.b_c+d"));
        assert!(!valid_name(""));
        assert!(!valid_name(".hidden"));
        assert!(!valid_name("../etc/passwd"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("sp ace"));
        assert!(!valid_name(&"x".repeat(256)));
    }
}
