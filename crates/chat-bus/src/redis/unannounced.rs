//! Sends whose COMMIT got no answer, per chat, until someone announces them.
//!
//! When the database connection breaks after COMMIT was sent, chat-api cannot tell whether the
//! message is stored, so it answers 503 and publishes nothing. If the row did land, the sender's
//! retry only finds it (idempotency) and recipients would never see it live. chat-api records the
//! send here; whoever next holds the chat's send lock (the retry, the next send in the chat, or a
//! background resolver) looks it up and publishes it if it is stored, before anything newer, and
//! then forgets it. Redis keeps the record so that any api replica can do that.

use std::time::Duration;

use redis::AsyncCommands;

use crate::{Bus, Result};

/// How long a record waits for someone to resolve it. Long past any outage a client retries
/// through; a record that old is past helping a live stream (resume covers reconnects).
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// One send whose outcome is unknown: the message is found by its idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnannouncedSend {
    pub sender_id: u64,
    pub client_msg_id: String,
}

impl UnannouncedSend {
    /// `sender:client_msg_id`, the set member (the sender is all digits, so the first `:` splits).
    fn encode(&self) -> String {
        format!("{}:{}", self.sender_id, self.client_msg_id)
    }

    fn decode(member: &str) -> Option<Self> {
        let (sender, client_msg_id) = member.split_once(':')?;
        Some(Self {
            sender_id: sender.parse().ok()?,
            client_msg_id: client_msg_id.to_string(),
        })
    }
}

impl Bus {
    /// Records a send into `chat_id` whose commit got no answer.
    pub async fn record_unannounced(&self, chat_id: u64, send: &UnannouncedSend) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            memory.unannounced.record(chat_id, send.clone());
            return Ok(());
        }
        let key = self.keys.unannounced(chat_id);
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .sadd(&key, send.encode())
            .ignore()
            .expire(&key, RECORD_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The chat's sends waiting to be announced (usually none: one `SMEMBERS`). Members that do
    /// not parse are dropped from the answer; nothing here writes them.
    pub async fn unannounced(&self, chat_id: u64) -> Result<Vec<UnannouncedSend>> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.unannounced.of(chat_id));
        }
        let mut conn = self.conn().await?;
        let members: Vec<String> = conn.smembers(self.keys.unannounced(chat_id)).await?;
        Ok(members
            .iter()
            .filter_map(|m| UnannouncedSend::decode(m))
            .collect())
    }

    /// Forgets sends that were announced, or found never stored.
    pub async fn forget_unannounced(&self, chat_id: u64, sends: &[UnannouncedSend]) -> Result<()> {
        if sends.is_empty() {
            return Ok(());
        }
        if let Some(memory) = self.memory_backend() {
            memory.unannounced.forget(chat_id, sends);
            return Ok(());
        }
        let members: Vec<String> = sends.iter().map(UnannouncedSend::encode).collect();
        let mut conn = self.conn().await?;
        let _: () = conn.srem(self.keys.unannounced(chat_id), members).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::UnannouncedSend;

    #[test]
    fn members_round_trip_with_colons_in_the_client_id() {
        let send = UnannouncedSend {
            sender_id: 42,
            client_msg_id: "a:b:c".into(),
        };
        assert_eq!(send.encode(), "42:a:b:c");
        assert_eq!(UnannouncedSend::decode("42:a:b:c"), Some(send));
        assert_eq!(UnannouncedSend::decode("x:a"), None);
        assert_eq!(UnannouncedSend::decode("42"), None);
    }
}
