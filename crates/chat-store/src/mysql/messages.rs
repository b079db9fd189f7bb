//! Messages on MySQL: the single send path and the chats' named locks, history pages, read
//! watermarks. Sends usually go the batched way (`super::send_batch`), which falls back on the
//! single path here.

use async_trait::async_trait;
use chat_proto::{Id, Message};
use sqlx::MySqlPool;
use sqlx::pool::PoolConnection;
use sqlx::types::chrono::NaiveDateTime;

use super::MySqlBackend;
use super::chats::membership;
use crate::backend::ChatLock;
use crate::chats::ChatQueries;
use crate::error::is_duplicate_of;
use crate::messages::{
    Announce, MessagePage, MessageQueries, MessageRow, NewMessage, ReadOutcome, SendOutcome,
    message_from_row, read_target,
};
use crate::{Result, StoreError};

/// How long a send waits for another send in the same chat before answering "busy".
const CHAT_LOCK_WAIT_SECS: i64 = 10;

/// The columns of [`MessageRow`] for queries on the unaliased `messages` table (the last one is
/// [`attachment_column`] for `messages`).
pub(super) const MESSAGE_COLUMNS: &str = "id, chat_id, seq, sender_id, kind, body, attachment_id, \
     reply_to_id, client_msg_id, created_at, (SELECT CONCAT(a.size, ' ', a.sha256, ' ', \
     a.content_type) FROM attachments a WHERE a.id = messages.attachment_id)";

/// The last column of the message queries: the attachment's `size sha256 content_type` packed
/// into one string by a primary-key subquery (the queries stay single-table; no type here
/// contains a space).
pub(super) fn attachment_column(table: &str) -> String {
    format!(
        "(SELECT CONCAT(a.size, ' ', a.sha256, ' ', a.content_type) FROM attachments a \
         WHERE a.id = {table}.attachment_id)"
    )
}

#[async_trait]
impl MessageQueries for MySqlBackend {
    async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>> {
        let pool = &self.pool;
        stored_by_client_id(pool, chat_id, sender_id, client_msg_id).await
    }

    async fn messages(
        &self,
        me: Id,
        chat_id: Id,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage> {
        let pool = &self.pool;
        membership(pool, me, chat_id).await?;
        let fetch = limit + 1;
        let rows: Vec<MessageRow> = match (before_seq, after_seq) {
            (None, Some(after)) => {
                sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? AND seq > ? \
                     ORDER BY seq ASC LIMIT ?"
                ))
                .bind(chat_id)
                .bind(after)
                .bind(fetch)
                .fetch_all(pool)
                .await?
            }
            (before, after) => {
                let rows: Vec<MessageRow> = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages \
                     WHERE chat_id = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?"
                ))
                .bind(chat_id)
                .bind(before.unwrap_or(u64::MAX))
                .bind(after.unwrap_or(0))
                .bind(fetch)
                .fetch_all(pool)
                .await?;
                return Ok(MessagePage::from_rows(rows, limit, true));
            }
        };
        Ok(MessagePage::from_rows(rows, limit, false))
    }
}

impl MySqlBackend {
    /// Moves the caller's read watermark forward to `min(up_to_seq, last_seq)`; never back.
    pub(super) async fn move_watermark(
        &self,
        me: Id,
        chat_id: Id,
        up_to_seq: u64,
    ) -> Result<ReadOutcome> {
        let pool = &self.pool;
        let row: Option<(u64, u64, NaiveDateTime)> = sqlx::query_as(
            "SELECT c.last_seq, m.last_read_seq, NOW(3) FROM chat_members m \
             JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(chat_id)
        .bind(me)
        .fetch_optional(pool)
        .await?;
        let (last_seq, current, now) = row.ok_or(StoreError::NotFound)?;
        let Some(target) = read_target(up_to_seq, last_seq, current) else {
            return Ok(ReadOutcome::unmoved(now.and_utc()));
        };
        let updated = sqlx::query(
            "UPDATE chat_members SET last_read_seq = ?, read_at = ? \
             WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
        )
        .bind(target)
        .bind(now)
        .bind(chat_id)
        .bind(me)
        .bind(target)
        .execute(pool)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(ReadOutcome::unmoved(now.and_utc()));
        }
        Ok(ReadOutcome {
            moved_to: Some(target),
            read_at: now.and_utc(),
            member_ids: self.member_ids(chat_id).await?,
        })
    }
}

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
    let first = stored_by_client_id(pool, new.chat_id, new.sender_id, new.client_msg_id).await?;
    first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
}

async fn stored_by_client_id(
    pool: &MySqlPool,
    chat_id: Id,
    sender_id: Id,
    client_msg_id: &str,
) -> Result<Option<Message>> {
    let row: Option<MessageRow> = sqlx::query_as(&format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages \
         WHERE chat_id = ? AND sender_id = ? AND client_msg_id = ?"
    ))
    .bind(chat_id)
    .bind(sender_id)
    .bind(client_msg_id.as_bytes())
    .fetch_optional(pool)
    .await?;
    Ok(row.map(message_from_row))
}
