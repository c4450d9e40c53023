//! `ftvm-loadgen ping`: waits for a redis server to answer. It connects,
//! sends PING and succeeds on `+PONG`; anything else — refused connection,
//! timeout, `-LOADING` while redis reads its dataset — is retried every
//! [`RETRY_EVERY`] until the overall timeout. Tests use it to wait for the
//! guest's redis to come up before starting a load.

use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::resp::{encode_command, Reply};

const RETRY_EVERY: Duration = Duration::from_millis(100);
/// Longest a single attempt may take, so a hung attempt does not use up the
/// whole timeout.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// `Ok(attempts)` once PING answered PONG; `Err(last problem)` if it did not
/// before `timeout` passed.
pub fn run(addr: &str, timeout: Duration) -> Result<u32, String> {
    let deadline = Instant::now() + timeout;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let now = Instant::now();
        let limit = deadline.saturating_duration_since(now).min(ATTEMPT_TIMEOUT);
        let problem = match attempt(addr, limit.max(Duration::from_millis(1))) {
            Ok(()) => return Ok(attempts),
            Err(problem) => problem,
        };
        if Instant::now() + RETRY_EVERY >= deadline {
            return Err(format!("{problem} (after {attempts} attempts)"));
        }
        std::thread::sleep(RETRY_EVERY);
    }
}

fn attempt(addr: &str, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut conn = Conn::connect(addr, limit).map_err(|e| e.to_string())?;
    let mut request = Vec::new();
    encode_command(&mut request, &[b"PING"]);
    conn.send(&request).map_err(|e| e.to_string())?;
    match conn.reply_before(deadline).map_err(|e| e.to_string())? {
        Some(Reply::Simple(s)) if s == "PONG" => Ok(()),
        Some(other) => Err(format!("PING answered {other:?}")),
        None => Err(format!("no answer to PING within {limit:?}")),
    }
}
