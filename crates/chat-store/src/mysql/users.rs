//! Users on MySQL: registration, credential lookup, search.

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Id, Me, UserRef};
use sqlx::types::chrono::NaiveDateTime;

use super::MySqlBackend;
use crate::error::is_duplicate_of;
use crate::users::{Credentials, UserQueries, escape_like};
use crate::{Result, StoreError};

#[async_trait]
impl UserQueries for MySqlBackend {
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
        .bind(now_millis().naive_utc())
        .execute(&self.pool)
        .await;
        match inserted {
            Ok(done) => Ok(UserRef {
                id: done.last_insert_id(),
                username: username.to_string(),
            }),
            Err(e) if is_duplicate_of(&e, "uq_users_username") => {
                Err(StoreError::Conflict("username is taken"))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn credentials(&self, username: &str) -> Result<Option<Credentials>> {
        let row: Option<(u64, String, String)> =
            sqlx::query_as("SELECT id, username, password_hash FROM users WHERE username = ?")
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(id, username, password_hash)| Credentials {
            user: UserRef { id, username },
            password_hash,
        }))
    }

    async fn me(&self, user_id: Id) -> Result<Me> {
        let (id, username, email, created_at): (u64, String, Option<String>, NaiveDateTime) =
            sqlx::query_as("SELECT id, username, email, created_at FROM users WHERE id = ?")
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(Me {
            id,
            username,
            email,
            created_at: created_at.and_utc(),
        })
    }

    async fn search_users(&self, prefix: &str, limit: u32) -> Result<Vec<UserRef>> {
        let pattern = format!("{}%", escape_like(prefix));
        let rows: Vec<(u64, String)> = sqlx::query_as(
            "SELECT id, username FROM users WHERE username LIKE ? ORDER BY username LIMIT ?",
        )
        .bind(pattern)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, username)| UserRef { id, username })
            .collect())
    }

    async fn user_exists(&self, user_id: Id) -> Result<bool> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM users WHERE id = ?")
            .bind(user_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
