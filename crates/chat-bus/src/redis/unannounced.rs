//! The unannounced sends in Redis (see `crate::unannounced`): a set per chat,
//! `P:chat:{chat}:unannounced`, of `sender:client_msg_id` members, kept a day so that any api
//! replica can resolve them.

use std::time::Duration;

use async_trait::async_trait;
use redis::AsyncCommands;

use super::RedisBus;
use crate::backend::UnannouncedBackend;
use crate::{Result, UnannouncedSend};

/// How long a record waits for someone to resolve it. Long past any outage a client retries
/// through; a record that old is past helping a live stream (resume covers reconnects).
const RECORD_TTL: Duration = Duration::from_secs(24 * 3600);

/// `sender:client_msg_id`, the set member (the sender is all digits, so the first `:` splits).
fn encode(send: &UnannouncedSend) -> String {
    format!("{}:{}", send.sender_id, send.client_msg_id)
}

fn decode(member: &str) -> Option<UnannouncedSend> {
    let (sender, client_msg_id) = member.split_once(':')?;
    Some(UnannouncedSend {
        sender_id: sender.parse().ok()?,
        client_msg_id: client_msg_id.to_string(),
    })
}

#[async_trait]
impl UnannouncedBackend for RedisBus {
    async fn record_unannounced(&self, chat_id: u64, send: &UnannouncedSend) -> Result<()> {
        let key = self.keys.unannounced(chat_id);
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .sadd(&key, encode(send))
            .ignore()
            .expire(&key, RECORD_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// One `SMEMBERS`. Members that do not parse are dropped from the answer; nothing here
    /// writes them.
    async fn unannounced(&self, chat_id: u64) -> Result<Vec<UnannouncedSend>> {
        let mut conn = self.conn().await?;
        let members: Vec<String> = conn.smembers(self.keys.unannounced(chat_id)).await?;
        Ok(members.iter().filter_map(|m| decode(m)).collect())
    }

    async fn forget_unannounced(&self, chat_id: u64, sends: &[UnannouncedSend]) -> Result<()> {
        let members: Vec<String> = sends.iter().map(encode).collect();
        let mut conn = self.conn().await?;
        let _: () = conn.srem(self.keys.unannounced(chat_id), members).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{UnannouncedSend, decode, encode};

    #[test]
    fn members_round_trip_with_colons_in_the_client_id() {
        let send = UnannouncedSend {
            sender_id: 42,
            client_msg_id: "a:b:c".into(),
        };
        assert_eq!(encode(&send), "42:a:b:c");
        assert_eq!(decode("42:a:b:c"), Some(send));
        assert_eq!(decode("x:a"), None);
        assert_eq!(decode("42"), None);
    }
}
