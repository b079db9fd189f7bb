//! Admission: how many requests of each class run at once, how many wait, and for how long.
//!
//! A reconnect storm (a gateway killed with thousands of clients) turns into thousands of
//! `GET /v1/sync` at once, each several join queries. Unbounded, they took every pooled database
//! connection and most of the CPU, and sends, reads and receipts timed out behind them. So the
//! heavy reads and the writes are admitted separately, each class through a gate of its own:
//!
//! - **sync**: `GET /v1/sync` and message history (`GET /v1/chats/{id}/messages`): by default
//!   half of the pool connections the send writers leave, so a storm of replays can never take
//!   the connections the writes need;
//! - **write**: sends, edits, deletes, read and delivered watermarks, and the gateways' presence
//!   and delivered batches: by default four times the pool, since sends wait for a batch writer
//!   rather than hold a connection, and more of them at once make larger batches. Its purpose is
//!   to bound memory, not to shape the load.
//!
//! Other routes (login, chat lists, contacts, attachments) are cheap or rare and are not gated.
//!
//! A request takes a permit at once if one is free; otherwise it joins the class's wait queue
//! (a `tokio::sync::Semaphore`, which hands permits out in arrival order) and waits for a permit
//! up to the class's deadline. Only when it cannot be served in time — the queue is full, or the
//! deadline passed — does it get 503 `unavailable` with `Retry-After`, before its handler ran
//! (so a refused request did nothing and may be retried whatever it is). A client that hangs up
//! while queued leaves the queue (its future is dropped).
//!
//! Why not tower's `ConcurrencyLimit` + `LoadShed` + `Timeout`: `LoadShed` refuses as soon as
//! the limit is reached (no waiting at all), and `ConcurrencyLimit` + `Timeout` waits without a
//! bound on the number of waiters and times the handler too, so a slow sync that had been
//! admitted would be cut off mid-query. "Wait up to a deadline in a bounded queue, then 503" is
//! a semaphore, a counter and a `tokio::time::timeout` around the acquire.
//!
//! Metrics, per class (`class="sync"|"write"`): `chat_api_admission_in_flight`,
//! `chat_api_admission_queued` (gauges), `chat_api_admission_rejected_total` with
//! `reason="queue_full"|"deadline"`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Gauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::ApiError;

/// A class of requests with a gate of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Sync,
    Write,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Sync => "sync",
            Class::Write => "write",
        }
    }
}

/// One class's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClassLimits {
    /// Requests of the class running at once; 0 admits everything (no gate).
    pub concurrency: usize,
    /// Requests that may wait for a permit; beyond, refused at once.
    pub queue: usize,
    /// How long a request waits for a permit before it is refused.
    pub wait: Duration,
}

/// Every class's settings, and the `Retry-After` a refusal carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub sync: ClassLimits,
    pub write: ClassLimits,
    pub retry_after: Duration,
}

/// Why a request was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the wait queue is full")]
    QueueFull,
    #[error("no permit within the deadline")]
    Deadline,
}

impl Refused {
    fn reason(self) -> &'static str {
        match self {
            Refused::QueueFull => "queue_full",
            Refused::Deadline => "deadline",
        }
    }
}

/// The gates of every class, built once per process.
#[derive(Clone)]
pub struct Admission {
    pub sync: Arc<Gate>,
    pub write: Arc<Gate>,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Self {
            sync: Arc::new(Gate::new(Class::Sync, limits.sync, limits.retry_after)),
            write: Arc::new(Gate::new(Class::Write, limits.write, limits.retry_after)),
        }
    }
}

/// One class's permits and wait queue.
pub struct Gate {
    class: Class,
    limits: ClassLimits,
    /// `None` when the class is not limited (concurrency 0).
    permits: Option<Arc<Semaphore>>,
    /// Requests waiting for a permit now.
    waiting: AtomicUsize,
    retry_after: Duration,
    in_flight_gauge: Gauge,
    queued_gauge: Gauge,
    queue_full_total: Counter,
    deadline_total: Counter,
}

/// A running request's permit; its class's in-flight count drops when it does.
pub struct Permit {
    _permit: Option<OwnedSemaphorePermit>,
    in_flight_gauge: Gauge,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.in_flight_gauge.decrement(1.0);
    }
}

/// Counts a request as queued for as long as it is (also when its future is dropped).
struct Waiting<'a>(&'a Gate);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.queued_gauge.decrement(1.0);
    }
}

impl Gate {
    pub fn new(class: Class, limits: ClassLimits, retry_after: Duration) -> Self {
        let name = class.name();
        Self {
            class,
            limits,
            permits: (limits.concurrency > 0).then(|| Arc::new(Semaphore::new(limits.concurrency))),
            waiting: AtomicUsize::new(0),
            retry_after,
            in_flight_gauge: metrics::gauge!("chat_api_admission_in_flight", "class" => name),
            queued_gauge: metrics::gauge!("chat_api_admission_queued", "class" => name),
            queue_full_total: metrics::counter!(
                "chat_api_admission_rejected_total", "class" => name, "reason" => "queue_full"
            ),
            deadline_total: metrics::counter!(
                "chat_api_admission_rejected_total", "class" => name, "reason" => "deadline"
            ),
        }
    }

    /// Requests waiting for a permit now.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// A permit now, or after waiting in the queue up to the class's deadline.
    pub async fn admit(&self) -> Result<Permit, Refused> {
        let Some(permits) = &self.permits else {
            return Ok(self.running(None));
        };
        if let Ok(permit) = permits.clone().try_acquire_owned() {
            return Ok(self.running(Some(permit)));
        }
        // Join the queue unless it is full; the check and the increment are one step, so
        // concurrent arrivals cannot overfill it.
        let joined = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |waiting| {
                (waiting < self.limits.queue).then_some(waiting + 1)
            });
        if joined.is_err() {
            self.queue_full_total.increment(1);
            return Err(Refused::QueueFull);
        }
        self.queued_gauge.increment(1.0);
        let waiting = Waiting(self);
        let acquired =
            tokio::time::timeout(self.limits.wait, permits.clone().acquire_owned()).await;
        drop(waiting);
        match acquired {
            Ok(Ok(permit)) => Ok(self.running(Some(permit))),
            // The semaphore is never closed; a closed one admits nobody either way.
            Ok(Err(_)) | Err(_) => {
                self.deadline_total.increment(1);
                Err(Refused::Deadline)
            }
        }
    }

    fn running(&self, permit: Option<OwnedSemaphorePermit>) -> Permit {
        self.in_flight_gauge.increment(1.0);
        Permit {
            _permit: permit,
            in_flight_gauge: self.in_flight_gauge.clone(),
        }
    }

    /// 503 `unavailable` with `Retry-After` (whole seconds, at least 1).
    fn refusal(&self, refused: Refused) -> Response {
        let secs = self.retry_after.as_secs().max(1);
        let mut response = ApiError::unavailable(format!(
            "too many {} requests in progress ({refused}), retry after {secs} s",
            self.class.name()
        ))
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    }
}

/// The middleware of one class's routes: the handler runs holding a permit.
pub async fn admit(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    match gate.admit().await {
        Ok(permit) => {
            let response = next.run(req).await;
            drop(permit);
            response
        }
        Err(refused) => {
            tracing::debug!(
                class = gate.class.name(),
                reason = refused.reason(),
                "request refused by admission"
            );
            gate.refusal(refused)
        }
    }
}

#[cfg(test)]
mod tests;
