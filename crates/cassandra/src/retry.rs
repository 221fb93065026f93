//! `retry_num` (spec §3.1): retry a failed attempt on the next node up to N times when the
//! failure is transient (timeout, unavailable, overloaded, broken connection) and the statement
//! is idempotent. Ours all are (writes carry `USING TIMESTAMP`), so writes are retried too.
//! The request timeout still bounds the whole sequence.

use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};

#[derive(Debug, Clone, Copy)]
pub struct RetryNumPolicy {
    retry_num: u32,
}

impl RetryNumPolicy {
    pub fn new(retry_num: u32) -> Self {
        RetryNumPolicy { retry_num }
    }
}

impl RetryPolicy for RetryNumPolicy {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(RetryNumSession {
            left: self.retry_num,
            max: self.retry_num,
        })
    }
}

struct RetryNumSession {
    left: u32,
    max: u32,
}

fn transient(e: &RequestAttemptError) -> bool {
    match e {
        RequestAttemptError::BrokenConnectionError(_)
        | RequestAttemptError::UnableToAllocStreamId => true,
        RequestAttemptError::DbError(db, _) => matches!(
            db,
            DbError::ReadTimeout { .. }
                | DbError::WriteTimeout { .. }
                | DbError::Unavailable { .. }
                | DbError::Overloaded
                | DbError::IsBootstrapping
        ),
        _ => false,
    }
}

impl RetrySession for RetryNumSession {
    fn decide_should_retry(&mut self, info: RequestInfo) -> RetryDecision {
        // Serial (LWT) consistency is never used by us; a retry there could apply twice.
        if self.left == 0 || !info.is_idempotent || info.consistency.is_serial() {
            return RetryDecision::DontRetry;
        }
        if !transient(info.error) {
            return RetryDecision::DontRetry;
        }
        self.left -= 1;
        RetryDecision::RetryNextTarget(None)
    }

    fn reset(&mut self) {
        self.left = self.max;
    }
}
