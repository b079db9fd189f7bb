//! Sync on MySQL: the events of all of a user's chats from a point in time, oldest first.

use async_trait::async_trait;
use chat_proto::Id;
use chat_proto::time::Timestamp;

use super::MySqlBackend;
use super::messages::attachment_column;
use crate::Result;
use crate::messages::MessageRow;
use crate::sync::{MESSAGE_COLUMNS_M, ReadRow, SyncQueries, SyncSlice, merge_events};

#[async_trait]
impl SyncQueries for MySqlBackend {
    async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice> {
        let pool = &self.pool;
        let fetch = limit + 1;
        let from = from.naive_utc();
        let messages: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {MESSAGE_COLUMNS_M}, {} FROM chat_members mine \
             JOIN messages m ON m.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND m.created_at >= ? ORDER BY m.created_at, m.id LIMIT ?",
            attachment_column("m")
        ))
        .bind(user)
        .bind(from)
        .bind(fetch)
        .fetch_all(pool)
        .await?;
        let reads: Vec<ReadRow> = sqlx::query_as(
            "SELECT cm.chat_id, cm.user_id, cm.last_read_seq, cm.read_at FROM chat_members mine \
             JOIN chat_members cm ON cm.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND cm.read_at >= ? ORDER BY cm.read_at LIMIT ?",
        )
        .bind(user)
        .bind(from)
        .bind(fetch)
        .fetch_all(pool)
        .await?;
        Ok(merge_events(messages, reads, limit))
    }
}
