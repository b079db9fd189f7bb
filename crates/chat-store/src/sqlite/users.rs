//! Users on SQLite: registration, credential lookup, search, and `last_seen`.

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Id, Me, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use super::{SqliteBackend, is_unique_violation, key, time, unsigned};
use crate::users::UserQueries;
use crate::users::{Credentials, Seen, escape_like};
use crate::{Result, StoreError};

#[async_trait]
impl UserQueries for SqliteBackend {
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
        .bind(time(now_millis()))
        .execute(&self.writer)
        .await;
        match inserted {
            Ok(done) => Ok(UserRef {
                id: unsigned(done.last_insert_rowid())?,
                username: username.to_string(),
            }),
            Err(e) if is_unique_violation(&e, "users.username") => {
                Err(StoreError::Conflict("username is taken"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let row: Option<(i64, String, String)> =
            sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.reader)
                .await?;
        row.map(|(id, username, password_hash)| {
            Ok(Credentials {
                user: UserRef {
                    id: unsigned(id)?,
                    username,
                },
                password_hash,
            })
        })
        .transpose()
    }

    async fn me(&self, user_id: Id) -> Result<Me> {
        let (id, username, email, created_at): (i64, String, Option<String>, NaiveDateTime) =
            sqlx::query_as("SELECT id, username, email, created_at FROM users WHERE id = ?")
                .bind(key(user_id))
                .fetch_one(&self.reader)
                .await?;
        Ok(Me {
            id: unsigned(id)?,
            username,
            email,
            created_at: created_at.and_utc(),
        })
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        // SQLite's LIKE has no escape character unless told; ASCII case-insensitive as on MySQL.
        let pattern = format!("{}%", escape_like(prefix));
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, username FROM users WHERE username LIKE ? ESCAPE '\\' \
             ORDER BY username LIMIT ?",
        )
        .bind(pattern)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await?;
        rows.into_iter()
            .map(|(id, username)| {
                Ok(UserRef {
                    id: unsigned(id)?,
                    username,
                })
            })
            .collect()
    }

    async fn user_exists(&self, user_id: Id) -> Result<bool> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM users WHERE id = ?")
            .bind(key(user_id))
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.is_some())
    }
}

impl SqliteBackend {
    pub(super) async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        let last_seen = now_millis();
        // Two changes of one user can reach the writer in the other order than they took their
        // times; the later time stays (the times are fixed-width text, so they compare as such).
        sqlx::query(
            "UPDATE users SET last_seen = ?1 WHERE id = ?2 \
             AND (last_seen IS NULL OR last_seen < ?1)",
        )
        .bind(time(last_seen))
        .bind(key(user_id))
        .execute(&self.writer)
        .await?;
        let audience = self.presence_audience(user_id).await?;
        Ok(Seen {
            last_seen,
            audience,
        })
    }
}
