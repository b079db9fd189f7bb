//! Events pushed to clients. chat-api builds them, the bus carries them, gateways encode each one
//! once per wire format and hand the same bytes to every socket that receives it.

use serde::{Deserialize, Serialize};

use crate::Id;
use crate::model::Message;
use crate::time::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceStatus {
    Online,
    Offline,
}

/// What a gateway tells chat-api (`POST /internal/v1/presence`): a user's first socket anywhere
/// opened, or last socket anywhere closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceChange {
    pub user_id: Id,
    pub status: PresenceStatus,
}

/// Several changes in the order one gateway saw them (`POST /internal/v1/presence/batch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceBatch {
    pub changes: Vec<PresenceChange>,
}

impl PresenceBatch {
    /// Changes one batch may carry; chat-api refuses a longer one.
    pub const MAX_CHANGES: usize = 256;
}

/// Which group chats these users are in (`POST /internal/v1/memberships`): a gateway asks when
/// users' first sockets open there, to route the groups' events to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipsRequest {
    pub users: Vec<u64>,
}

impl MembershipsRequest {
    /// Users one request may name; chat-api refuses more.
    pub const MAX_USERS: usize = 4096;
}

/// The answer: every user asked about, with the group chats they are in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memberships {
    pub users: Vec<UserGroups>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserGroups {
    pub user_id: u64,
    pub chat_ids: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerEvent {
    NewMessage {
        message: Message,
        /// Where to resume after processing this event (see `cursor`).
        cursor: String,
    },
    MessageRead {
        chat_id: Id,
        user_id: Id,
        up_to_seq: u64,
        cursor: String,
    },
    /// A member's delivered watermark moved (a device of theirs has the chat up to `up_to_seq`).
    MessageDelivered {
        chat_id: Id,
        user_id: Id,
        up_to_seq: u64,
        cursor: String,
    },
    /// A message was edited or deleted; `message` is as it now is.
    MessageUpdated {
        message: Message,
        cursor: String,
    },
    Presence {
        user_id: Id,
        status: PresenceStatus,
        #[serde(with = "crate::time::option")]
        last_seen: Option<Timestamp>,
    },
    Typing {
        chat_id: Id,
        user_id: Id,
    },
    /// From the gateway itself: its Redis subscription was interrupted and is live again, so
    /// events may have been missed. Clients fetch each chat's history after the last seq they
    /// have (`GET /v1/chats/{id}/messages?after_seq=`).
    Resync {
        reason: String,
    },
    /// From the gateway: the replay of a resume is complete; live events follow.
    Synced {
        cursor: String,
    },
}

impl ServerEvent {
    /// The time a sync reads this event by (ms, the instant its cursor is made from), for the
    /// events a sync returns: the first key of [`Self::sync_order`], and the score the
    /// recent-event log keeps it under.
    pub fn sync_time_ms(&self) -> Option<i64> {
        self.sync_order().map(|(at_ms, ..)| at_ms)
    }

    /// For the events a sync returns, where a sync puts them: the time it reads them by (ms,
    /// the instant their cursor is made from), then messages, their updates, deliveries and
    /// reads of one instant in that order, then by message id or by chat and user (chat-store's
    /// `SyncEvent::order_key`). `None` for the other kinds (presence, typing, …).
    pub fn sync_order(&self) -> Option<(i64, u8, Id, Id)> {
        match self {
            Self::NewMessage { message, .. } => {
                Some((message.created_at.timestamp_millis(), 0, message.id, 0))
            }
            Self::MessageUpdated { message, .. } => {
                let at = message.updated_at().unwrap_or(message.created_at);
                Some((at.timestamp_millis(), 1, message.id, 0))
            }
            // Their cursor is `Cursor::after_event(at)`.
            Self::MessageDelivered {
                chat_id,
                user_id,
                cursor,
                ..
            } => Some((receipt_ms(cursor)?, 2, *chat_id, *user_id)),
            Self::MessageRead {
                chat_id,
                user_id,
                cursor,
                ..
            } => Some((receipt_ms(cursor)?, 3, *chat_id, *user_id)),
            _ => None,
        }
    }
}

/// The time of a receipt from its cursor (which lies `OVERLAP_MS` before it).
fn receipt_ms(cursor: &str) -> Option<i64> {
    let cursor = crate::Cursor::parse(cursor, i64::MAX).ok()?;
    Some(cursor.from_ms.saturating_add(crate::cursor::OVERLAP_MS))
}

/// One delivered watermark move a gateway forwards for a user of one of its sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredMove {
    pub user_id: Id,
    pub chat_id: Id,
    pub up_to_seq: u64,
}

/// The moves a gateway's delivered lane coalesced while its previous request was out
/// (`POST /internal/v1/delivered/batch`): at most one per user and chat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredBatch {
    pub moves: Vec<DeliveredMove>,
}

impl DeliveredBatch {
    /// Moves one batch may carry; chat-api refuses a longer one.
    pub const MAX_MOVES: usize = 256;
}

/// The answer to a [`DeliveredBatch`]: one entry per move, in order; `error` is null when the
/// move was taken (whether or not the watermark moved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredResults {
    pub results: Vec<DeliveredResult>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveredResult {
    #[serde(default)]
    pub error: Option<crate::ErrorDetail>,
}

/// The body of `GET /v1/sync`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPage {
    pub events: Vec<ServerEvent>,
    pub cursor: String,
    pub has_more: bool,
}

#[cfg(test)]
mod tests;
