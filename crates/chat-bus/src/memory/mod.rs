//! The in-memory backend of [`crate::Bus`], for the embedded single-process mode: chat-api, a
//! gateway and the worker run as tasks of one process and share one bus (cloned), so what one
//! clone publishes, enqueues or records is seen by every other clone.
//!
//! Each submodule mirrors one module of `redis/` and the data structure Redis keeps for it:
//! pub/sub channels of users and group chats ([`pubsub`]), the presence sorted sets ([`presence`]), the abuse-limit and
//! revocation keys ([`limits`]), the push job stream with its consumer group ([`jobs`]) and the
//! announce watermarks and replicas' pending sends ([`announce`]) and the channels' recent-event
//! logs ([`recent`]).
//! Expiry follows Redis: a key stops existing once its deadline passes, whether or not anything
//! swept it yet. Time is [`tokio::time::Instant`], so tests can pause and advance it.
//!
//! Locks are parking_lot ones (no poisoning: a panic elsewhere must not take the whole bus down)
//! held for a few map operations and never across an `.await`; every state change that a Redis
//! script or command makes atomically is made under one lock.

mod announce;
mod jobs;
mod limits;
mod presence;
mod pubsub;
mod recent;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backend::{Backend, SubscriptionBackend};
use crate::keys::Keys;
use crate::{BusMessage, ChatId, Result, UserId};

/// What [`crate::Bus::backend_name`] says of an in-memory bus.
pub(crate) const NAME: &str = "memory";

/// Everything one in-memory bus holds; the [`crate::Bus`] clones share it through an `Arc`.
pub(crate) struct MemoryBus {
    /// Names keys as the Redis backend would (the login-failure counters are keyed by them).
    keys: Keys,
    pubsub: Arc<pubsub::PubSub>,
    presence: presence::Presence,
    limits: limits::Limits,
    /// Shared with the consumers' readers.
    jobs: Arc<jobs::Jobs>,
    announce: announce::Announce,
    recent: parking_lot::Mutex<crate::recent::Logs>,
}

impl MemoryBus {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            keys: Keys::new(prefix),
            pubsub: Arc::new(pubsub::PubSub::default()),
            presence: presence::Presence::default(),
            limits: limits::Limits::new(),
            jobs: Arc::new(jobs::Jobs::default()),
            announce: announce::Announce::default(),
            recent: parking_lot::Mutex::new(crate::recent::Logs::started_at(
                crate::recent::now_ms(),
            )),
        }
    }
}

#[async_trait]
impl Backend for MemoryBus {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    async fn publish(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        self.pubsub.publish(users, payload);
        Ok(())
    }

    async fn publish_chat(&self, chat: ChatId, payload: &Bytes) -> Result<()> {
        self.pubsub.publish_chat(chat, payload);
        Ok(())
    }

    async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()> {
        self.limits.revoke(jti, ttl, now());
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool> {
        Ok(self.limits.is_revoked(jti, now()))
    }

    async fn revoked_among(&self, jtis: &[String]) -> Result<Vec<bool>> {
        let now = now();
        Ok(jtis
            .iter()
            .map(|jti| self.limits.is_revoked(jti, now))
            .collect())
    }

    async fn subscriber(
        &self,
    ) -> Result<(
        Arc<dyn SubscriptionBackend>,
        mpsc::UnboundedReceiver<BusMessage>,
    )> {
        let (subscription, rx) = self.pubsub.subscribe();
        Ok((Arc::new(subscription), rx))
    }
}

/// The clock of every deadline here (tokio's, so paused test time applies).
pub(crate) fn now() -> Instant {
    Instant::now()
}

/// `now + ttl` without the overflow panic of `Instant + Duration` (TTLs come from callers and
/// configuration): an unrepresentable deadline becomes "in about a century".
fn deadline(now: Instant, ttl: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    now.checked_add(ttl)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

/// Keys with a deadline, like Redis keys with a TTL: an expired key reads as absent at once, and
/// expired keys are swept whenever the map has doubled since the last sweep, so keys nobody reads
/// again (a revoked token, a job's marker) do not pile up.
struct Expiring<K, V> {
    entries: HashMap<K, (V, Instant)>,
    sweep_above: usize,
}

/// Below this size the map is never swept.
const MIN_SWEEP: usize = 1024;

impl<K: Eq + Hash, V> Default for Expiring<K, V> {
    fn default() -> Self {
        Self {
            entries: HashMap::new(),
            sweep_above: MIN_SWEEP,
        }
    }
}

impl<K: Eq + Hash, V> Expiring<K, V> {
    /// The live value and its deadline.
    fn get<Q>(&self, key: &Q, now: Instant) -> Option<(&V, Instant)>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(value, expires)| (value, *expires))
    }

    /// The live value and its deadline, both changeable; drops the key if it expired.
    fn get_mut<Q>(&mut self, key: &Q, now: Instant) -> Option<(&mut V, &mut Instant)>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        if self.get(key, now).is_none() {
            self.entries.remove(key);
            return None;
        }
        self.entries
            .get_mut(key)
            .map(|(value, expires)| (value, expires))
    }

    fn insert(&mut self, key: K, value: V, expires: Instant, now: Instant) {
        self.entries.insert(key, (value, expires));
        if self.entries.len() > self.sweep_above {
            self.entries.retain(|_, (_, expires)| *expires > now);
            self.sweep_above = (self.entries.len() * 2).max(MIN_SWEEP);
        }
    }

    fn remove<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.entries.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_keys_read_as_absent_and_are_swept() {
        let now = Instant::now();
        let mut map: Expiring<u32, ()> = Expiring::default();
        map.insert(1, (), now + Duration::from_secs(1), now);
        assert!(map.get(&1, now).is_some());
        let later = now + Duration::from_secs(1);
        assert!(
            map.get(&1, later).is_none(),
            "a key is gone at its deadline"
        );
        assert!(map.get_mut(&1, later).is_none());
        assert!(map.entries.is_empty(), "get_mut drops the expired key");

        for key in 0..MIN_SWEEP as u32 {
            map.insert(key, (), now + Duration::from_secs(1), now);
        }
        // Inserting past the threshold after everything expired sweeps it all but the new key.
        map.insert(9999, (), later + Duration::from_secs(1), later);
        assert_eq!(map.entries.len(), 1);
    }

    #[test]
    fn deadlines_saturate() {
        let now = Instant::now();
        assert!(deadline(now, Duration::MAX) > now);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
    }
}
