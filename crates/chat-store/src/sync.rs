//! The events of all of a user's chats from a point in time, oldest first: what a reconnecting
//! client missed. New messages come from `messages.created_at`, edits and deletions from
//! `messages.updated_at`, read and delivered receipts from `chat_members.read_at` and
//! `delivered_at` (all set from the database clock when they commit).

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
    /// A message edited or deleted since, as it now is.
    Updated(Message),
    Read {
        chat_id: Id,
        user_id: Id,
        up_to_seq: u64,
        at: Timestamp,
    },
    Delivered {
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
            Self::Updated(message) => message.updated_at().unwrap_or(message.created_at),
            Self::Read { at, .. } | Self::Delivered { at, .. } => *at,
        }
    }

    /// Oldest first; of one instant: messages, their updates, deliveries, reads; then by id.
    fn order_key(&self) -> (Timestamp, u8, Id, Id) {
        match self {
            Self::Message(m) => (m.created_at, 0, m.id, 0),
            Self::Updated(m) => (self.at(), 1, m.id, 0),
            Self::Delivered {
                chat_id,
                user_id,
                at,
                ..
            } => (*at, 2, *chat_id, *user_id),
            Self::Read {
                chat_id,
                user_id,
                at,
                ..
            } => (*at, 3, *chat_id, *user_id),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncSlice {
    pub events: Vec<SyncEvent>,
    /// When set, more events exist from this instant on (nothing before it is left out).
    pub more_from: Option<Timestamp>,
}

/// A moved read or delivered watermark (`seq` and `at` are aliased in the query).
#[derive(FromRow)]
pub(crate) struct WatermarkRow {
    chat_id: u64,
    user_id: u64,
    seq: u64,
    at: NaiveDateTime,
}

/// What a sync read from each source: up to `limit + 1` rows each, from the same point in time,
/// in their time order.
struct SyncRows {
    messages: Vec<MessageRow>,
    updates: Vec<MessageRow>,
    reads: Vec<WatermarkRow>,
    delivered: Vec<WatermarkRow>,
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
    for<'r> WatermarkRow: FromRow<'r, DB::Row>,
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
        let updates: Vec<MessageRow> = sqlx::query_as(&format!(
            "SELECT {} FROM chat_members mine \
             JOIN messages m ON m.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND m.updated_at >= ? ORDER BY m.updated_at, m.id LIMIT ?",
            message_columns::<D>("m")
        ))
        .bind(key(user))
        .bind(from)
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        let reads: Vec<WatermarkRow> = sqlx::query_as(
            "SELECT cm.chat_id, cm.user_id, cm.last_read_seq AS seq, cm.read_at AS at \
             FROM chat_members mine JOIN chat_members cm ON cm.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND cm.read_at >= ? ORDER BY cm.read_at LIMIT ?",
        )
        .bind(key(user))
        .bind(from)
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        let delivered: Vec<WatermarkRow> = sqlx::query_as(
            "SELECT cm.chat_id, cm.user_id, cm.last_delivered_seq AS seq, cm.delivered_at AS at \
             FROM chat_members mine JOIN chat_members cm ON cm.chat_id = mine.chat_id \
             WHERE mine.user_id = ? AND cm.delivered_at >= ? ORDER BY cm.delivered_at LIMIT ?",
        )
        .bind(key(user))
        .bind(from)
        .bind(fetch)
        .fetch_all(self.reader())
        .await?;
        let rows = SyncRows {
            messages,
            updates,
            reads,
            delivered,
        };
        Ok(merge_events(rows, limit))
    }
}

impl Store {
    /// Up to about `limit` events of the user's chats at or after `from`. A slice always ends at
    /// a whole millisecond, so continuing from `more_from` neither skips nor repeats events.
    pub async fn sync(&self, user: Id, from: Timestamp, limit: u32) -> Result<SyncSlice> {
        self.backend.sync(user, from, limit).await
    }
}

/// The slice from the rows of every source.
fn merge_events(rows: SyncRows, limit: u32) -> SyncSlice {
    let SyncRows {
        messages,
        updates,
        reads,
        delivered,
    } = rows;
    let truncated = [messages.len(), updates.len(), reads.len(), delivered.len()]
        .into_iter()
        .any(|n| n > limit as usize);
    let mut events: Vec<SyncEvent> = messages
        .into_iter()
        .map(|row| SyncEvent::Message(Message::from(row)))
        .chain(
            updates
                .into_iter()
                .map(|row| SyncEvent::Updated(Message::from(row))),
        )
        .chain(reads.into_iter().map(|row| SyncEvent::Read {
            chat_id: row.chat_id,
            user_id: row.user_id,
            up_to_seq: row.seq,
            at: row.at.and_utc(),
        }))
        .chain(delivered.into_iter().map(|row| SyncEvent::Delivered {
            chat_id: row.chat_id,
            user_id: row.user_id,
            up_to_seq: row.seq,
            at: row.at.and_utc(),
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
