//! Messages on SQLite: the gap-free per-chat sequence, idempotent sends, history pages, read
//! watermarks. Row conversion and the answers' shapes are shared with `crate::messages`.

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Id, Message};
use sqlx::types::chrono::NaiveDateTime;

use super::{SqliteBackend, bound, ids, is_unique_violation, key, time, unsigned, unsigned_opt};
use crate::chats::ChatQueries;
use crate::messages::{
    Announce, MessagePage, MessageQueries, MessageRow, NewMessage, ReadOutcome, SendOutcome,
    message_from_row, read_target,
};
use crate::{Result, StoreError};

/// How long a send waits for another send in the same chat before answering "busy" (as
/// `GET_LOCK`'s wait on MySQL).
const CHAT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The packed attachment column (`size sha256 content_type`, see `crate::messages`) of a message
/// table or alias; SQLite concatenates with `||`.
pub(super) fn attachment_column(table: &str) -> String {
    format!(
        "(SELECT a.size || ' ' || a.sha256 || ' ' || a.content_type FROM attachments a \
         WHERE a.id = {table}.attachment_id)"
    )
}

/// The columns of [`SqliteMessageRow`] for queries on the unaliased `messages` table.
pub(super) const MESSAGE_COLUMNS: &str = "id, chat_id, seq, sender_id, kind, body, attachment_id, \
     reply_to_id, client_msg_id, created_at, (SELECT a.size || ' ' || a.sha256 || ' ' || \
     a.content_type FROM attachments a WHERE a.id = messages.attachment_id)";

/// [`MessageRow`] as SQLite hands it out: signed integers, the packed attachment as text.
pub(super) type SqliteMessageRow = (
    i64,
    i64,
    i64,
    i64,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Vec<u8>,
    NaiveDateTime,
    Option<String>,
);

pub(super) fn message_row(row: SqliteMessageRow) -> Result<MessageRow> {
    let (
        id,
        chat_id,
        seq,
        sender_id,
        kind,
        text,
        attachment_id,
        reply_to_id,
        client_msg_id,
        at,
        packed,
    ) = row;
    Ok((
        unsigned(id)?,
        unsigned(chat_id)?,
        unsigned(seq)?,
        unsigned(sender_id)?,
        kind,
        text,
        unsigned_opt(attachment_id)?,
        unsigned_opt(reply_to_id)?,
        client_msg_id,
        at,
        packed.map(String::into_bytes),
    ))
}

fn messages_from_rows(rows: Vec<SqliteMessageRow>) -> Result<Vec<MessageRow>> {
    rows.into_iter().map(message_row).collect()
}

#[async_trait]
impl MessageQueries for SqliteBackend {
    async fn message_by_client_id(
        &self,
        chat_id: Id,
        sender_id: Id,
        client_msg_id: &str,
    ) -> Result<Option<Message>> {
        let row: Option<SqliteMessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages \
             WHERE chat_id = ? AND sender_id = ? AND client_msg_id = ?"
        ))
        .bind(key(chat_id))
        .bind(key(sender_id))
        .bind(client_msg_id.as_bytes())
        .fetch_optional(&self.reader)
        .await?;
        row.map(|row| message_row(row).map(message_from_row))
            .transpose()
    }

    async fn messages(
        &self,
        me: Id,
        chat_id: Id,
        before_seq: Option<u64>,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<MessagePage> {
        self.membership(me, chat_id).await?;
        let fetch = i64::from(limit) + 1;
        match (before_seq, after_seq) {
            (None, Some(after)) => {
                let rows: Vec<SqliteMessageRow> = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages WHERE chat_id = ? AND seq > ? \
                     ORDER BY seq ASC LIMIT ?"
                ))
                .bind(key(chat_id))
                .bind(bound(after))
                .bind(fetch)
                .fetch_all(&self.reader)
                .await?;
                Ok(MessagePage::from_rows(
                    messages_from_rows(rows)?,
                    limit,
                    false,
                ))
            }
            (before, after) => {
                let rows: Vec<SqliteMessageRow> = sqlx::query_as(&format!(
                    "SELECT {MESSAGE_COLUMNS} FROM messages \
                     WHERE chat_id = ? AND seq < ? AND seq > ? ORDER BY seq DESC LIMIT ?"
                ))
                .bind(key(chat_id))
                .bind(bound(before.unwrap_or(u64::MAX)))
                .bind(bound(after.unwrap_or(0)))
                .bind(fetch)
                .fetch_all(&self.reader)
                .await?;
                Ok(MessagePage::from_rows(
                    messages_from_rows(rows)?,
                    limit,
                    true,
                ))
            }
        }
    }
}

impl SqliteBackend {
    /// Stores a message with the chat's next `seq`, then runs `announce` with the outcome (new
    /// or retried), all under the chat's send lock so that publishes leave in seq order.
    pub(super) async fn send_message(
        &self,
        new: NewMessage<'_>,
        announce: Announce,
    ) -> Result<SendOutcome> {
        let _chat_lock = self.chat_lock(new.chat_id).await?;
        let outcome = self.insert_message(&new).await;
        if let Ok(outcome) = &outcome {
            announce(outcome).await;
        }
        outcome
    }

