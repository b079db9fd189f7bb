//! A gateway's subscription on Redis: one connection carrying a SUBSCRIBE per locally connected
//! user and per group chat with a member here, or on a cluster an SSUBSCRIBE per channel on the
//! master that owns the channel's slot.
//!
//! The connections are this crate's own (`node`): one to a standalone Redis, or one per master
//! of a cluster (`cluster`), which follows the slots across resharding and failovers. They
//! reconnect with backoff, and a `Disconnected` message tells the gateway that events may have
//! been missed meanwhile.

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::backend::SubscriptionBackend;
use crate::keys::Keys;
use crate::{BusMessage, Result, Topic};
use cluster::ClusterSubscription;
use node::NodeSubscription;

mod cluster;
mod node;

/// The connection(s) of one subscription, and the names of its channels.
pub(crate) struct RedisSubscription {
    conn: SubscriptionConn,
    keys: Arc<Keys>,
}

enum SubscriptionConn {
    /// SUBSCRIBE on one Redis.
    Standalone(NodeSubscription),
    /// SSUBSCRIBE on a cluster: each channel on the master owning its slot.
    Cluster(ClusterSubscription),
}

impl RedisSubscription {
    /// Connects to a standalone Redis (an unreachable Redis is an error here, as it is for every
    /// other connection).
    pub(crate) async fn standalone(
        url: &str,
        keys: Arc<Keys>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BusMessage>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = NodeSubscription::connect(url, keys.clone(), tx).await?;
        let conn = SubscriptionConn::Standalone(conn);
        Ok((Self { conn, keys }, rx))
    }

    /// Reads a cluster's slot map from the first seed that answers; the connections to masters
    /// open as channels of theirs are subscribed.
    pub(crate) async fn cluster(
        urls: &[String],
        keys: Arc<Keys>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BusMessage>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = ClusterSubscription::connect(urls, keys.clone(), tx).await?;
        let conn = SubscriptionConn::Cluster(conn);
        Ok((Self { conn, keys }, rx))
    }

    fn channels(&self, topics: &[Topic]) -> Vec<String> {
        topics.iter().map(|&t| self.keys.channel(t)).collect()
    }
}

#[async_trait]
impl SubscriptionBackend for RedisSubscription {
    async fn subscribe(&self, topics: &[Topic]) -> Result<()> {
        match &self.conn {
            SubscriptionConn::Standalone(conn) => conn.subscribe(self.channels(topics)).await,
            SubscriptionConn::Cluster(conn) => conn.subscribe(self.channels(topics)).await,
        }
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()> {
        match &self.conn {
            SubscriptionConn::Standalone(conn) => conn.unsubscribe(self.channels(topics)).await,
            SubscriptionConn::Cluster(conn) => conn.unsubscribe(self.channels(topics)).await,
        }
    }
}

/// Keys of a prefix no other test run uses, for the subscription tests against a real Redis.
#[cfg(test)]
fn test_keys(test: &str) -> Arc<Keys> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    Arc::new(Keys::new(&format!(
        "t-sub-{test}-{}-{nanos}",
        std::process::id()
    )))
}
