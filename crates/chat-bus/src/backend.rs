//! The contract of a bus backend: what [`crate::Bus`] asks of Redis and of memory alike, one
//! trait per concern so that each backend implements a concern in the file that holds its data
//! (`redis/presence.rs`, `memory/presence.rs`, …).
//!
//! [`crate::Bus`] checks what every backend would check the same way (nothing to publish, a
//! disabled limit, an empty batch) before it calls a backend, so the methods here only see real
//! work. Both backends give the same answers to the same calls: return values, expiry (Redis
//! keys with a TTL; deadlines in memory) and consumer-group semantics. The in-memory one is
//! tested against that contract through the public API (`tests/memory.rs`), the Redis one
//! against a real server and cluster (`tests/presence_redis.rs`, the end-to-end suite).
//!
//! The traits are used as trait objects (`Arc<dyn Backend>`), so their async methods go
//! through `async_trait`: see the crate documentation for why not an enum.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chat_proto::PushJob;
use tokio::sync::mpsc;

use crate::recent::RecentLogConfig;
use crate::{
    Bucket, BusMessage, ChatId, DeadLetter, Delivery, PushStats, Result, Topic, UserId, Verdict,
};

/// Everything a bus does; implemented by `redis::RedisBus` and `memory::MemoryBus`.
#[async_trait]
pub(crate) trait Backend:
    PresenceBackend + LimitsBackend + JobsBackend + AnnounceBackend + RecentLogBackend + Send + Sync
{
    /// For logs: `standalone`, `cluster` or `memory`.
    fn name(&self) -> &'static str;

    async fn ping(&self) -> Result<()>;

    /// Hands `payload` to every subscriber of each user's channel (`users` is not empty).
    async fn publish(&self, users: &[UserId], payload: &Bytes) -> Result<()>;

    /// Hands `payload` to every subscriber of the group chat's channel.
    async fn publish_chat(&self, chat: ChatId, payload: &Bytes) -> Result<()>;

    /// Marks a token id as revoked for `ttl` (at least a millisecond).
    async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()>;

    async fn is_revoked(&self, jti: &str) -> Result<bool>;

    /// Which of these token ids are revoked, in order.
    async fn revoked_among(&self, jtis: &[String]) -> Result<Vec<bool>>;

    /// A new subscription with no channel yet, and the receiver of what it is sent.
    async fn subscriber(
        &self,
    ) -> Result<(
        std::sync::Arc<dyn SubscriptionBackend>,
        mpsc::UnboundedReceiver<BusMessage>,
    )>;
}

/// One subscription's channels (see [`crate::Subscriber`]). `topics` is never empty.
#[async_trait]
pub(crate) trait SubscriptionBackend: Send + Sync {
    /// Resolves once messages published to each topic's channel reach this subscription.
    async fn subscribe(&self, topics: &[Topic]) -> Result<()>;

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()>;
}

/// The presence registry (see [`crate::Bus::presence_connect_many`]): per user, the nodes that
/// hold the user's sockets, each entry expiring unless its node's heartbeat refreshes it.
#[async_trait]
pub(crate) trait PresenceBackend {
    /// Adds `node`'s entry for each user; per user, whether none was live before.
    async fn presence_connect_many(
        &self,
        users: &[UserId],
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>>;

    /// Removes `node`'s entry for each user; per user, whether that removed the last one.
    async fn presence_disconnect_many(&self, users: &[UserId], node: &str) -> Result<Vec<bool>>;

    /// Refreshes the node's deadline and the entries it still has (never re-creating one).
    async fn presence_heartbeat(&self, node: &str, users: &[UserId], ttl: Duration) -> Result<()>;

    async fn presence_leave(&self, node: &str) -> Result<()>;

    /// Removes the nodes whose heartbeat expired (each once, whoever else reaps) and their
    /// entries; the users that thereby went offline.
    async fn reap_dead_nodes(&self) -> Result<Vec<UserId>>;

    /// Whether each user has a live entry (`users` is not empty).
    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>>;
}

/// The abuse limits shared by every replica. Disabled limits never reach a backend.
#[async_trait]
pub(crate) trait LimitsBackend {
    /// Takes one token from the user's bucket, refilled on the backend's own clock.
    async fn take_message_token(&self, user: UserId, bucket: Bucket) -> Result<Verdict>;

    /// How long logins stay refused once `max_failures` (at least 1) were counted.
    async fn login_blocked(
        &self,
        username: &str,
        ip: &str,
        max_failures: u32,
    ) -> Result<Option<Duration>>;

    /// Counts a failure; the count lives for `window` from the first one.
    async fn note_login_failure(&self, username: &str, ip: &str, window: Duration) -> Result<()>;

