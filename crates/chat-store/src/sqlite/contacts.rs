//! Contacts on SQLite (a one-way list per user) and the audience of a user's presence.

use async_trait::async_trait;
use chat_proto::time::{Timestamp, now_millis};
use chat_proto::{Id, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use super::{SqliteBackend, ids, key, time, unsigned};
use crate::contacts::ContactQueries;
use crate::users::UserQueries;
use crate::{Result, StoreError};

#[async_trait]
impl ContactQueries for SqliteBackend {
    async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        if !self.user_exists(contact_id).await? {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT OR IGNORE INTO contacts (owner_id, contact_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(key(owner_id))
        .bind(key(contact_id))
        .bind(time(now_millis()))
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        sqlx::query("DELETE FROM contacts WHERE owner_id = ? AND contact_id = ?")
            .bind(key(owner_id))
            .bind(key(contact_id))
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        let rows: Vec<(i64, String, Option<NaiveDateTime>)> = sqlx::query_as(
            "SELECT u.id, u.username, u.last_seen FROM contacts c JOIN users u ON u.id = c.contact_id \
             WHERE c.owner_id = ? ORDER BY u.username",
        )
        .bind(key(owner_id))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(id, username, seen)| {
                Ok((
                    UserRef {
                        id: unsigned(id)?,
                        username,
                    },
                    seen.map(|t| t.and_utc()),
                ))
            })
            .collect()
    }
}

impl SqliteBackend {
    /// Everyone who should hear about `user_id` going online or offline (`Store::mark_seen`).
    pub(super) async fn presence_audience(&self, user_id: Id) -> Result<Vec<Id>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT owner_id FROM contacts WHERE contact_id = ? \
             UNION SELECT contact_id FROM contacts WHERE owner_id = ? \
             UNION SELECT peer.user_id FROM chat_members me \
                   JOIN chat_members peer ON peer.chat_id = me.chat_id \
                   WHERE me.user_id = ? AND peer.user_id <> ?",
        )
        .bind(key(user_id))
        .bind(key(user_id))
        .bind(key(user_id))
        .bind(key(user_id))
        .fetch_all(&self.reader)
        .await?;
        ids(rows)
    }
}
