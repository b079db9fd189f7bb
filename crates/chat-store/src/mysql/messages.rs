//! Sends on MySQL one at a time, and the chats' named locks. Sends usually go the batched way
//! (`super::send_batch`), which falls back on the single path here.

use async_trait::async_trait;
use chat_proto::Id;
use sqlx::pool::PoolConnection;
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{MySql, MySqlPool};

use super::MySqlBackend;
use crate::backend::ChatLock;
use crate::error::is_duplicate_of;
use crate::messages::{Announce, NewMessage, SendOutcome, stored_by_client_id};
use crate::{Result, StoreError};

/// How long a send waits for another send in the same chat before answering "busy".
const CHAT_LOCK_WAIT_SECS: i64 = 10;

/// A chat's named lock, held by the session of `conn`.
pub(super) struct MySqlChatLock {
    conn: PoolConnection<sqlx::MySql>,
    chat_id: Id,
}

impl MySqlChatLock {
    /// Takes the chat's named lock on a connection of its own.
    pub(super) async fn take(pool: &MySqlPool, chat_id: Id) -> Result<Self> {
        let mut conn = pool.acquire().await?;
        lock_chat(&mut conn, chat_id).await?;
        Ok(Self { conn, chat_id })
    }
}

#[async_trait]
impl ChatLock for MySqlChatLock {
    async fn release(self: Box<Self>) {
        unlock_chat(self.conn, self.chat_id).await;
    }
}

/// One send on its own connection and transaction: the batch path's fallback.
pub(super) async fn send_alone(
    pool: &MySqlPool,
    new: NewMessage<'_>,
    announce: Announce,
) -> Result<SendOutcome> {
    let mut conn = pool.acquire().await?;
    lock_chat(&mut conn, new.chat_id).await?;
    let outcome = insert_message(pool, &mut conn, &new).await;
    if let Ok(outcome) = &outcome {
        announce(outcome).await;
    }
    unlock_chat(conn, new.chat_id).await;
    outcome
}

pub(super) fn lock_wait_secs() -> i64 {
    CHAT_LOCK_WAIT_SECS
}

/// Takes the chat's named lock on this connection, waiting up to `CHAT_LOCK_WAIT_SECS`.
async fn lock_chat(conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>, chat_id: Id) -> Result<()> {
    let (granted,): (Option<i64>,) =
        sqlx::query_as("SELECT GET_LOCK(LEFT(CONCAT(DATABASE(), ?), 64), ?)")
            .bind(chat_lock_name(chat_id))
            .bind(CHAT_LOCK_WAIT_SECS)
            .fetch_one(&mut **conn)
            .await?;
    if granted != Some(1) {
        return Err(StoreError::Busy("the chat is busy, retry"));
    }
    Ok(())
}

/// Releases the chat's named lock; if that fails, closes the connection instead, which frees it.
async fn unlock_chat(mut conn: sqlx::pool::PoolConnection<sqlx::MySql>, chat_id: Id) {
    let released = sqlx::query("DO RELEASE_LOCK(LEFT(CONCAT(DATABASE(), ?), 64))")
        .bind(chat_lock_name(chat_id))
        .execute(&mut *conn)
        .await;
    if released.is_err() {
        drop(conn.detach());
    }
}

pub(super) fn chat_lock_name(chat_id: Id) -> String {
    format!("/chat/{chat_id}")
}

async fn insert_message(
    pool: &MySqlPool,
    conn: &mut sqlx::pool::PoolConnection<sqlx::MySql>,
    new: &NewMessage<'_>,
) -> Result<SendOutcome> {
    let mut tx = sqlx::Connection::begin(&mut **conn).await?;
    // The timestamp comes from the database, taken under the chat's lock: one clock for all
    // api replicas, so sync cursors (points in time) order messages the way they committed.
    let locked: Option<(u64, Option<u64>, NaiveDateTime)> = sqlx::query_as(
        "SELECT c.last_seq, m.user_id, NOW(3) FROM chats c \
         LEFT JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? \
         WHERE c.id = ? FOR UPDATE",
    )
    .bind(new.sender_id)
    .bind(new.chat_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (last_seq, created_at) = match locked {
        Some((last_seq, Some(_), now)) => (last_seq, now.and_utc()),
        _ => return Err(StoreError::NotFound),
    };
    if let Some(reply_to) = new.reply_to_id {
        let target: Option<(u64,)> = sqlx::query_as("SELECT chat_id FROM messages WHERE id = ?")
            .bind(reply_to)
            .fetch_optional(&mut *tx)
            .await?;
        new.check_reply_target(target.map(|(chat,)| chat))?;
    }
    let seq = last_seq + 1;
    let inserted = sqlx::query(
        "INSERT INTO messages (chat_id, seq, sender_id, kind, body, attachment_id, reply_to_id, \
         client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(new.chat_id)
    .bind(seq)
    .bind(new.sender_id)
    .bind(new.kind.as_str())
    .bind(new.text)
    .bind(new.attachment.map(|a| a.id))
    .bind(new.reply_to_id)
    .bind(new.client_msg_id.as_bytes())
    .bind(created_at.naive_utc())
    .execute(&mut *tx)
    .await;
    let id = match inserted {
        Ok(done) => done.last_insert_id(),
        Err(e) if is_duplicate_of(&e, "uq_messages_idem") => {
            drop(tx);
            return repeated_send(pool, new).await;
        }
        Err(e) => return Err(e.into()),
    };
    // The chat's counter and, since sending implies having read the chat up to one's own
    // message, the sender's watermark: one statement (both rows are locked already).
    sqlx::query(
        "UPDATE chats c JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? \
         SET c.last_seq = ?, c.last_message_id = ?, c.last_activity_at = ?, m.last_read_seq = ? \
         WHERE c.id = ?",
    )
    .bind(new.sender_id)
    .bind(seq)
    .bind(id)
    .bind(created_at.naive_utc())
    .bind(seq)
    .bind(new.chat_id)
    .execute(&mut *tx)
    .await?;
    let member_ids: Vec<(u64,)> =
        sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
            .bind(new.chat_id)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await.map_err(StoreError::at_commit)?;
    Ok(SendOutcome {
        message: new.stored_as(id, seq, created_at),
        created: true,
        member_ids: member_ids.into_iter().map(|(id,)| id).collect(),
    })
}

async fn repeated_send(pool: &MySqlPool, new: &NewMessage<'_>) -> Result<SendOutcome> {
    let first = stored_by_client_id::<MySqlBackend, MySql, _>(
        pool,
        new.chat_id,
        new.sender_id,
        new.client_msg_id,
    )
    .await?;
    first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
}
