//! Push tokens of users' devices on SQLite, and what a push notification says about a message.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::now_millis;
use sqlx::{QueryBuilder, Sqlite as Db};

use super::{SqliteBackend, key, time, unsigned};
use crate::Result;
use crate::push::PushContext;
use crate::push::PushQueries;

#[async_trait]
impl PushQueries for SqliteBackend {
    async fn put_push_token(&self, user: Id, token: &str, platform: Option<&str>) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM push_tokens WHERE token = ? AND user_id <> ?")
            .bind(token.as_bytes())
            .bind(key(user))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO push_tokens (user_id, token, platform, updated_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (user_id, token) DO UPDATE \
             SET platform = excluded.platform, updated_at = excluded.updated_at",
        )
        .bind(key(user))
        .bind(token.as_bytes())
        .bind(platform)
        .bind(time(now_millis()))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND token = ?")
            .bind(key(user))
            .bind(token.as_bytes())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let mut tokens = Vec::new();
        // Well under SQLite's limit on a statement's parameters.
        for chunk in users.chunks(1024) {
            let mut query = QueryBuilder::<Db>::new(
                "SELECT user_id, token FROM push_tokens WHERE user_id IN (",
            );
            let mut list = query.separated(", ");
            for user in chunk {
                list.push_bind(key(*user));
            }
            query.push(") ORDER BY user_id, token");
            let rows: Vec<(i64, Vec<u8>)> = query.build_query_as().fetch_all(&self.reader).await?;
            for (user, token) in rows {
                tokens.push((
                    unsigned(user)?,
                    String::from_utf8_lossy(&token).into_owned(),
                ));
            }
        }
        Ok(tokens)
    }

    async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        let (sender_username, kind, title): (String, String, Option<String>) = sqlx::query_as(
            "SELECT u.username, c.kind, c.title FROM users u JOIN chats c ON c.id = ? \
             WHERE u.id = ?",
        )
        .bind(key(chat_id))
        .bind(key(sender))
        .fetch_one(&self.reader)
        .await?;
        Ok(PushContext::new(sender_username, &kind, title))
    }
}
