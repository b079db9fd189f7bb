//! Push delivery: consumers in the `push` group read jobs (XREADGROUP), take over jobs a dead
//! worker left pending (XAUTOCLAIM), POST each to the push endpoint as an FCM-v1-shaped body,
//! retry failures with exponential backoff and jitter, acknowledge successes, and dead-letter
//! jobs that fail `max_attempts` times or are refused for good (4xx other than 408/429).
//!
//! Idempotency: before each attempt the job's "done" marker is checked, and after a 2xx it is
//! written (SET NX, TTL) before the XACK. A job reclaimed after delivery therefore is acked, not
//! sent again. What remains is the window between the endpoint's 2xx and the marker write: a
//! worker killed exactly there leaves a delivered job unmarked, and its successor sends it again.
//! The job id travels in the `X-Chat-Job-Id` header and in `data.job_id`, so a receiver can drop
//! that repeat; end to end this is at-least-once delivery made exactly-once by the id.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chat_bus::{Bus, Delivery};
use chat_ops::Backoff;
use chat_proto::PushJob;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::config::PushArgs;

/// Jobs a consumer reads or reclaims at a time.
const BATCH: usize = 1;
/// How long XREADGROUP blocks waiting for a job.
const READ_BLOCK: Duration = Duration::from_secs(1);
/// Pause after a Redis error before trying again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// Shared by the consumers of one process.
pub struct Pusher {
    bus: Bus,
    http: reqwest::Client,
    url: String,
    args: PushArgs,
}

/// The outcome of one HTTP attempt.
enum Attempt {
    Delivered,
    /// Worth retrying: a network error, a timeout, 5xx, 408 or 429.
    Retry(String),
    /// Retrying cannot help (e.g. 400, 401, 404 for an unregistered token).
    Refused(String),
}

impl Pusher {
    pub fn new(bus: Bus, url: String, args: PushArgs) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(args.timeout()).build()?;
        Ok(Self {
            bus,
            http,
            url,
            args,
        })
    }

    /// The request body: FCM HTTP v1 `messages:send` shape (data values are strings there).
    fn body(job: &PushJob) -> serde_json::Value {
        json!({
            "message": {
                "token": job.token,
                "notification": {"title": job.title, "body": job.body},
                "data": {
                    "job_id": job.id,
                    "chat_id": job.chat_id.to_string(),
                    "message_id": job.message_id.to_string(),
                    "sender_id": job.sender_id.to_string(),
                    "type": job.kind,
                },
            }
        })
    }

    async fn send(&self, job: &PushJob) -> Attempt {
        let started = Instant::now();
        let mut request = self
            .http
            .post(&self.url)
            .header("X-Chat-Job-Id", &job.id)
            .json(&Self::body(job));
        if let Some(auth) = &self.args.push_auth_header {
            request = request.header(reqwest::header::AUTHORIZATION, auth);
        }
        let result = request.send().await;
        metrics::histogram!("chat_worker_push_send_seconds")
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(resp) if resp.status().is_success() => Attempt::Delivered,
            Ok(resp) => {
                let status = resp.status();
                let reason = format!("push endpoint answered {status}");
                if status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429 {
                    Attempt::Retry(reason)
                } else {
                    Attempt::Refused(reason)
                }
            }
            Err(e) => Attempt::Retry(format!("push request failed: {e}")),
        }
    }

    /// The delay before retry number `attempt` (1-based): base·2^(attempt-1), capped, with
    /// "equal jitter" (uniform in [d/2, d]) so workers retrying together spread out.
    fn backoff(&self, attempt: u64) -> Duration {
        Backoff::new(self.args.backoff_base(), self.args.backoff_max()).delay(attempt)
    }

    /// Handles one job until it is delivered, dead-lettered, or left pending (shutdown during a
    /// backoff, or Redis failing).
    async fn process(&self, consumer: &str, delivery: Delivery, shutdown: &CancellationToken) {
        let job = match &delivery.job {
            Ok(job) => job.clone(),
            Err(e) => {
                let reason = format!("malformed job: {e}");
                self.dead_letter(&delivery, &reason, 0).await;
                return;
            }
        };
        if let Err(e) = self.deliver(consumer, &delivery, &job, shutdown).await {
            metrics::counter!("chat_worker_redis_errors_total").increment(1);
            tracing::warn!(error = %e, job_id = %job.id, "redis failed mid-job; the job stays pending");
        }
    }

    async fn deliver(
        &self,
        consumer: &str,
        delivery: &Delivery,
        job: &PushJob,
        shutdown: &CancellationToken,
    ) -> Result<(), chat_bus::BusError> {
        let ttl = self.args.done_ttl();
        loop {
            if self.bus.push_is_done(&job.id).await? {
                self.bus.push_ack(&delivery.entry_id).await?;
                metrics::counter!("chat_worker_push_duplicates_skipped_total").increment(1);
                tracing::info!(job_id = %job.id, "job was delivered before; acknowledged only");
                return Ok(());
            }
            let attempt = self.bus.push_attempt(&job.id, ttl).await?;
            if attempt > self.args.max_attempts {
                // Attempts were used up by an earlier holder that died before dead-lettering.
                self.dead_letter(delivery, "attempts exhausted", attempt - 1)
                    .await;
                return Ok(());
            }
            metrics::counter!("chat_worker_push_attempts_total").increment(1);
            match self.send(job).await {
                Attempt::Delivered => {
                    self.bus.push_mark_done(&job.id, ttl).await?;
                    self.bus.push_ack(&delivery.entry_id).await?;
                    metrics::counter!("chat_worker_push_deliveries_total").increment(1);
                    tracing::debug!(job_id = %job.id, attempt, "push delivered");
                    return Ok(());
                }
                Attempt::Refused(reason) => {
                    self.dead_letter(delivery, &reason, attempt).await;
                    return Ok(());
                }
                Attempt::Retry(reason) if attempt >= self.args.max_attempts => {
                    self.dead_letter(delivery, &reason, attempt).await;
                    return Ok(());
                }
                Attempt::Retry(reason) => {
                    metrics::counter!("chat_worker_push_retries_total").increment(1);
                    let delay = self.backoff(attempt);
                    tracing::info!(job_id = %job.id, attempt, delay_ms = delay.as_millis() as u64, %reason, "push failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = shutdown.cancelled() => {
                            tracing::info!(job_id = %job.id, "shutting down; the job stays pending for another worker");
                            return Ok(());
                        }
                    }
                    // Still ours: reset the idle time so no other worker reclaims it.
                    self.bus.push_touch(consumer, &delivery.entry_id).await?;
                }
            }
        }
    }

    async fn dead_letter(&self, delivery: &Delivery, reason: &str, attempts: u64) {
        match self.bus.push_dead_letter(delivery, reason, attempts).await {
            Ok(()) => {
                metrics::counter!("chat_worker_push_dead_letters_total").increment(1);
                tracing::warn!(job_id = %delivery.job_id, attempts, %reason, "push job moved to the dead-letter stream");
            }
            Err(e) => {
                metrics::counter!("chat_worker_redis_errors_total").increment(1);
                tracing::warn!(error = %e, job_id = %delivery.job_id, "dead-lettering failed; the job stays pending");
            }
        }
    }
}

