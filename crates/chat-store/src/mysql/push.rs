//! Push tokens of users' devices on MySQL, and what a push notification says about a message.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::now_millis;

use super::MySqlBackend;
use super::padded::{bind_padded, padded_len, placeholders};
use crate::Result;
use crate::push::{PushContext, PushQueries};

/// The most users one token query names (also the largest padded list size).
const USERS_PER_LOOKUP: usize = 1024;

#[async_trait]
impl PushQueries for MySqlBackend {
    async fn put_push_token(&self, user: Id, token: &str, platform: Option<&str>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM push_tokens WHERE token = ? AND user_id <> ?")
            .bind(token.as_bytes())
            .bind(user)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO push_tokens (user_id, token, platform, updated_at) VALUES (?, ?, ?, ?) \
             ON DUPLICATE KEY UPDATE platform = VALUES(platform), updated_at = VALUES(updated_at)",
        )
        .bind(user)
        .bind(token.as_bytes())
        .bind(platform)
        .bind(now_millis().naive_utc())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND token = ?")
            .bind(user)
            .bind(token.as_bytes())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The tokens of each of `users`, as (user, token) pairs ordered by user, then token.
    ///
    async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let mut tokens = Vec::new();
        for chunk in users.chunks(USERS_PER_LOOKUP) {
            let padded = padded_len(chunk.len());
            let sql = format!(
                "SELECT user_id, token FROM push_tokens WHERE user_id IN ({}) \
                 ORDER BY user_id, token",
                placeholders(padded, "?", ", ")
            );
            let query = sqlx::query_as::<_, (u64, Vec<u8>)>(&sql);
            let rows = bind_padded(query, chunk, padded)
                .fetch_all(&self.pool)
                .await?;
            tokens.extend(
                rows.into_iter()
                    .map(|(user, token)| (user, String::from_utf8_lossy(&token).into_owned())),
            );
        }
        Ok(tokens)
    }

    async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        let (sender_username, kind, title): (String, String, Option<String>) = sqlx::query_as(
            "SELECT u.username, c.kind, c.title FROM users u JOIN chats c ON c.id = ? \
             WHERE u.id = ?",
        )
        .bind(chat_id)
        .bind(sender)
        .fetch_one(&self.pool)
        .await?;
        Ok(PushContext::new(sender_username, &kind, title))
    }
}