    async fn clear_login_failures(&self, username: &str, ip: &str) -> Result<()>;
}

/// The push job stream with its consumer group (see `jobs.rs` for the semantics).
#[async_trait]
pub(crate) trait JobsBackend {
    async fn enqueue_push(&self, jobs: &[PushJob], max_len: u64) -> Result<()>;

    async fn push_ensure_group(&self) -> Result<()>;

    /// The reading side of the consumer named `consumer`.
    fn push_reader(&self, consumer: &str) -> Box<dyn PushReader>;

    async fn push_touch(&self, consumer: &str, entry_id: &str) -> Result<()>;

    async fn push_ack(&self, entry_id: &str) -> Result<()>;

    async fn push_is_done(&self, job_id: &str) -> Result<bool>;

    /// `false` if the marker existed already.
    async fn push_mark_done(&self, job_id: &str, ttl: Duration) -> Result<bool>;

    async fn push_attempt(&self, job_id: &str, ttl: Duration) -> Result<u64>;

    /// Moves the entry to the dead-letter stream, then acknowledges it.
    async fn push_dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u64,
    ) -> Result<()>;

    async fn push_forget_consumer(&self, consumer: &str) -> Result<bool>;

    async fn push_stats(&self) -> Result<PushStats>;

    /// The dead-letter stream, where the backend has no other way to look at it.
    fn dead_letters(&self) -> Option<Vec<DeadLetter>>;
}

/// What one consumer reads: new entries, and entries reclaimed from consumers that stopped.
#[async_trait]
pub(crate) trait PushReader: Send {
    /// Up to `count` entries never delivered, waiting up to `block` for one.
    async fn read_new(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>>;

    /// Takes over up to `count` entries idle for `min_idle`, a page of the pending list per
    /// call (the reader keeps the cursor).
    async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Reclaimed>;
}

/// A page of reclaimed entries.
pub(crate) struct Reclaimed {
    pub(crate) claimed: Vec<Delivery>,
    /// Pending entries found trimmed from the stream (and dropped from the pending list).
    pub(crate) deleted: usize,
}

/// The announce watermarks, pending sends and replica heartbeats (see `announce.rs`).
#[async_trait]
pub(crate) trait AnnounceBackend {
    async fn announced(&self, chat_id: u64) -> Result<Option<u64>>;

    async fn advance_announced(&self, chat_id: u64, seq: u64) -> Result<()>;

    async fn mark_pending(&self, replica: &str, chat_id: u64) -> Result<()>;

    async fn clear_pending(&self, replica: &str, chat_id: u64) -> Result<()>;

    /// `change` is `PendingChange::encode`'s.
    async fn mark_change(&self, replica: &str, id: u64, change: &str) -> Result<()>;

    async fn clear_change(&self, replica: &str, id: u64) -> Result<()>;

    /// Id → encoded change.
    async fn pending_changes(&self, replica: &str) -> Result<Vec<(u64, String)>>;

    async fn replica_heartbeat(&self, replica: &str, ttl: Duration) -> Result<()>;

    async fn dead_replicas(&self) -> Result<Vec<String>>;

    async fn pending_chats(&self, replica: &str) -> Result<Vec<u64>>;

    /// Also drops the replica's late publishes.
    async fn forget_replica(&self, replica: &str) -> Result<()>;

    async fn mark_late(&self, replica: &str, id: u64, until_ms: i64) -> Result<()>;

    async fn clear_late(&self, replica: &str, id: u64) -> Result<()>;

    /// Drops the entries that expired by `now_ms`, and counts the rest.
    async fn late_publishes(&self, now_ms: i64) -> Result<u64>;
}

/// The recent-event log of each channel (see `recent.rs` for what a log covers).
#[async_trait]
pub(crate) trait RecentLogBackend {
    /// For each topic (not empty): appends `payload` (event time `at_ms`) to its log, trims the
    /// log to `config`'s bounds at `now_ms`, then publishes `payload` on its channel; each
    /// topic's three steps at once, so no subscriber gets an envelope its log does not hold.
    async fn publish_logged(
        &self,
        topics: &[Topic],
        payload: &Bytes,
        at_ms: i64,
        now_ms: i64,
        config: RecentLogConfig,
    ) -> Result<()>;

    /// Raises each topic's complete-from to `floor_ms` (where the topic has a log).
    async fn invalidate_recent(&self, topics: &[Topic], floor_ms: i64) -> Result<()>;

    /// The entries of every topic scored `from_ms` or later; `None` if any topic's log does
    /// not cover everything from `from_ms` on.
    async fn recent(&self, topics: &[Topic], from_ms: i64) -> Result<Option<Vec<Bytes>>>;
}
