//! The chats' named locks on MySQL (`GET_LOCK`): a send holds its chat's from before its
//! transaction until its publish is done, on every api replica, so that a chat's events leave in
//! seq order. The send writers take them in batches (`super::send_batch`); [`MySqlChatLock`]
//! takes one for `Store::in_send_order`.

use async_trait::async_trait;
use chat_proto::Id;
use sqlx::pool::PoolConnection;
use sqlx::{MySql, MySqlPool};

use crate::backend::ChatLock;
use crate::{Result, StoreError};

/// How long a send waits for another send in the same chat before answering "busy".
pub(super) const CHAT_LOCK_WAIT_SECS: i64 = 10;

/// The name of a chat's lock, after the database's name (locks are server-wide; the server
/// takes the first 64 characters).
pub fn chat_lock_name(chat_id: Id) -> String {
    format!("/chat/{chat_id}")
}

/// A chat's named lock, held by the session of `conn`.
pub(super) struct MySqlChatLock {
    conn: PoolConnection<MySql>,
    chat_id: Id,
}

impl MySqlChatLock {
    /// Takes the chat's named lock on a connection of its own, waiting up to
    /// `CHAT_LOCK_WAIT_SECS`.
    pub(super) async fn take(pool: &MySqlPool, chat_id: Id) -> Result<Self> {
        let mut conn = pool.acquire().await?;
        let (granted,): (Option<i64>,) =
            sqlx::query_as("SELECT GET_LOCK(LEFT(CONCAT(DATABASE(), ?), 64), ?)")
                .bind(chat_lock_name(chat_id))
                .bind(CHAT_LOCK_WAIT_SECS)
                .fetch_one(&mut *conn)
                .await?;
        if granted != Some(1) {
            return Err(StoreError::Busy("the chat is busy, retry"));
        }
        Ok(Self { conn, chat_id })
    }
}

#[async_trait]
impl ChatLock for MySqlChatLock {
    /// Releases the lock; if that fails, closes the connection instead, which frees it.
    async fn release(mut self: Box<Self>) {
        let released = sqlx::query("DO RELEASE_LOCK(LEFT(CONCAT(DATABASE(), ?), 64))")
            .bind(chat_lock_name(self.chat_id))
            .execute(&mut *self.conn)
            .await;
        if released.is_err() {
            drop(self.conn.detach());
        }
    }
}
