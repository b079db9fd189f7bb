//! The push-notification queue: a stream read through one consumer group.
//!
//! chat-api appends one entry per (message, offline recipient, device token). chat-worker reads
//! it through the consumer group `push`, acknowledges what it delivered, takes over entries a
//! dead worker left pending (after a minimum idle time), and moves entries that failed too often
//! to a dead-letter stream. Delivery is idempotent by job id: a "done" marker (with a TTL) is
//! written after a successful delivery and checked before every attempt, so an entry reclaimed
//! after it was delivered is acknowledged, not resent. On Redis this is a Redis Stream
//! (`redis/jobs.rs`); in memory, a stream with the same semantics (`memory/jobs.rs`).

use std::time::Duration;

use chat_proto::PushJob;

use crate::backend::PushReader;
use crate::{Bus, BusError, Result};

/// The consumer group every worker joins.
pub const PUSH_GROUP: &str = "push";

/// How long a consumer may block in one read of new entries.
const MAX_BLOCK: Duration = Duration::from_secs(5);

/// One stream entry handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream entry id (`1700000000000-0`), what XACK takes.
    pub entry_id: String,
    /// The job id from the entry (empty if the entry had none).
    pub job_id: String,
    /// The job, or why it could not be decoded.
    pub job: std::result::Result<PushJob, String>,
    /// The raw JSON, kept for the dead-letter stream.
    pub raw: String,
}

/// Counts for the worker's gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushStats {
    /// Entries in the stream (delivered and acknowledged ones too, until trimmed).
    pub length: u64,
    /// Read by a worker and not acknowledged yet.
    pub pending: u64,
    /// Not read by any worker yet (Redis ≥ 7; 0 when unknown).
    pub lag: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
}

/// A job moved to the dead-letter stream: the delivery as it was read, and why it was given up.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub delivery: Delivery,
    pub reason: String,
    pub attempts: u64,
}

/// A job as the stream stores it.
pub(crate) fn encode(job: &PushJob) -> Result<String> {
    serde_json::to_string(job).map_err(|e| BusError::Config(format!("encoding a push job: {e}")))
}

impl Bus {
    /// Appends jobs to the stream, trimming it to about `max_len` entries (acknowledged entries
    /// are only removed by trimming).
    pub async fn enqueue_push(&self, jobs: &[PushJob], max_len: u64) -> Result<()> {
        self.backend.enqueue_push(jobs, max_len).await
    }

    /// Creates the consumer group (and the stream) if missing. The group starts at the
    /// beginning of the stream, so jobs added before the first worker ever ran are delivered.
    pub async fn push_ensure_group(&self) -> Result<()> {
        self.backend.push_ensure_group().await
    }

    /// A consumer named `consumer` in the `push` group.
    pub fn push_consumer(&self, consumer: &str) -> PushConsumer {
        PushConsumer {
            consumer: consumer.to_string(),
            reader: self.backend.push_reader(consumer),
        }
    }

    /// Resets the idle time of an entry this consumer holds (XCLAIM … JUSTID), so that other
    /// workers do not reclaim a job that is still being retried.
    pub async fn push_touch(&self, consumer: &str, entry_id: &str) -> Result<()> {
        self.backend.push_touch(consumer, entry_id).await
    }

    pub async fn push_ack(&self, entry_id: &str) -> Result<()> {
        self.backend.push_ack(entry_id).await
    }

    /// Whether the job was delivered already (its "done" marker exists).
    pub async fn push_is_done(&self, job_id: &str) -> Result<bool> {
        self.backend.push_is_done(job_id).await
    }

    /// Writes the "done" marker; `false` if it existed already.
    pub async fn push_mark_done(&self, job_id: &str, ttl: Duration) -> Result<bool> {
        self.backend.push_mark_done(job_id, ttl).await
    }

    /// Counts one more delivery attempt of a job (shared by every worker) and returns the count.
    pub async fn push_attempt(&self, job_id: &str, ttl: Duration) -> Result<u64> {
        self.backend.push_attempt(job_id, ttl).await
    }

    /// Moves an entry to the dead-letter stream, then acknowledges it. A crash in between leaves
    /// it pending; the next worker finds the attempts used up and dead-letters it again, so the
    /// dead-letter stream may (rarely) hold a job twice, never zero times.
    pub async fn push_dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u64,
    ) -> Result<()> {
        self.backend
            .push_dead_letter(delivery, reason, attempts)
            .await
    }

    /// Removes a consumer from the group if it holds no pending entry (on a clean shutdown, so
    /// names of departed workers do not pile up). `true` if it was removed. Safe once the
    /// consumer stopped reading: its pending list can then only shrink (reclaiming moves entries
    /// to the claimer).
    pub async fn push_forget_consumer(&self, consumer: &str) -> Result<bool> {
        self.backend.push_forget_consumer(consumer).await
    }

    /// The dead-letter stream of an in-memory bus, oldest first (`None` on Redis, where it is
    /// the `P:{push}:dead` stream); the embedded mode has no redis-cli to look at it with.
    pub fn memory_dead_letters(&self) -> Option<Vec<DeadLetter>> {
        self.backend.dead_letters()
    }

    /// Stream length, pending, lag and dead letters, for the worker's gauges.
    pub async fn push_stats(&self) -> Result<PushStats> {
        self.backend.push_stats().await
    }
}

/// One worker's reading side of the group: new entries, and entries reclaimed from consumers
/// that stopped acknowledging.
pub struct PushConsumer {
    consumer: String,
    reader: Box<dyn PushReader>,
}

impl PushConsumer {
    pub fn name(&self) -> &str {
        &self.consumer
    }

    /// Up to `count` entries never delivered to anyone, waiting up to `block` (at most 5 s) for
    /// one.
    pub async fn read_new(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        self.reader.read_new(count, block.min(MAX_BLOCK)).await
    }

    /// Takes over up to `count` entries that another consumer has held for at least `min_idle`
    /// (XAUTOCLAIM), walking the pending list a page per call.
    pub async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Vec<Delivery>> {
        let reclaimed = self.reader.reclaim(min_idle, count).await?;
        // Entries trimmed away while pending: nothing is left to deliver.
        if reclaimed.deleted > 0 {
            tracing::warn!(
                count = reclaimed.deleted,
                "pending push jobs were trimmed from the stream before delivery"
            );
        }
        Ok(reclaimed.claimed)
    }
}
