//! The arbiter client: one atomic test-and-set on the shared storage,
//! scoped to the pair's generation, retried while the arbiter is
//! unreachable until a deadline, after which the caller must halt. Only an
//! explicit Won lets the caller act alone; Unreachable never does. Retries
//! rely on the arbiter answering Won again to the claimant that already holds
//! the generation (an answer lost on the way must not turn a winner into a
//! loser). Used by both cores.

use crate::error::FtError;
use crate::{ArbiterResult, Generation, Role};

/// One test-and-set the driver must send to the arbiter and answer with
/// `on_arbiter_result` (Unreachable if its own request timeout passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TasRequest {
    pub generation: Generation,
    pub claimant: Role,
}

/// What the caller does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArbiterStep {
    /// Nothing yet.
    Wait,
    /// Send this request.
    Request(TasRequest),
    /// This claimant holds the generation: act alone.
    Won,
    /// The peer holds it: halt.
    Lost,
    /// The deadline passed without Won or Lost: halt.
    GaveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    InFlight,
    Waiting { retry_at: u64 },
    Won,
    Lost,
    GaveUp,
}

/// Test-and-set with retries and a deadline.
#[derive(Debug, Clone)]
pub struct ArbiterClient {
    request: TasRequest,
    retry_ms: u64,
    deadline_ms: u64,
    started_ms: Option<u64>,
    attempts: u32,
    state: State,
}

impl ArbiterClient {
    pub fn new(generation: Generation, claimant: Role, retry_ms: u64, deadline_ms: u64) -> Self {
        ArbiterClient {
            request: TasRequest {
                generation,
                claimant,
            },
            retry_ms: retry_ms.max(1),
            deadline_ms,
            started_ms: None,
            attempts: 0,
            state: State::Idle,
        }
    }

    /// Starts arbitration: the first request. Later calls do nothing.
    pub fn start(&mut self, now_ms: u64) -> ArbiterStep {
        if self.state != State::Idle {
            return ArbiterStep::Wait;
        }
        self.started_ms = Some(now_ms);
        self.send()
    }

    fn send(&mut self) -> ArbiterStep {
        self.state = State::InFlight;
        self.attempts += 1;
        ArbiterStep::Request(self.request)
    }

    fn past_deadline(&self, now_ms: u64) -> bool {
        self.started_ms
            .is_some_and(|s| now_ms >= s.saturating_add(self.deadline_ms))
    }

    /// The driver's answer to the request in flight.
    pub fn on_result(
        &mut self,
        now_ms: u64,
        result: ArbiterResult,
    ) -> Result<ArbiterStep, FtError> {
        if self.state != State::InFlight {
            return Err(FtError::NoArbiterRequest);
        }
        Ok(match result {
            ArbiterResult::Won => {
                self.state = State::Won;
                ArbiterStep::Won
            }
            ArbiterResult::Lost => {
                self.state = State::Lost;
                ArbiterStep::Lost
            }
            ArbiterResult::Unreachable if self.past_deadline(now_ms) => {
                self.state = State::GaveUp;
                ArbiterStep::GaveUp
            }
            ArbiterResult::Unreachable => {
                self.state = State::Waiting {
                    retry_at: now_ms.saturating_add(self.retry_ms),
                };
                ArbiterStep::Wait
            }
        })
    }

    /// Time passes: retry when due, give up at the deadline (also with a
    /// request in flight: a Won arriving after that is refused).
    pub fn on_tick(&mut self, now_ms: u64) -> ArbiterStep {
        match self.state {
            State::InFlight | State::Waiting { .. } if self.past_deadline(now_ms) => {
                self.state = State::GaveUp;
                ArbiterStep::GaveUp
            }
            State::Waiting { retry_at } if now_ms >= retry_at => self.send(),
            _ => ArbiterStep::Wait,
        }
    }

    /// Requests sent so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Whether arbitration has started and not yet ended.
    pub fn pending(&self) -> bool {
        matches!(self.state, State::InFlight | State::Waiting { .. })
    }

    /// When a retry (or the give-up) is next due, for drivers that sleep.
    pub fn next_timeout_ms(&self) -> Option<u64> {
        let deadline = self.started_ms?.saturating_add(self.deadline_ms);
        match self.state {
            State::InFlight => Some(deadline),
            State::Waiting { retry_at } => Some(retry_at.min(deadline)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ArbiterClient {
        ArbiterClient::new(7, Role::Backup, 100, 1000)
    }

    const REQ: TasRequest = TasRequest {
        generation: 7,
        claimant: Role::Backup,
    };

    #[test]
    fn won_and_lost_are_final() {
        let mut a = client();
        assert_eq!(a.start(0), ArbiterStep::Request(REQ));
        assert_eq!(a.start(1), ArbiterStep::Wait);
        assert_eq!(
            a.on_result(5, ArbiterResult::Won).unwrap(),
            ArbiterStep::Won
        );
        assert!(a.on_result(6, ArbiterResult::Lost).is_err());
        assert_eq!(a.on_tick(5000), ArbiterStep::Wait);

        let mut a = client();
        a.start(0);
        assert_eq!(
            a.on_result(5, ArbiterResult::Lost).unwrap(),
            ArbiterStep::Lost
        );
        assert!(a.on_result(6, ArbiterResult::Won).is_err());
    }

    #[test]
    fn unreachable_retries_until_the_deadline() {
        let mut a = client();
        a.start(0);
        assert_eq!(
            a.on_result(50, ArbiterResult::Unreachable).unwrap(),
            ArbiterStep::Wait
        );
        assert_eq!(a.on_tick(149), ArbiterStep::Wait);
        assert_eq!(a.on_tick(150), ArbiterStep::Request(REQ));
        assert_eq!(a.attempts(), 2);
        assert_eq!(
            a.on_result(900, ArbiterResult::Unreachable).unwrap(),
            ArbiterStep::Wait
        );
        assert_eq!(a.next_timeout_ms(), Some(1000));
        assert_eq!(a.on_tick(1000), ArbiterStep::GaveUp);
        // A late answer after giving up is refused.
        assert!(a.on_result(1001, ArbiterResult::Won).is_err());
    }

    #[test]
    fn unreachable_past_the_deadline_gives_up() {
        let mut a = client();
        a.start(0);
        assert_eq!(
            a.on_result(1000, ArbiterResult::Unreachable).unwrap(),
            ArbiterStep::GaveUp
        );
    }

    #[test]
    fn a_request_in_flight_at_the_deadline_is_abandoned() {
        let mut a = client();
        a.start(0);
        assert_eq!(a.on_tick(999), ArbiterStep::Wait);
        assert_eq!(a.on_tick(1000), ArbiterStep::GaveUp);
        assert!(a.on_result(1001, ArbiterResult::Won).is_err());
        assert!(!a.pending());
    }
}
