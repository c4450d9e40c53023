//! The arbiter's durable store: the state lives in `DIR/arbiter.state` and
//! every change is made durable before anyone hears about it — the new state
//! is written to `arbiter.state.tmp`, fsynced, renamed over the old file, and
//! the directory is fsynced so the rename itself survives a power cut. A
//! change that cannot be persisted is not applied. At start the file is
//! loaded; a file that fails any check is refused, never silently reset,
//! because forgetting a win could let a second primary go live. An
//! exclusive `flock` on `DIR/arbiter.lock` keeps a second server off the
//! same directory.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::state::ArbiterState;
use crate::error::StorageError;
use crate::sys;

/// File name of the state file inside the storage directory.
pub const STATE_FILE: &str = "arbiter.state";
const TMP_FILE: &str = "arbiter.state.tmp";
const LOCK_FILE: &str = "arbiter.lock";

pub(crate) struct Store {
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    state: ArbiterState,
    _lock: File,
}

impl Store {
    /// Locks the directory and loads the state (empty if there is no file yet).
    pub fn open(dir: &Path) -> Result<Store, StorageError> {
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&lock_path)
            .map_err(|source| StorageError::Io {
                context: "cannot create lock file",
                path: lock_path.clone(),
                source,
            })?;
        match sys::try_lock_exclusive(&lock) {
            Ok(true) => {}
            Ok(false) => {
                return Err(StorageError::AlreadyServed {
                    dir: dir.to_path_buf(),
                    lock: lock_path,
                })
            }
            Err(source) => {
                return Err(StorageError::Io {
                    context: "cannot lock",
                    path: lock_path,
                    source,
                })
            }
        }
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(TMP_FILE);
        // A leftover temporary file is a write that never got renamed: the
        // answer it would have justified was never sent.
        match std::fs::remove_file(&tmp) {
            Ok(()) => warn!("arbiter: removed unfinished {}", tmp.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StorageError::Io {
                    context: "cannot remove",
                    path: tmp,
                    source,
                })
            }
        }
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                ArbiterState::decode(&bytes).map_err(|reason| StorageError::CorruptState {
                    path: path.clone(),
                    reason,
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                info!(
                    "arbiter: no state file at {}, starting empty",
                    path.display()
                );
                ArbiterState::default()
            }
            Err(source) => {
                return Err(StorageError::Io {
                    context: "cannot read arbiter state",
                    path,
                    source,
                })
            }
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            path,
            tmp,
            state,
            _lock: lock,
        })
    }

    pub fn state(&self) -> &ArbiterState {
        &self.state
    }

    /// Runs `f` on a copy of the state; if it reports a change, the copy is
    /// made durable and only then becomes the state. On a persistence error
    /// the state is unchanged.
    pub fn apply<R>(&mut self, f: impl FnOnce(&mut ArbiterState) -> (R, bool)) -> io::Result<R> {
        let mut next = self.state.clone();
        let (result, changed) = f(&mut next);
        if changed {
            self.persist(&next)?;
            self.state = next;
        }
        Ok(result)
    }

    fn persist(&self, state: &ArbiterState) -> io::Result<()> {
        let bytes = state.encode();
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&self.tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&self.tmp, &self.path)?;
        File::open(&self.dir)?.sync_all()
    }
}
