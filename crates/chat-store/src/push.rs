//! Push tokens of users' devices, and what a push notification says about a message.

use chat_proto::Id;
use chat_proto::time::now_millis;

use crate::padded::{bind_padded, padded_len, placeholders};
use crate::{Result, Store};

/// The most users one token query names (also the largest padded list size).
const USERS_PER_LOOKUP: usize = 1024;

/// Who sent a message and in which chat, for a notification's title.
#[derive(Debug, Clone)]
pub struct PushContext {
    pub sender_username: String,
    /// The group's title; `None` for a private chat.
    pub group_title: Option<String>,
}

impl PushContext {
    /// From the sender's name and the chat's `kind` and `title` columns.
    pub(crate) fn new(sender_username: String, kind: &str, title: Option<String>) -> Self {
        Self {
            sender_username,
            group_title: if kind == "group" { title } else { None },
        }
    }
}

impl Store {
    /// Registers (or refreshes) a device token for `user`, taking it away from any other user.
    pub async fn put_push_token(
        &self,
        user: Id,
        token: &str,
        platform: Option<&str>,
    ) -> Result<()> {
        let pool = mysql_or_sqlite!(self, put_push_token(user, token, platform));
        let mut tx = pool.begin().await?;
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

    /// Removes one token of `user` (no error when it was not registered).
    pub async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        let pool = mysql_or_sqlite!(self, delete_push_token(user, token));
        sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND token = ?")
            .bind(user)
            .bind(token.as_bytes())
            .execute(pool)
            .await?;
        Ok(())
    }

    /// The tokens of each of `users`, as (user, token) pairs ordered by user, then token.
    ///
    /// The api asks for the offline recipients of many messages at once, so `users` can be long:
    /// it is looked up in chunks whose `IN` lists are padded to a few sizes, so that each size
    /// stays one prepared statement on a connection.
    pub async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        let pool = mysql_or_sqlite!(self, push_tokens_of(users));
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
            let rows = bind_padded(query, chunk, padded).fetch_all(pool).await?;
            tokens.extend(
                rows.into_iter()
                    .map(|(user, token)| (user, String::from_utf8_lossy(&token).into_owned())),
            );
        }
        Ok(tokens)
    }

    /// The sender's username and the chat's title (groups only).
    pub async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        let pool = mysql_or_sqlite!(self, push_context(sender, chat_id));
        let (sender_username, kind, title): (String, String, Option<String>) = sqlx::query_as(
            "SELECT u.username, c.kind, c.title FROM users u JOIN chats c ON c.id = ? \
             WHERE u.id = ?",
        )
        .bind(chat_id)
        .bind(sender)
        .fetch_one(pool)
        .await?;
        Ok(PushContext::new(sender_username, &kind, title))
    }
}
