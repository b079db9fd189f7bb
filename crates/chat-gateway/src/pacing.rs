//! Replay pacing: how many heavy reads (sync and history pages) this node asks chat-api for at
//! once, and how a refused one is tried again.
//!
//! When a gateway dies, its clients all resume on the others within seconds, and each resume is
//! a `GET /v1/sync`. Sent as they come, thousands at once, they filled chat-api's queue and
//! timed out together, and a failed replay makes the client reconnect and ask again. So a node
//! sends at most `CHAT_REPLAY_CONCURRENCY` of them at once (the others wait here, in arrival
//! order, costing a parked task each), and one that chat-api refused with 503 — its admission
//! queue was full, or the database unreachable — is asked again after the answer's
//! `Retry-After` plus a jittered delay from the shared backoff, so the nodes that were refused
//! together do not come back together. A page gives up once `CHAT_REPLAY_DEADLINE_MS` has passed
//! since it was first wanted (its wait here included); the client then gets the error frame it
//! got before.
//!
//! Sends, reads and receipts never wait here: they are the requests a replay storm must not
//! slow down. chat-api's own admission refuses them only when its write queue is full, which
//! happens before anything ran; the client (`api_client`) tries such a refusal again after
//! `Retry-After` while the retry still fits in `WRITE_RETRY_BUDGET`.

use std::time::{Duration, Instant};

use chat_ops::{Backoff, Delays};
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a refused send, read or receipt may still be tried again after its first attempt:
/// below the gateway's 15 s request timeout, and well within a client's patience for an ack.
pub const WRITE_RETRY_BUDGET: Duration = Duration::from_secs(10);

/// The longest `Retry-After` taken at its word; a longer one is cut to this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// The jitter added to a `Retry-After`: from 250 ms, doubling with each refusal up to 4 s, each
/// drawn from the upper half of its range.
const JITTER: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(4));

/// This node's limit on heavy reads in flight to chat-api.
pub struct Pacing {
    permits: Semaphore,
    deadline: Duration,
}

impl Pacing {
    /// At most `concurrency` (at least 1) at once; a page is given up after `deadline`.
    pub fn new(concurrency: usize, deadline: Duration) -> Self {
        Self {
            permits: Semaphore::new(concurrency.max(1)),
            deadline,
        }
    }

    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// A turn to ask chat-api, waiting for one until `until`; `None` if that passed first.
    pub async fn turn(&self, until: Instant) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Some(permit);
        }
        let waiting = metrics::gauge!("chat_gateway_replay_waiting");
        waiting.increment(1.0);
        let turn = tokio::time::timeout_at(until.into(), self.permits.acquire()).await;
        waiting.decrement(1.0);
        // The semaphore is never closed.
        turn.ok().and_then(Result::ok)
    }
}

/// A fresh sequence of jitter delays, one per refused request.
pub fn jitter() -> Delays {
    JITTER.delays()
}

/// How long to wait before asking again after a refusal that said `retry_after` (none: the
/// jitter alone), or `None` when the next attempt would start after `until`.
pub fn retry_wait(
    retry_after: Option<Duration>,
    jitter: &mut Delays,
    now: Instant,
    until: Instant,
) -> Option<Duration> {
    let wait = retry_after.unwrap_or_default().min(MAX_RETRY_AFTER) + jitter.next_delay();
    (now + wait < until).then_some(wait)
}

#[cfg(test)]
mod tests;
