//! Sends on SQLite: the gap-free per-chat sequence and idempotent sends, under the per-chat send
//! lock and the one writer connection.

use chat_proto::Id;
use chat_proto::time::now_millis;

use super::SqliteBackend;
use crate::chats::MEMBER_IDS;
use crate::dialect::{Dialect, Stamp, bound, key};
use crate::messages::{Announce, MessageQueries, NewMessage, SendOutcome};
use crate::{Result, StoreError};

/// How long a send waits for another send in the same chat before answering "busy" (as
/// `GET_LOCK`'s wait on MySQL).
const CHAT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The unique key a retried send breaks, as SQLite names it.
const IDEMPOTENCY_KEY: &str = "messages.chat_id, messages.sender_id, messages.client_msg_id";

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
        let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
        // Taken while holding the write lock: commits and timestamps come in the same order, so
        // sync cursors (points in time) order messages the way they committed.
        let created_at = now_millis();
        let locked: Option<(u64, Option<u64>)> = sqlx::query_as(
            "SELECT c.last_seq, m.user_id FROM chats c \
             LEFT JOIN chat_members m ON m.chat_id = c.id AND m.user_id = ? WHERE c.id = ?",
        )
        .bind(key(new.sender_id))
        .bind(key(new.chat_id))
        .fetch_optional(&mut *tx)
        .await?;
        let last_seq = match locked {
            Some((last_seq, Some(_))) => last_seq,
            _ => return Err(StoreError::NotFound),
        };
        if let Some(reply_to) = new.reply_to_id {
            let target: Option<(u64,)> =
                sqlx::query_as("SELECT chat_id FROM messages WHERE id = ?")
                    .bind(key(reply_to))
                    .fetch_optional(&mut *tx)
                    .await?;
            new.check_reply_target(target.map(|(chat,)| chat))?;
        }
        let seq = last_seq + 1;
        let inserted = sqlx::query(
            "INSERT INTO messages (chat_id, seq, sender_id, kind, body, attachment_id, \
             reply_to_id, client_msg_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(key(new.chat_id))
        .bind(bound(seq))
        .bind(key(new.sender_id))
        .bind(new.kind.as_str())
        .bind(new.text)
        .bind(new.attachment.map(|a| key(a.id)))
        .bind(new.reply_to_id.map(key))
        .bind(new.client_msg_id.as_bytes())
        .bind(Stamp(created_at))
        .execute(&mut *tx)
        .await;
        let id = match inserted {
            Ok(done) => Self::inserted_id(&done)?,
            Err(e) if super::is_unique_violation(&e, IDEMPOTENCY_KEY) => {
                tx.rollback().await?;
                return self.repeated_send(new).await;
            }
            Err(e) => return Err(e.into()),
        };
        sqlx::query(
            "UPDATE chats SET last_seq = ?, last_message_id = ?, last_activity_at = ? WHERE id = ?",
        )
        .bind(bound(seq))
        .bind(key(id))
        .bind(Stamp(created_at))
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
        let member_ids: Vec<(u64,)> = sqlx::query_as(MEMBER_IDS)
            .bind(key(new.chat_id))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(SendOutcome {
            message: new.stored_as(id, seq, created_at),
            created: true,
            member_ids: member_ids.into_iter().map(|(id,)| id).collect(),
        })
    }

    async fn repeated_send(&self, new: &NewMessage<'_>) -> Result<SendOutcome> {
        let first = self
            .message_by_client_id(new.chat_id, new.sender_id, new.client_msg_id)
            .await?;
        first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
    }
}
