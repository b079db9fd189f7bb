//! Push tokens of users' devices, and what a push notification says about a message.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::now_millis;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, key};
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

#[derive(FromRow)]
struct TokenRow {
    user_id: u64,
    token: Vec<u8>,
}

#[derive(FromRow)]
struct ContextRow {
    username: String,
    kind: String,
    title: Option<String>,
}

/// The push tokens' part of the backend contract (`crate::backend`), the same SQL on both
/// databases but for the upsert (`Dialect::UPSERT_PUSH_TOKEN`).
#[async_trait]
pub(crate) trait PushQueries {
    async fn put_push_token(&self, user: Id, token: &str, platform: Option<&str>) -> Result<()>;
    async fn delete_push_token(&self, user: Id, token: &str) -> Result<()>;
    async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>>;
    async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext>;
}

#[async_trait]
impl<D, DB> PushQueries for D
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q [u8]: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> TokenRow: FromRow<'r, DB::Row>,
    for<'r> ContextRow: FromRow<'r, DB::Row>,
{
    async fn put_push_token(&self, user: Id, token: &str, platform: Option<&str>) -> Result<()> {
        let mut tx = self.writer().begin_with(D::BEGIN_WRITE).await?;
        sqlx::query("DELETE FROM push_tokens WHERE token = ? AND user_id <> ?")
            .bind(token.as_bytes())
            .bind(key(user))
            .execute(&mut *tx)
            .await?;
        sqlx::query(D::UPSERT_PUSH_TOKEN)
            .bind(key(user))
            .bind(token.as_bytes())
            .bind(platform)
            .bind(Stamp(now_millis()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        sqlx::query("DELETE FROM push_tokens WHERE user_id = ? AND token = ?")
            .bind(key(user))
            .bind(token.as_bytes())
            .execute(self.writer())
            .await?;
        Ok(())
    }

    async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        let mut users = users.to_vec();
        users.sort_unstable();
        users.dedup();
        let users: Vec<i64> = users.into_iter().map(key).collect();
        let mut tokens = Vec::new();
        for chunk in users.chunks(USERS_PER_LOOKUP) {
            let padded = padded_len(chunk.len());
            let sql = format!(
                "SELECT user_id, token FROM push_tokens WHERE user_id IN ({}) \
                 ORDER BY user_id, token",
                placeholders(padded, "?", ", ")
            );
            let rows: Vec<TokenRow> = bind_padded(sqlx::query_as(&sql), chunk, padded)
                .fetch_all(self.reader())
                .await?;
            tokens.extend(rows.into_iter().map(|row| {
                let token = String::from_utf8_lossy(&row.token).into_owned();
                (row.user_id, token)
            }));
        }
        Ok(tokens)
    }

    async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        let row: ContextRow = sqlx::query_as(
            "SELECT u.username, c.kind, c.title FROM users u JOIN chats c ON c.id = ? \
             WHERE u.id = ?",
        )
        .bind(key(chat_id))
        .bind(key(sender))
        .fetch_one(self.reader())
        .await?;
        Ok(PushContext::new(row.username, &row.kind, row.title))
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
        self.backend.put_push_token(user, token, platform).await
    }

    /// Removes one token of `user` (no error when it was not registered).
    pub async fn delete_push_token(&self, user: Id, token: &str) -> Result<()> {
        self.backend.delete_push_token(user, token).await
    }

    /// The tokens of each of `users`, as (user, token) pairs ordered by user, then token.
    ///
    /// The api asks for the offline recipients of many messages at once, so `users` can be long:
    /// it is looked up in chunks whose `IN` lists are padded to a few sizes, so that each size
    /// stays one prepared statement on a connection.
    pub async fn push_tokens_of(&self, users: &[Id]) -> Result<Vec<(Id, String)>> {
        self.backend.push_tokens_of(users).await
    }

    /// The sender's username and the chat's title (groups only).
    pub async fn push_context(&self, sender: Id, chat_id: Id) -> Result<PushContext> {
        self.backend.push_context(sender, chat_id).await
    }
}
