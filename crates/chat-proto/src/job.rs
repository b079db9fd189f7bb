//! Queued side work that crosses from chat-api to chat-worker through a Redis Stream: today one
//! kind, a push notification for a recipient who had no open socket when a message was sent.

use serde::{Deserialize, Serialize};

use crate::Id;

/// One notification to one device token. `id` is unique per (message, recipient, token) and is
/// the idempotency key: the worker sends it along and never delivers the same id twice while its
/// "done" marker lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushJob {
    pub id: String,
    pub user_id: Id,
    pub token: String,
    pub chat_id: Id,
    pub message_id: Id,
    pub sender_id: Id,
    /// `text`, `image` or `file`.
    pub kind: String,
    pub title: String,
    pub body: String,
}

impl PushJob {
    /// The job id for one message, recipient and token (the token's position in the recipient's
    /// token list at enqueue time; each job is enqueued once, so the position is stable for it).
    pub fn job_id(message_id: Id, user_id: Id, token_index: usize) -> String {
        format!("m{message_id}-u{user_id}-t{token_index}")
    }
}
