//! Sync on SQLite: the events of all of a user's chats from a point in time, oldest first. The
//! merging and slicing at whole milliseconds is shared with `crate::sync`.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::Timestamp;
use sqlx::types::chrono::NaiveDateTime;

use super::messages::{SqliteMessageRow, attachment_column, message_row};
use super::{SqliteBackend, key, time, unsigned};
use crate::Result;
use crate::sync::SyncQueries;
use crate::sync::{MESSAGE_COLUMNS_M, ReadRow, SyncSlice, merge_events};

#[async_trait]
impl SyncQueries for SqliteBackend {
    async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice> {
        let fetch = i64::from(limit) + 1;
        // Stored times are text with three fraction digits: compare with the same format.
        let from = time(from);
        let messages: Vec<SqliteMessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS_M}, {} FROM chat_members mine \
             JOIN messages m ON m.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND m.created_at >= ? ORDER BY m.created_at, m.id LIMIT ?",
            attachment_column("m")
        ))
        .bind(key(user))
        .bind(&from)
        .bind(fetch)
        .fetch_all(&self.reader)
        .await?;
        let reads: Vec<(i64, i64, i64, NaiveDateTime)> = sqlx::query_as(
            "SELECT cm.chat_id, cm.user_id, cm.last_read_seq, cm.read_at FROM chat_members mine \
             JOIN chat_members cm ON cm.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND cm.read_at >= ? ORDER BY cm.read_at LIMIT ?",
        )
        .bind(key(user))
        .bind(&from)
        .bind(fetch)
        .fetch_all(&self.reader)
        .await?;
        let messages = messages
            .into_iter()
            .map(message_row)
            .collect::<Result<Vec<_>>>()?;
        let reads = reads
            .into_iter()
            .map(|(chat_id, user_id, up_to_seq, at)| -> Result<ReadRow> {
                Ok((
                    unsigned(chat_id)?,
                    unsigned(user_id)?,
                    unsigned(up_to_seq)?,
                    at,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(merge_events(messages, reads, limit))
    }
}
