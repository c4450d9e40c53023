//! What a run writes and where it records it. Operation `i` of a run with
//! prefix `P` sets key `P:i` to [`value_for`]`(P, i, size)`, a value that
//! can be recomputed from the prefix and index alone (and differs between
//! runs with different prefixes), so `verify` needs nothing but the list of
//! acknowledged indices. That list is the acked file: one decimal index per
//! line, appended as each `+OK` arrives and flushed at least every 100 ms,
//! so a test that kills the load generator still finds (almost) every
//! acknowledged key. A final line without its newline is a write cut short by
//! a kill and is ignored by [`read_acked`].

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// The key operation `index` writes.
pub fn key_for(prefix: &str, index: u64) -> String {
    format!("{prefix}:{index}")
}

/// The value operation `index` writes: `{prefix}:{index}|` repeated and cut
/// to exactly `size` bytes.
pub fn value_for(prefix: &str, index: u64, size: usize) -> Vec<u8> {
    let unit = format!("{prefix}:{index}|");
    unit.bytes().cycle().take(size).collect()
}

/// Failure to read or write the acked file.
#[derive(Debug, thiserror::Error)]
pub enum AckedFileError {
    #[error("acked file {path}: {cause}")]
    Io { path: PathBuf, cause: io::Error },
    #[error("acked file {path}, line {line}: {text:?} is not an index")]
    BadLine {
        path: PathBuf,
        line: usize,
        text: String,
    },
}

/// The acked file being written (created empty, or truncated, on open).
pub struct AckedLog {
    path: PathBuf,
    out: BufWriter<File>,
}

impl AckedLog {
    pub fn create(path: &Path) -> Result<AckedLog, AckedFileError> {
        let file = File::create(path).map_err(|cause| AckedFileError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        Ok(AckedLog {
            path: path.to_path_buf(),
            out: BufWriter::with_capacity(256 * 1024, file),
        })
    }

    pub fn record(&mut self, index: u64) -> Result<(), AckedFileError> {
        writeln!(self.out, "{index}").map_err(|e| self.error(e))
    }

    pub fn flush(&mut self) -> Result<(), AckedFileError> {
        self.out.flush().map_err(|e| self.error(e))
    }

    fn error(&self, cause: io::Error) -> AckedFileError {
        AckedFileError::Io {
            path: self.path.clone(),
            cause,
        }
    }
}

/// The indices in an acked file, in file order.
pub fn read_acked(path: &Path) -> Result<Vec<u64>, AckedFileError> {
    let text = std::fs::read_to_string(path).map_err(|cause| AckedFileError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    parse_acked(&text).map_err(|(line, text)| AckedFileError::BadLine {
        path: path.to_path_buf(),
        line,
        text,
    })
}

/// Parses acked-file text; on error, the 1-based line number and its text.
fn parse_acked(text: &str) -> Result<Vec<u64>, (usize, String)> {
    // Only newline-terminated lines are complete records.
    let Some(end) = text.rfind('\n') else {
        return Ok(Vec::new());
    };
    let mut indices = Vec::new();
    let complete = &text[..end];
    for (n, line) in complete.split('\n').enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<u64>() {
            Ok(index) => indices.push(index),
            Err(_) => return Err((n + 1, line.to_string())),
        }
    }
    Ok(indices)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_exact_size_and_distinct() {
        assert_eq!(value_for("p", 7, 10), b"p:7|p:7|p:");
        assert_eq!(value_for("p", 12, 3), b"p:1");
        assert!(value_for("p", 3, 0).is_empty());
        assert_eq!(value_for("run1", 123456, 64).len(), 64);
        assert_ne!(value_for("p", 1, 64), value_for("p", 11, 64));
        assert_ne!(value_for("a", 1, 64), value_for("b", 1, 64));
        assert_eq!(key_for("run1", 42), "run1:42");
    }

    #[test]
    fn acked_text_ignores_an_unterminated_last_line() {
        assert_eq!(parse_acked(""), Ok(vec![]));
        assert_eq!(parse_acked("12"), Ok(vec![]));
        assert_eq!(parse_acked("\n"), Ok(vec![]));
        assert_eq!(parse_acked("0\n1\n2\n"), Ok(vec![0, 1, 2]));
        assert_eq!(parse_acked("0\n1\n2\n3"), Ok(vec![0, 1, 2]));
        assert_eq!(parse_acked("0\nx\n"), Err((2, "x".to_string())));
    }

    #[test]
    fn acked_log_round_trips() {
        let path = std::env::temp_dir().join(format!("ftvm-loadgen-acked-{}", std::process::id()));
        let mut log = AckedLog::create(&path).unwrap();
        for i in 0..5 {
            log.record(i).unwrap();
        }
        log.flush().unwrap();
        assert_eq!(read_acked(&path).unwrap(), vec![0, 1, 2, 3, 4]);
        std::fs::remove_file(&path).unwrap();
    }
}
