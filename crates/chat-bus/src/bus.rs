//! [`Bus`], the handle every service holds: a cheap clone of one backend. Each method checks
//! what no backend needs to see (nothing to do, a disabled limit), records the bus metrics and
//! hands the rest to the backend. The methods of each concern are in that concern's file
//! (`presence.rs`, `limits.rs`, `jobs.rs`, `announce.rs`, `recent.rs`); here are pub/sub and revocation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::backend::Backend;
use crate::memory::MemoryBus;
use crate::redis::RedisBus;
use crate::{BusConfig, BusMessage, ChatId, Result, Subscriber, UserId};

/// A cheap-to-clone handle for commands: publishing, revocation, presence, limits, push jobs.
#[derive(Clone)]
pub struct Bus {
    pub(crate) backend: Arc<dyn Backend>,
    /// The recent-event log's bounds (`recent.rs`).
    pub(crate) recent: crate::RecentLogConfig,
}

impl Bus {
    /// A Redis bus (a single server or a cluster). Connections open on first use, so a service
    /// can start before Redis.
    pub fn new(config: &BusConfig) -> Result<Self> {
        Ok(Self {
            backend: Arc::new(RedisBus::new(config)?),
            recent: config.recent_log,
        })
    }

    /// A fresh in-memory bus for the embedded single-process mode. Every clone of it shares the
    /// same state, so services running in one process must be handed clones of this one value.
    /// `prefix` only names things the way the Redis keys would be named; nothing is shared with
    /// another memory bus of the same prefix.
    pub fn memory(prefix: &str) -> Self {
        Self {
            backend: Arc::new(MemoryBus::new(prefix)),
            recent: crate::RecentLogConfig::default(),
        }
    }

    /// This bus with other bounds for the recent-event log (the embedded mode's flags).
    pub fn with_recent_log(mut self, recent: crate::RecentLogConfig) -> Self {
        self.recent = recent;
        self
    }

    /// What is behind this bus, for logs: `standalone`, `cluster` (Redis) or `memory`.
    pub fn backend_name(&self) -> &'static str {
        self.backend.name()
    }

    /// Whether this is an in-memory bus ([`Bus::memory`]), which `REDIS_URL` does not concern.
    pub fn is_memory(&self) -> bool {
        self.backend.name() == crate::memory::NAME
    }

    pub async fn ping(&self) -> Result<()> {
        self.backend.ping().await
    }

    /// Publishes one payload to the channel of each user (sharded PUBLISH on a cluster, so each
    /// message goes only to the shard that owns the channel).
    pub async fn publish_to_users(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        self.backend.publish(users, payload).await?;
        metrics::histogram!("chat_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("chat_bus_published_total").increment(users.len() as u64);
        Ok(())
    }

    /// Publishes one payload to a group chat's channel: one PUBLISH (SPUBLISH on a cluster)
    /// whatever the number of members; every gateway holding members gets it once.
    pub async fn publish_to_chat(&self, chat: ChatId, payload: &Bytes) -> Result<()> {
        let started = Instant::now();
        self.backend.publish_chat(chat, payload).await?;
        metrics::histogram!("chat_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("chat_bus_published_total").increment(1);
        Ok(())
    }

    /// Marks a token id as revoked until `ttl` has passed (the token's remaining lifetime).
    pub async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()> {
        self.backend.revoke(jti, ttl).await
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        self.backend.is_revoked(jti).await
    }

    /// Which of these token ids are revoked, in order (one pipeline, or concurrent commands on
    /// a cluster).
    pub async fn revoked_among(&self, jtis: &[String]) -> Result<Vec<bool>> {
        self.backend.revoked_among(jtis).await
    }

    /// A subscription of a gateway's own (see [`Subscriber`]): on Redis, a dedicated connection
    /// (one per master on a cluster).
    pub async fn subscriber(&self) -> Result<(Subscriber, mpsc::UnboundedReceiver<BusMessage>)> {
        let (subscription, rx) = self.backend.subscriber().await?;
        Ok((Subscriber::new(subscription), rx))
    }
}