/// One consumer: reclaims jobs idle past the limit now and then, otherwise reads new ones, and
/// handles them one at a time until shutdown.
pub async fn consume(pusher: Arc<Pusher>, name: String, shutdown: CancellationToken) {
    let min_idle = pusher.args.reclaim_idle();
    let reclaim_every = (min_idle / 2).min(Duration::from_secs(5));
    let mut consumer = pusher.bus.push_consumer(&name);
    let mut group_ready = false;
    let mut last_reclaim: Option<Instant> = None;
    while !shutdown.is_cancelled() {
        if !group_ready {
            match pusher.bus.push_ensure_group().await {
                Ok(()) => group_ready = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the push consumer group yet");
                    pause(&shutdown).await;
                    continue;
                }
            }
        }
        let mut batch = Vec::new();
        if last_reclaim.is_none_or(|at| at.elapsed() >= reclaim_every) {
            last_reclaim = Some(Instant::now());
            match consumer.reclaim(min_idle, BATCH).await {
                Ok(claimed) => {
                    if !claimed.is_empty() {
                        metrics::counter!("chat_worker_push_reclaimed_total")
                            .increment(claimed.len() as u64);
                        tracing::info!(consumer = %name, jobs = claimed.len(), "reclaimed jobs left by another consumer");
                        // More may be waiting: look again on the next turn.
                        last_reclaim = None;
                    }
                    batch = claimed;
                }
                Err(e) => {
                    redis_error(&e, &mut group_ready);
                    pause(&shutdown).await;
                    continue;
                }
            }
        }
        if batch.is_empty() {
            match consumer.read_new(BATCH, READ_BLOCK).await {
                Ok(read) => batch = read,
                Err(e) => {
                    redis_error(&e, &mut group_ready);
                    pause(&shutdown).await;
                    continue;
                }
            }
        }
        for delivery in batch {
            pusher.process(&name, delivery, &shutdown).await;
        }
    }
    match pusher.bus.push_forget_consumer(&name).await {
        Ok(true) => tracing::info!(consumer = %name, "consumer stopped and left the group"),
        Ok(false) => {
            tracing::info!(consumer = %name, "consumer stopped; its pending jobs wait for another worker")
        }
        Err(e) => {
            tracing::warn!(consumer = %name, error = %e, "consumer stopped; leaving the group failed")
        }
    }
}

fn redis_error(e: &chat_bus::BusError, group_ready: &mut bool) {
    metrics::counter!("chat_worker_redis_errors_total").increment(1);
    tracing::warn!(error = %e, "reading push jobs failed");
    // The stream (and its group) may have been deleted: create it again.
    if e.to_string().contains("NOGROUP") {
        *group_ready = false;
    }
}

async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(ERROR_PAUSE) => {}
        () = shutdown.cancelled() => {}
    }
}

/// Refreshes the queue gauges every two seconds.
pub async fn sample_gauges(bus: Bus, shutdown: CancellationToken) {
    loop {
        match bus.push_stats().await {
            Ok(stats) => {
                metrics::gauge!("chat_worker_push_stream_length").set(stats.length as f64);
                metrics::gauge!("chat_worker_push_pending").set(stats.pending as f64);
                metrics::gauge!("chat_worker_push_lag").set(stats.lag as f64);
                metrics::gauge!("chat_worker_push_queue_length")
                    .set((stats.lag + stats.pending) as f64);
                metrics::gauge!("chat_worker_push_dead_letter_length").set(stats.dead as f64);
            }
            Err(e) => tracing::debug!(error = %e, "sampling queue gauges failed"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
