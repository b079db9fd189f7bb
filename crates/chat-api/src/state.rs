//! Shared state of the API's handlers.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_auth::TokenKeys;
use chat_bus::{Bus, Topic};
use chat_proto::BusEnvelope;
use chat_proto::codec::BusBody;
use chat_store::Store;

use crate::push::PushQueue;
use crate::storage::Storage;

/// What every handler shares, behind one `Arc`: axum clones the state for each request, and the
/// send path clones it again for its tasks, so a clone must be one reference count (the token
/// keys alone hold several heap allocations).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

pub struct Shared {
    pub store: Store,
    pub bus: Bus,
    pub keys: TokenKeys,
    pub token_ttl: Duration,
    /// `CHAT_INTERNAL_KEY`: what gateways present to the internal endpoints.
    pub internal_key: Option<Arc<str>>,
    pub limits: Limits,
    /// Set once migrations have run; until then `/v1` answers 503.
    pub migrated: Arc<AtomicBool>,
    /// New messages on their way to offline recipients' push jobs.
    pub push: PushQueue,
    /// Attachment storage; `None` when it could not be set up (attachments answer 503).
    pub storage: Option<Storage>,
    /// Which chats are groups (see `crate::fanout`).
    pub chat_kinds: crate::fanout::ChatKinds,
    /// This replica's part in announcing what a dead or cut-off send left unpublished.
    pub announcer: crate::announce::Announcer,
}

/// The abuse limits chat-api enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub messages: chat_bus::Bucket,
    pub login_max_failures: u32,
    pub login_window: Duration,
    pub max_json_depth: usize,
    pub trust_forwarded_for: bool,
}

impl AppState {
    pub fn is_migrated(&self) -> bool {
        self.migrated.load(Ordering::Acquire)
    }

    /// Publishes to the users' channels after a commit. A failure is logged and counted, not
    /// returned: the write is durable and clients recover missed events from history.
    pub async fn publish(&self, users: &[u64], body: BusBody) {
        let payload = BusEnvelope::new(body).encode();
        if let Err(e) = self.bus.publish_to_users(users, &payload).await {
            metrics::counter!("chat_bus_publish_failures_total").increment(1);
            tracing::warn!(error = %e, recipients = users.len(), "publishing an event failed");
        }
    }

    /// Publishes to a group chat's channel after a commit; a failure is logged and counted.
    pub async fn publish_to_chat(&self, chat_id: u64, body: BusBody) {
        let payload = BusEnvelope::new(body).encode();
        if let Err(e) = self.bus.publish_to_chat(chat_id, &payload).await {
            metrics::counter!("chat_bus_publish_failures_total").increment(1);
            tracing::warn!(error = %e, chat_id, "publishing a chat's event failed");
        }
    }

    /// [`AppState::publish`] of an event a sync returns, which happened at `at_ms` (the ms its
    /// cursor is made from): it also goes into each user's recent-event log, in the same
    /// command as its publish. After a failure the logs are marked incomplete
    /// (`crate::recent_log`), so a resume cannot take them for complete without it.
    pub async fn publish_logged(&self, users: &[u64], body: BusBody, at_ms: i64) {
        let payload = BusEnvelope::new(body).encode();
        if let Err(e) = self
            .bus
            .publish_logged_to_users(users, &payload, at_ms)
            .await
        {
            metrics::counter!("chat_bus_publish_failures_total").increment(1);
            tracing::warn!(error = %e, recipients = users.len(), "publishing an event failed");
            let topics = users.iter().map(|&user| Topic::User(user)).collect();
            crate::recent_log::invalidate_after_failure(self, topics);
        }
    }

    /// [`AppState::publish_to_chat`] of an event a sync returns, logged like
    /// [`AppState::publish_logged`].
    pub async fn publish_to_chat_logged(&self, chat_id: u64, body: BusBody, at_ms: i64) {
        let payload = BusEnvelope::new(body).encode();
        if let Err(e) = self
            .bus
            .publish_logged_to_chat(chat_id, &payload, at_ms)
            .await
        {
            metrics::counter!("chat_bus_publish_failures_total").increment(1);
            tracing::warn!(error = %e, chat_id, "publishing a chat's event failed");
            crate::recent_log::invalidate_after_failure(self, vec![Topic::Chat(chat_id)]);
        }
    }
}
