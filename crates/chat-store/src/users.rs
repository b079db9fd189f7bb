//! Users: registration, credential lookup, search, and `last_seen`.

use async_trait::async_trait;
use chat_proto::time::{Timestamp, now_millis};
use chat_proto::{Id, Me, UserRef};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, UniqueKey, bound, key};
use crate::{Result, Store, StoreError};

/// A presence change as stored: its time, and who should hear about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub last_seen: Timestamp,
    pub audience: Vec<Id>,
}

/// What login needs to check a password.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub user: UserRef,
    pub password_hash: String,
}

/// A user as others see them.
#[derive(FromRow)]
struct UserRow {
    id: u64,
    username: String,
}

impl From<UserRow> for UserRef {
    fn from(UserRow { id, username }: UserRow) -> Self {
        Self { id, username }
    }
}

#[derive(FromRow)]
struct CredentialsRow {
    id: u64,
    username: String,
    password_hash: String,
}

#[derive(FromRow)]
struct MeRow {
    id: u64,
    username: String,
    email: Option<String>,
    created_at: NaiveDateTime,
}

/// The users' part of the backend contract (`crate::backend`), the same SQL on both databases.
#[async_trait]
pub(crate) trait UserQueries {
    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef>;
    async fn credentials(&self, username: &str) -> Result<Option<Credentials>>;
    async fn me(&self, user_id: Id) -> Result<Me>;
    async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>>;
    async fn user_exists(&self, user_id: Id) -> Result<bool>;
}

#[async_trait]
impl<D, DB> UserQueries for D
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> UserRow: FromRow<'r, DB::Row>,
    for<'r> CredentialsRow: FromRow<'r, DB::Row>,
    for<'r> MeRow: FromRow<'r, DB::Row>,
    for<'r> (u64,): FromRow<'r, DB::Row>,
{
    async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef> {
        let inserted = sqlx::query(
            "INSERT INTO users (username, email, password_hash, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(username)
        .bind(email)
        .bind(password_hash)
        .bind(Stamp(now_millis()))
        .execute(self.writer())
        .await;
        match inserted {
            Ok(done) => Ok(UserRef {
                id: D::inserted_id(&done)?,
                username: username.to_string(),
            }),
            Err(e) if D::is_duplicate(&e, UniqueKey::Username) => {
                Err(StoreError::Conflict("username is taken"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let row: Option<CredentialsRow> =
            sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(self.reader())
                .await?;
        Ok(row.map(|row| Credentials {
            user: UserRef {
                id: row.id,
                username: row.username,
            },
            password_hash: row.password_hash,
        }))
    }

    async fn me(&self, user_id: Id) -> Result<Me> {
        let row: MeRow =
            sqlx::query_as("SELECT id, username, email, created_at FROM users WHERE id = ?")
                .bind(key(user_id))
                .fetch_one(self.reader())
                .await?;
        Ok(Me {
            id: row.id,
            username: row.username,
            email: row.email,
            created_at: row.created_at.and_utc(),
        })
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        let pattern = format!("{}%", escape_like(prefix));
        let rows: Vec<UserRow> = sqlx::query_as(&format!(
            "SELECT id, username FROM users WHERE username LIKE ?{} ORDER BY username LIMIT ?",
            D::LIKE_ESCAPE
        ))
        .bind(pattern)
        .bind(bound(limit.into()))
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(UserRef::from).collect())
    }

    async fn user_exists(&self, user_id: Id) -> Result<bool> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM users WHERE id = ?")
            .bind(key(user_id))
            .fetch_optional(self.reader())
            .await?;
        Ok(row.is_some())
    }
}

impl Store {
    pub async fn create_user(
        &self,
        username: &str,
        email: Option<&str>,
        password_hash: &str,
    ) -> Result<UserRef> {
        self.backend
            .create_user(username, email, password_hash)
            .await
    }

    pub async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        self.backend.credentials(username).await
    }

    pub async fn me(&self, user_id: Id) -> Result<Me> {
        self.backend.me(user_id).await
    }

    /// Users whose name starts with `prefix` (already lower-cased by the caller).
    pub async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        self.backend.search_users(prefix, limit).await
    }

    pub async fn user_exists(&self, user_id: Id) -> Result<bool> {
        self.backend.user_exists(user_id).await
    }

    /// A user's first socket anywhere opened or last one closed: stores `last_seen` and returns
    /// it with everyone who should hear about it (people who have the user as a contact, the
    /// user's own contacts, and the user's chat peers).
    ///
    /// On MySQL, changes that arrive together share one UPDATE and one SELECT
    /// (`crate::mysql::seen_batch`), and a change is refused at once with
    /// [`crate::StoreError::Busy`] when too many are already waiting.
    pub async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        self.backend.mark_seen(user_id).await
    }
}

/// Escapes LIKE wildcards with a backslash (`Dialect::LIKE_ESCAPE`).
pub(crate) fn escape_like(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for c in raw.chars() {
        if matches!(c, '\\' | '%' | '_') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests;