    /// The chat's send lock, waited for up to `CHAT_LOCK_WAIT`.
    pub(super) async fn chat_lock(&self, chat_id: Id) -> Result<tokio::sync::MutexGuard<'_, ()>> {
        tokio::time::timeout(CHAT_LOCK_WAIT, self.send_lock(chat_id).lock())
            .await
            .map_err(|_| StoreError::Busy("the chat is busy, retry"))
    }

    async fn insert_message(&self, new: &NewMessage<'_>) -> Result<SendOutcome> {
        let mut tx = self.begin_write().await?;
        // Taken while holding the write lock: commits and timestamps come in the same order, so
        // sync cursors (points in time) order messages the way they committed.
        let created_at = now_millis();
        let locked: Option<(i64, Option<i64>)> = sqlx::query_as(
            "SELECT c.last_seq, m.user_id FROM chats c \
             LEFT JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? WHERE c.id = ?",
        )
        .bind(key(new.sender_id))
        .bind(key(new.chat_id))
        .fetch_optional(&mut *tx)
        .await?;
        let last_seq = match locked {
            Some((last_seq, Some(_))) => unsigned(last_seq)?,
            _ => return Err(StoreError::NotFound),
        };
        if let Some(reply_to) = new.reply_to_id {
            let target: Option<(i64,)> =
                sqlx::query_as("SELECT chat_id FROM messages WHERE id = ?")
                    .bind(key(reply_to))
                    .fetch_optional(&mut *tx)
                    .await?;
            new.check_reply_target(unsigned_opt(target.map(|(chat,)| chat))?)?;
        }
        let seq = last_seq + 1;
        let inserted = sqlx::query(
            "INSERT INTO messages (chat_id, seq, sender_id, kind, body, attachment_id, reply_to_id, \
             client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key(new.chat_id))
        .bind(bound(seq))
        .bind(key(new.sender_id))
        .bind(new.kind.as_str())
        .bind(new.text)
        .bind(new.attachment.map(|a| key(a.id)))
        .bind(new.reply_to_id.map(key))
        .bind(new.client_msg_id.as_bytes())
        .bind(time(created_at))
        .execute(&mut *tx)
        .await;
        let id = match inserted {
            Ok(done) => done.last_insert_rowid(),
            Err(e)
                if is_unique_violation(
                    &e,
                    "messages.chat_id, messages.sender_id, messages.client_msg_id",
                ) =>
            {
                tx.rollback().await?;
                return self.repeated_send(new).await;
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query(
            "UPDATE chats SET last_seq = ?, last_message_id = ?, last_activity_at = ? WHERE id = ?",
        )
        .bind(bound(seq))
        .bind(id)
        .bind(time(created_at))
        .bind(key(new.chat_id))
        .execute(&mut *tx)
        .await?;
        // Sending implies having read the chat up to one's own message.
        sqlx::query("UPDATE chat_members SET last_read_seq = ? WHERE chat_id = ? AND user_id = ?")
            .bind(bound(seq))
            .bind(key(new.chat_id))
            .bind(key(new.sender_id))
            .execute(&mut *tx)
            .await?;
        let member_ids: Vec<(i64,)> =
            sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
                .bind(key(new.chat_id))
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(SendOutcome {
            message: new.stored_as(unsigned(id)?, seq, created_at),
            created: true,
            member_ids: ids(member_ids)?,
        })
    }

    async fn repeated_send(&self, new: &NewMessage<'_>) -> Result<SendOutcome> {
        let first = self
            .message_by_client_id(new.chat_id, new.sender_id, new.client_msg_id)
            .await?;
        first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
    }

    /// Moves the caller's read watermark forward to `min(up_to_seq, last_seq)`; never back. The
    /// check runs on a reader (most reads move nothing); the move is a conditional update on the
    /// writer, so of two racing reads the lower one cannot win.
    pub(super) async fn move_watermark(
        &self,
        me: Id,
        chat_id: Id,
        up_to_seq: u64,
    ) -> Result<ReadOutcome> {
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT c.last_seq, m.last_read_seq FROM chat_members m \
             JOIN chats c ON c.id = m.chat_id WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(key(chat_id))
        .bind(key(me))
        .fetch_optional(&self.reader)
        .await?;
        let (last_seq, current) = row.ok_or(StoreError::NotFound)?;
        let now = now_millis();
        let Some(target) = read_target(up_to_seq, unsigned(last_seq)?, unsigned(current)?) else {
            return Ok(ReadOutcome::unmoved(now));
        };
        let updated = sqlx::query(
            "UPDATE chat_members SET last_read_seq = ?, read_at = ? \
             WHERE chat_id = ? AND user_id = ? AND last_read_seq < ?",
        )
        .bind(bound(target))
        .bind(time(now))
        .bind(key(chat_id))
        .bind(key(me))
        .bind(bound(target))
        .execute(&self.writer)
        .await?;
        if updated.rows_affected() == 0 {
            return Ok(ReadOutcome::unmoved(now));
        }
        Ok(ReadOutcome {
            moved_to: Some(target),
            read_at: now,
            member_ids: self.member_ids(chat_id).await?,
        })
    }
}
