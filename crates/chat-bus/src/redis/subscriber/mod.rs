//! A gateway's subscription connection: one connection carrying a SUBSCRIBE (SSUBSCRIBE on a
//! cluster) per locally connected user. Messages are forwarded, with the user id already parsed
//! from the channel name, to a channel the gateway's dispatcher reads.
//!
//! The connections are this crate's own (`node`): one to a standalone Redis, or one per master
//! of a cluster (`cluster`), which follows the slots across resharding and failovers. They
//! reconnect with backoff, and a `Disconnected` message tells the gateway that events may have
//! been missed meanwhile.
//!
//! On the in-memory bus a subscriber is a registration in the bus' own registry (see
//! `memory::pubsub`); it never disconnects, so it never sends `Disconnected`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::keys::Keys;
use crate::memory::Subscription;
use crate::{BusError, RedisMode, Result, UserId};
use cluster::ClusterSubscription;
use node::NodeSubscription;

mod cluster;
mod node;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A payload published to a user's channel.
    Payload { user: UserId, payload: Bytes },
    /// The subscription connection dropped; what was published until it is back is lost to it.
    Disconnected,
}

#[derive(Clone)]
enum SubscriptionConn {
    /// SUBSCRIBE on one Redis.
    Standalone(NodeSubscription),
    /// SSUBSCRIBE on a cluster: each channel on the master owning its slot.
    Cluster(ClusterSubscription),
    /// A registration on the in-memory bus, shared by the clones of this subscriber and
    /// unregistered when the last one goes.
    Memory(Arc<Subscription>),
}

#[derive(Clone)]
pub struct Subscriber {
    conn: SubscriptionConn,
    keys: Arc<Keys>,
}

impl Subscriber {
    pub(crate) fn memory(subscription: Subscription, keys: Arc<Keys>) -> Self {
        Self {
            conn: SubscriptionConn::Memory(Arc::new(subscription)),
            keys,
        }
    }

    pub(crate) async fn connect(
        mode: RedisMode,
        urls: &[String],
        keys: Arc<Keys>,
    ) -> Result<(Self, mpsc::UnboundedReceiver<BusMessage>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = match mode {
            RedisMode::Standalone => {
                let url = urls.first().map(String::as_str).unwrap_or_default();
                SubscriptionConn::Standalone(
                    NodeSubscription::connect(url, keys.clone(), tx).await?,
                )
            }
            RedisMode::Cluster => SubscriptionConn::Cluster(
                ClusterSubscription::connect(urls, keys.clone(), tx).await?,
            ),
            RedisMode::Memory => {
                return Err(BusError::Config(
                    "an in-memory subscriber comes from Bus::subscriber".into(),
                ));
            }
        };
        Ok((Self { conn, keys }, rx))
    }

    fn channels(&self, users: &[UserId]) -> Vec<String> {
        users.iter().map(|&u| self.keys.user_channel(u)).collect()
    }

    /// Subscribes to the channels of several users.
    pub async fn subscribe_many(&self, users: &[UserId]) -> Result<()> {
        // SUBSCRIBE without channels is an error; subscribing nobody is done.
        if users.is_empty() {
            return Ok(());
        }
        match &self.conn {
            SubscriptionConn::Memory(subscription) => subscription.subscribe_many(users),
            SubscriptionConn::Standalone(conn) => conn.subscribe(self.channels(users)).await?,
            SubscriptionConn::Cluster(conn) => conn.subscribe(self.channels(users)).await?,
        }
        Ok(())
    }

    pub async fn unsubscribe_many(&self, users: &[UserId]) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        match &self.conn {
            SubscriptionConn::Memory(subscription) => subscription.unsubscribe_many(users),
            SubscriptionConn::Standalone(conn) => conn.unsubscribe(self.channels(users)).await?,
            SubscriptionConn::Cluster(conn) => conn.unsubscribe(self.channels(users)).await?,
        }
        Ok(())
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
