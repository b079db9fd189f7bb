//! The recent-event logs in memory (`crate::recent::Logs`, the model of the Redis scripts),
//! under one lock: a topic's append and trim happen together, and before its publish.

use async_trait::async_trait;
use bytes::Bytes;

use super::MemoryBus;
use crate::backend::RecentLogBackend;
use crate::recent::{RecentLogConfig, now_ms};
use crate::{Result, Topic};

#[async_trait]
impl RecentLogBackend for MemoryBus {
    async fn publish_logged(
        &self,
        topics: &[Topic],
        payload: &Bytes,
        at_ms: i64,
        now_ms: i64,
        config: RecentLogConfig,
    ) -> Result<()> {
        {
            let mut logs = self.recent.lock();
            for &topic in topics {
                logs.write(topic, payload, at_ms, now_ms, config);
            }
        }
        for &topic in topics {
            match topic {
                Topic::User(user) => self.pubsub.publish(&[user], payload),
                Topic::Chat(chat) => self.pubsub.publish_chat(chat, payload),
            }
        }
        Ok(())
    }

    async fn invalidate_recent(&self, topics: &[Topic], floor_ms: i64) -> Result<()> {
        let mut logs = self.recent.lock();
        let now = now_ms();
        for &topic in topics {
            logs.invalidate(topic, floor_ms, now);
        }
        Ok(())
    }

    async fn recent(&self, topics: &[Topic], from_ms: i64) -> Result<Option<Vec<Bytes>>> {
        let logs = self.recent.lock();
        let now = now_ms();
        let mut all = Vec::new();
        for &topic in topics {
            match logs.read(topic, from_ms, now) {
                Some(entries) => all.extend(entries),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }
}
