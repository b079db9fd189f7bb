//! Sends whose COMMIT got no answer, per chat, until someone announces them.
//!
//! When the database connection breaks after COMMIT was sent, chat-api cannot tell whether the
//! message is stored, so it answers 503 and publishes nothing. If the row did land, the sender's
//! retry only finds it (idempotency) and recipients would never see it live. chat-api records the
//! send here; whoever next holds the chat's send lock (the retry, the next send in the chat, or a
//! background resolver) looks it up and publishes it if it is stored, before anything newer, and
//! then forgets it. The bus keeps the record so that any api replica can do that.

use crate::{Bus, Result};

/// One send whose outcome is unknown: the message is found by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnannouncedSend {
    pub sender_id: u64,
    pub client_msg_id: String,
}

impl Bus {
    /// Records a send into `chat_id` whose commit got no answer.
    pub async fn record_unannounced(&self, chat_id: u64, send: &UnannouncedSend) -> Result<()> {
        self.backend.record_unannounced(chat_id, send).await
    }

    /// The chat's sends waiting to be announced (usually none).
    pub async fn unannounced(&self, chat_id: u64) -> Result<Vec<UnannouncedSend>> {
        self.backend.unannounced(chat_id).await
    }

    /// Forgets sends that were announced, or found never stored.
    pub async fn forget_unannounced(&self, chat_id: u64, sends: &[UnannouncedSend]) -> Result<()> {
        if sends.is_empty() {
            return Ok(());
        }
        self.backend.forget_unannounced(chat_id, sends).await
    }
}
