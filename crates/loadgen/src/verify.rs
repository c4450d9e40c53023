//! `ftvm-loadgen verify`: reads back every key an earlier `write` run had
//! acknowledged (the indices in its acked file) and checks each holds the
//! value that run wrote. GETs are pipelined in batches. A key that is absent
//! is *missing* (an acknowledged write was lost — the failure a fault-tolerant
//! VM must never show), a key with another value or an error reply is
//! *wrong*. The result is printed as JSON; the caller turns "none missing or
//! wrong" into exit status 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::conn::{Conn, ConnError};
use crate::keys::{key_for, read_acked, value_for};
use crate::resp::{encode_command, Reply};

/// How many indices of each kind the report lists as examples.
const EXAMPLES: usize = 10;

pub struct VerifyOptions {
    pub addr: String,
    pub prefix: String,
    pub acked_file: PathBuf,
    pub value_size: usize,
    pub batch: usize,
    pub op_timeout: Duration,
    pub connect_timeout: Duration,
}

#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    pub checked: u64,
    pub missing: u64,
    pub wrong: u64,
    pub missing_examples: Vec<u64>,
    pub wrong_examples: Vec<u64>,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.wrong == 0
    }
}

/// A verify run that could not complete: the connection failed or timed out.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("no reply to GET within {0:?}")]
    Timeout(Duration),
}

pub fn run(opts: &VerifyOptions) -> Result<VerifyReport> {
    if opts.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let indices = read_acked(&opts.acked_file)?;
    let mut conn = Conn::connect(&opts.addr, opts.connect_timeout)?;
    conn.set_write_timeout(opts.op_timeout)?;
    let mut report = VerifyReport::default();
    let mut request = Vec::new();
    for batch in indices.chunks(opts.batch) {
        request.clear();
        for &index in batch {
            encode_command(
                &mut request,
                &[b"GET", key_for(&opts.prefix, index).as_bytes()],
            );
        }
        conn.send(&request).map_err(VerifyError::from)?;
        for &index in batch {
            let deadline = Instant::now() + opts.op_timeout;
            let reply = conn
                .reply_before(deadline)
                .map_err(VerifyError::from)?
                .ok_or(VerifyError::Timeout(opts.op_timeout))?;
            report.checked += 1;
            match reply {
                Reply::Bulk(Some(value))
                    if value == value_for(&opts.prefix, index, opts.value_size) => {}
                Reply::Bulk(None) => {
                    report.missing += 1;
                    if report.missing_examples.len() < EXAMPLES {
                        report.missing_examples.push(index);
                    }
                }
                _ => {
                    report.wrong += 1;
                    if report.wrong_examples.len() < EXAMPLES {
                        report.wrong_examples.push(index);
                    }
                }
            }
        }
    }
    Ok(report)
}
