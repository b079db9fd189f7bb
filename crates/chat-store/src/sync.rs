//! The events of all of a user's chats from a point in time, oldest first: what a reconnecting
//! client missed. New messages come from `messages.created_at`, read receipts from
//! `chat_members.read_at` (both set from the database clock when they commit).

use async_trait::async_trait;
use chat_proto::time::Timestamp;
use chat_proto::{Id, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, key};
use crate::messages::{MessageRow, message_columns};
use crate::{Result, Store};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    Message(Message),
    Read {
        chat_id: Id,
        user_id: Id,
        up_to_seq: u64,
        at: Timestamp,
    },
}

impl SyncEvent {
    pub fn at(&self) -> Timestamp {
        match self {
            Self::Message(message) => message.created_at,
            Self::Read { at, .. } => *at,
        }
    }

    /// Oldest first; a message before a read of the same instant; then by id.
    fn order_key(&self) -> (Timestamp, u8, Id, Id) {
        match self {
            Self::Message(m) => (m.created_at, 0, m.id, 0),
            Self::Read {
                chat_id,
                user_id,
                at,
                ..
            } => (*at, 1, *chat_id, *user_id),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncSlice {
    pub events: Vec<SyncEvent>,
    /// When set, more events exist from this instant on (nothing before it is left out).
    pub more_from: Option<Timestamp>,
}

/// A moved read watermark.
#[derive(FromRow)]
pub(crate) struct ReadRow {
    chat_id: u64,
    user_id: u64,
    last_read_seq: u64,
    read_at: NaiveDateTime,
}

/// The sync part of the backend contract (`crate::backend`), the same SQL on both databases.
#[async_trait]
pub(crate) trait SyncQueries {
    async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice>;
}

#[async_trait]
impl<D, DB> SyncQueries for D
where
    D: Dialect<Db = DB>,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> ReadRow: FromRow<'r, DB::Row>,
{
    async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice> {
        let fetch = i64::from(limit) + 1;
        let from = Stamp(from);
        let messages: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {} FROM chat_members mine \
             JOIN messages m ON m.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND m.created_at >= ? ORDER BY m.created_at, m.id LIMIT ?",
            message_columns::<D>("m")
        ))
        .bind(key(user))
        .bind(from)
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        let reads: Vec<ReadRow> = sqlx::query_as(
            "SELECT cm.chat_id, cm.user_id, cm.last_read_seq, cm.read_at FROM chat_members mine \
             JOIN chat_members cm ON cm.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND cm.read_at >= ? ORDER BY cm.read_at LIMIT ?",
        )
        .bind(key(user))
        .bind(from)
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        Ok(merge_events(messages, reads, limit))
    }
}

impl Store {
    /// Up to about `limit` events of the user's chats at or after `from`. A slice always ends at
    /// a whole millisecond, so continuing from `more_from` neither skips nor repeats events.
    pub async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice> {
        self.backend.sync(user, from, limit).await
    }
}

/// The slice from up to `limit + 1` messages and up to `limit + 1` reads, each read from the
/// same point in time in their order.
fn merge_events(messages: Vec<MessageRow>, reads: Vec<ReadRow>, limit: u32) -> SyncSlice {
    let truncated = messages.len() > limit as usize || reads.len() > limit as usize;
    let mut events: Vec<SyncEvent> = messages
        .into_iter()
        .map(|row| SyncEvent::Message(Message::from(row)))
        .chain(reads.into_iter().map(|row| SyncEvent::Read {
            chat_id: row.chat_id,
            user_id: row.user_id,
            up_to_seq: row.last_read_seq,
            at: row.read_at.and_utc(),
        }))
        .collect();
    events.sort_by_key(SyncEvent::order_key);
    cut_at_whole_millisecond(events, limit as usize, truncated)
}

/// Keeps the events before the first instant that does not fit in `limit`. Each source was
/// read in order up to `limit + 1` rows, so every event before that instant is present.
fn cut_at_whole_millisecond(
    mut events: Vec<SyncEvent>,
    limit: usize,
    truncated: bool,
) -> SyncSlice {
    if !truncated && events.len() <= limit {
        return SyncSlice {
            events,
            more_from: None,
        };
    }
    let cut = events[limit.min(events.len() - 1)].at();
    let before_cut = events.iter().take_while(|e| e.at() < cut).count();
    if before_cut > 0 {
        events.truncate(before_cut);
        return SyncSlice {
            events,
            more_from: Some(cut),
        };
    }
    // More than `limit` events in one millisecond: hand out that millisecond whole (as far as
    // it was read) and continue after it.
    events.retain(|e| e.at() == cut);
    SyncSlice {
        events,
        more_from: Some(cut + chrono::Duration::milliseconds(1)),
    }
}

#[cfg(test)]
mod tests;
