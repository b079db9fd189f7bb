//! Contacts: a one-way list per user.

use async_trait::async_trait;
use chat_proto::time::{Timestamp, now_millis};
use chat_proto::{Id, UserRef};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, key};
use crate::users::UserQueries;
use crate::{Result, Store, StoreError};

/// A contact and when it was last seen.
#[derive(FromRow)]
struct ContactRow {
    id: u64,
    username: String,
    last_seen: Option<NaiveDateTime>,
}

/// The contacts' part of the backend contract (`crate::backend`), the same SQL on both
/// databases.
#[async_trait]
pub(crate) trait ContactQueries {
    async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()>;
    async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()>;
    async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>>;
}

#[async_trait]
impl<D, DB> ContactQueries for D
where
    D: Dialect<Db = DB> + UserQueries,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> ContactRow: FromRow<'r, DB::Row>,
{
    async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        if !self.user_exists(contact_id).await? {
            return Err(StoreError::NotFound);
        }
        sqlx::query(&format!(
            "{} INTO contacts (owner_id, contact_id, created_at) VALUES (?, ?, ?)",
            D::INSERT_IGNORE
        ))
        .bind(key(owner_id))
        .bind(key(contact_id))
        .bind(Stamp(now_millis()))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        sqlx::query("DELETE FROM contacts WHERE owner_id = ? AND contact_id = ?")
            .bind(key(owner_id))
            .bind(key(contact_id))
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        let rows: Vec<ContactRow> = sqlx::query_as(
            "SELECT u.id, u.username, u.last_seen FROM contacts c \
             JOIN users u ON u.id = c.contact_id WHERE c.owner_id = ? ORDER BY u.username",
        )
        .bind(key(owner_id))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let user = UserRef {
                    id: row.id,
                    username: row.username,
                };
                (user, row.last_seen.map(|t| t.and_utc()))
            })
            .collect())
    }
}

impl Store {
    /// Adds `contact_id` to `owner_id`'s contacts; adding twice is fine.
    pub async fn add_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        self.backend.add_contact(owner_id, contact_id).await
    }

    pub async fn remove_contact(&self, owner_id: Id, contact_id: Id) -> Result<()> {
        self.backend.remove_contact(owner_id, contact_id).await
    }

    /// The owner's contacts with their `last_seen`, by username.
    pub async fn contacts(&self, owner_id: Id) -> Result<Vec<(UserRef, Option<Timestamp>)>> {
        self.backend.contacts(owner_id).await
    }
}
