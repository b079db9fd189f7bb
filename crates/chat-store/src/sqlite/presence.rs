//! Presence on SQLite: a user's `last_seen`, and who should hear about it.

use chat_proto::Id;
use chat_proto::time::now_millis;

use super::SqliteBackend;
use crate::Result;
use crate::dialect::{Stamp, key};
use crate::users::Seen;

impl SqliteBackend {
    /// Stores `last_seen` now and returns it with the user's audience (`Store::mark_seen`).
    pub(super) async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        let last_seen = now_millis();
        // Two changes of one user can reach the writer in the other order than they took their
        // times; the later time stays (the times are fixed-width text, so they compare as such).
        sqlx::query(
            "UPDATE users SET last_seen = ?1 WHERE id = ?2 \
             AND (last_seen IS NULL OR last_seen < ?1)",
        )
        .bind(Stamp(last_seen))
        .bind(key(user_id))
        .execute(&self.writer)
        .await?;
        let audience = self.presence_audience(user_id).await?;
        Ok(Seen {
            last_seen,
            audience,
        })
    }

    /// Everyone who should hear about `user_id` going online or offline: the users who have it
    /// as a contact, its own contacts, and its private chats' peers (not its groups' members:
    /// see `crate::mysql::seen_batch`).
    async fn presence_audience(&self, user_id: Id) -> Result<Vec<Id>> {
        let rows: Vec<(u64,)> = sqlx::query_as(
            "SELECT owner_id FROM contacts WHERE contact_id = ? \
             UNION SELECT contact_id FROM contacts WHERE owner_id = ? \
             UNION SELECT peer.user_id FROM chat_members me \
                   JOIN chats c ON c.id = me.chat_id AND c.kind = 'private' \
                   JOIN chat_members peer ON peer.chat_id = me.chat_id \
                   WHERE me.user_id = ? AND peer.user_id <> ?",
        )
        .bind(key(user_id))
        .bind(key(user_id))
        .bind(key(user_id))
        .bind(key(user_id))
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }
}
