//! A gateway's subscription connection: one connection carrying a SUBSCRIBE (SSUBSCRIBE on a
//! cluster) per locally connected user. Messages are forwarded, with the user id already parsed
//! from the channel name, to a channel the gateway's dispatcher reads.
//!
//! On a standalone Redis the connection is this crate's own (`standalone`); on a cluster it is
//! redis-rs's, which follows the slots across shards and failovers. Both reconnect with backoff,
//! and a `Disconnected` message tells the gateway that events may have been missed meanwhile.
//!
//! On the in-memory bus a subscriber is a registration in the bus' own registry (see
//! `memory::pubsub`); it never disconnects, so it never sends `Disconnected`.

use std::sync::Arc;

use bytes::Bytes;
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::keys::Keys;
use crate::memory::Subscription;
use crate::{BusError, RedisMode, Result, UserId, cluster_builder};
use redis::cluster_async::ClusterConnection;
use standalone::StandaloneSubscription;

mod standalone;

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
    Standalone(StandaloneSubscription),
    /// SSUBSCRIBE on a cluster: each channel lives on the shard owning its slot; the client keeps
    /// one connection per shard and follows topology changes and failovers.
    Cluster(ClusterConnection),
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
                    StandaloneSubscription::connect(url, keys.clone(), tx).await?,
                )
            }
            RedisMode::Cluster => {
                let push_keys = keys.clone();
                let forward = move |info: PushInfo| {
                    if let Some(message) = to_bus_message(&push_keys, info) {
                        // The receiver is gone only while the gateway shuts down.
                        let _ = tx.send(message);
                    }
                    Ok::<(), std::convert::Infallible>(())
                };
                let client = cluster_builder(urls)
                    .use_protocol(redis::ProtocolVersion::RESP3)
                    .push_sender(forward)
                    .build()?;
                SubscriptionConn::Cluster(client.get_async_connection().await?)
            }
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
            SubscriptionConn::Cluster(conn) => {
                // One command per channel: channels of different users live in different slots.
                for_each_channel(conn, self.channels(users), |mut conn, channel| async move {
                    conn.ssubscribe(channel).await
                })
                .await?;
            }
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
            SubscriptionConn::Cluster(conn) => {
                for_each_channel(conn, self.channels(users), |mut conn, channel| async move {
                    conn.sunsubscribe(channel).await
                })
                .await?;
            }
        }
        Ok(())
    }
}

/// Runs one command per channel concurrently on the multiplexed cluster connection.
async fn for_each_channel<F, Fut>(
    conn: &ClusterConnection,
    channels: Vec<String>,
    command: F,
) -> redis::RedisResult<()>
where
    F: Fn(ClusterConnection, String) -> Fut,
    Fut: std::future::Future<Output = redis::RedisResult<()>>,
{
    let results = futures_util::future::join_all(
        channels
            .into_iter()
            .map(|channel| command(conn.clone(), channel)),
    )
    .await;
    results.into_iter().collect()
}

fn to_bus_message(keys: &Keys, info: PushInfo) -> Option<BusMessage> {
    match info.kind {
        PushKind::Message | PushKind::SMessage => {
            let mut data = info.data.into_iter();
            let channel = data.next()?;
            let payload = data.next()?;
            let (Value::BulkString(channel), Value::BulkString(payload)) = (channel, payload)
            else {
                return None;
            };
            let user = keys.user_of_channel(&channel)?;
            Some(BusMessage::Payload {
                user,
                payload: Bytes::from(payload),
            })
        }
        PushKind::Disconnection => Some(BusMessage::Disconnected),
        _ => None,
    }
}
