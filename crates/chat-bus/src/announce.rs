//! What lets any chat-api replica announce a message that another one committed and never
//! published (it died in between, or its COMMIT got no answer).
//!
//! - The chat's announce watermark: the highest seq whose `new_message` was published. A publisher
//!   holding the chat's send lock compares it with the seq it is about to publish and publishes
//!   the gap from the database first; it advances the watermark with its own publish.
//! - Each api replica's pending sends: per chat, how many of its sends are between "about to be
//!   stored" and "published". Marked before the send reaches the database, cleared after.
//! - Each api replica's pending changes: an edit or deletion between "about to be written" and
//!   "published", with what it changes, so that another replica can announce it.
//! - Each replica's heartbeat. A replica whose heartbeat lapsed is dead: another replica takes its
//!   pending chats, fills each chat's gap under the chat's lock, announces its pending changes
//!   that the database shows, and forgets it.
//! - Late publishes: one entry per write whose event may reach its channels later than a
//!   cursor's overlap after the event's time (its commit is slow, or its outcome unknown), until
//!   it is published. While any is registered, a sync is not answered from the recent-event log,
//!   which holds only what was published.
//!
//! chat-api's `announce` module holds the logic; here is only the shared state.

use std::time::Duration;

use crate::{Bus, Result};

/// An edit or deletion that a replica is writing and has not yet published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    pub chat_id: u64,
    pub message_id: u64,
    /// The new text of an edit; `None` for a deletion.
    pub edit: Option<String>,
}

impl PendingChange {
    /// `chat:message:d` or `chat:message:e:<text>`, as stored.
    pub(crate) fn encode(&self) -> String {
        match &self.edit {
            None => format!("{}:{}:d", self.chat_id, self.message_id),
            Some(text) => format!("{}:{}:e:{text}", self.chat_id, self.message_id),
        }
    }

    /// The inverse of `encode`; `None` for anything else.
    pub(crate) fn decode(stored: &str) -> Option<Self> {
        let mut parts = stored.splitn(4, ':');
        let chat_id = parts.next()?.parse().ok()?;
        let message_id = parts.next()?.parse().ok()?;
        let edit = match (parts.next()?, parts.next()) {
            ("d", None) => None,
            ("e", Some(text)) => Some(text.to_string()),
            _ => return None,
        };
        Some(Self {
            chat_id,
            message_id,
            edit,
        })
    }
}

impl Bus {
    /// The chat's announce watermark; `None` if never set or expired.
    pub async fn announced(&self, chat_id: u64) -> Result<Option<u64>> {
        self.backend.announced(chat_id).await
    }

    /// Raises the chat's announce watermark to `seq` (never lowers it).
    pub async fn advance_announced(&self, chat_id: u64, seq: u64) -> Result<()> {
        self.backend.advance_announced(chat_id, seq).await
    }

    /// Counts one send of `replica` into `chat_id` as pending.
    pub async fn mark_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        self.backend.mark_pending(replica, chat_id).await
    }

    /// Counts one send of `replica` into `chat_id` as done; the chat leaves the replica's pending
    /// set when none is left.
    pub async fn clear_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        self.backend.clear_pending(replica, chat_id).await
    }

    /// Registers change `id` of `replica` as pending until [`Bus::clear_change`].
    pub async fn mark_change(&self, replica: &str, id: u64, change: &PendingChange) -> Result<()> {
        self.backend
            .mark_change(replica, id, &change.encode())
            .await
    }

    /// Unregisters a pending change (published, or known not written).
    pub async fn clear_change(&self, replica: &str, id: u64) -> Result<()> {
        self.backend.clear_change(replica, id).await
    }

    /// The pending changes of `replica` by id (entries that do not decode are skipped).
    pub async fn pending_changes(&self, replica: &str) -> Result<Vec<(u64, PendingChange)>> {
        let stored = self.backend.pending_changes(replica).await?;
        Ok(stored
            .into_iter()
            .filter_map(|(id, stored)| Some((id, PendingChange::decode(&stored)?)))
            .collect())
    }

    /// Says `replica` is alive for `ttl`, and registers it.
    pub async fn replica_heartbeat(&self, replica: &str, ttl: Duration) -> Result<()> {
        self.backend.replica_heartbeat(replica, ttl).await
    }

    /// Registered replicas whose heartbeat lapsed.
    pub async fn dead_replicas(&self) -> Result<Vec<String>> {
        self.backend.dead_replicas().await
    }

    /// The chats in which `replica` has pending sends.
    pub async fn pending_chats(&self, replica: &str) -> Result<Vec<u64>> {
        self.backend.pending_chats(replica).await
    }

    /// Drops a dead replica's pending sends and changes, its late publishes and its registration.
    pub async fn forget_replica(&self, replica: &str) -> Result<()> {
        self.backend.forget_replica(replica).await
    }

    /// Registers write `id` of `replica` as a late publish, for `ttl` at most (should nothing
    /// clear it: a replica that dies has its entries dropped when another one takes over).
    pub async fn mark_late(&self, replica: &str, id: u64, ttl: Duration) -> Result<()> {
        let until_ms = crate::recent::now_ms()
            .saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 4));
        self.backend.mark_late(replica, id, until_ms).await
    }

    /// Unregisters a late publish (it was published, or given up).
    pub async fn clear_late(&self, replica: &str, id: u64) -> Result<()> {
        self.backend.clear_late(replica, id).await
    }

    /// How many late publishes are registered, every replica's together.
    pub async fn late_publishes(&self) -> Result<u64> {
        self.backend.late_publishes(crate::recent::now_ms()).await
    }
}

#[cfg(test)]
mod tests {
    use super::PendingChange;

    #[test]
    fn pending_changes_survive_their_encoding() {
        let changes = [
            PendingChange {
                chat_id: 7,
                message_id: 42,
                edit: None,
            },
            PendingChange {
                chat_id: 7,
                message_id: 43,
                edit: Some("a: text with: colons".into()),
            },
            PendingChange {
                chat_id: 1,
                message_id: 2,
                edit: Some(String::new()),
            },
        ];
        for change in changes {
            assert_eq!(PendingChange::decode(&change.encode()), Some(change));
        }
        for bad in [
            "",
            "7",
            "7:42",
            "7:42:x",
            "7:42:d:extra",
            "x:42:d",
            "7:42:e",
        ] {
            assert_eq!(PendingChange::decode(bad), None, "{bad:?}");
        }
    }
}
