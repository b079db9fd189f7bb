//! Contacts on MySQL (a one-way list per user).

use async_trait::async_trait;
use chat_proto::time::Timestamp;
use chat_proto::{Id, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use super::MySqlBackend;
use crate::contacts::ContactQueries;
use crate::users::UserQueries;
use crate::{Result, StoreError};

#[async_trait]
impl ContactQueries for MySqlBackend {
    async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        if !self.user_exists(contact_id).await? {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT IGNORE INTO contacts (owner_id, contact_id, created_at) VALUES (?, ?, ?)",
        )
        .bind(owner_id)
        .bind(contact_id)
        .bind(chat_proto::time::now_millis().naive_utc())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        sqlx::query("DELETE FROM contacts WHERE owner_id = ? AND contact_id = ?")
            .bind(owner_id)
            .bind(contact_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        let rows: Vec<(u64, String, Option<NaiveDateTime>)> = sqlx::query_as(
            "SELECT u.id, u.username, u.last_seen FROM contacts c JOIN users u ON u.id = c.contact_id \
             WHERE c.owner_id = ? ORDER BY u.username",
        )
        .bind(owner_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, username, seen)| (UserRef { id, username }, seen.map(|t| t.and_utc())))
            .collect())
    }
}
