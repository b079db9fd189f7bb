//! Contacts (a one-way list per user) and the audience of a user's presence.

use chat_proto::time::Timestamp;
use chat_proto::{Id, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use crate::{Result, Store, StoreError};

impl Store {
    /// Adds `contact_id` to `owner_id`'s contacts; adding twice is fine.
    pub async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        let pool = mysql_or_sqlite!(self, add_contact(owner_id, contact_id));
        if !self.user_exists(contact_id).await? {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT IGNORE INTO contacts (owner_id, contact_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(owner_id)
        .bind(contact_id)
        .bind(chat_proto::time::now_millis().naive_utc())
        .execute(pool)
        .await?;
        Ok(())
    }

    pub async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        let pool = mysql_or_sqlite!(self, remove_contact(owner_id, contact_id));
        sqlx::query("DELETE FROM contacts WHERE owner_id = ? AND contact_id = ?")
            .bind(owner_id)
            .bind(contact_id)
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The owner's contacts with their `last_seen`, by username.
    pub async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        let pool = mysql_or_sqlite!(self, contacts(owner_id));
        let rows: Vec<(u64, String, Option<NaiveDateTime>)> = sqlx::query_as(
            "SELECT u.id, u.username, u.last_seen FROM contacts c JOIN users u ON u.id = c.contact_id \
             WHERE c.owner_id = ? ORDER BY u.username",
        )
        .bind(owner_id)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, username, seen)| (UserRef { id, username }, seen.map(|t| t.and_utc())))
            .collect())
    }
}
