//! A gateway's subscription connection: one RESP3 connection carrying a SUBSCRIBE per locally
//! connected user. Messages arrive as RESP3 pushes and are forwarded, with the user id already
//! parsed from the channel name, to a channel the gateway's dispatcher reads.
//!
//! The connection manager reconnects with backoff and re-issues every subscription by itself;
//! a `Disconnected` message tells the gateway that events may have been missed meanwhile.
//!
//! On the in-memory bus a subscriber is a registration in the bus' own registry (see
//! `memory::pubsub`); it never disconnects, so it never sends `Disconnected`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::mpsc;

use crate::keys::Keys;
use crate::memory::Subscription;
use crate::{BusError, RedisMode, Result, UserId, cluster_builder};
use redis::cluster_async::ClusterConnection;

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
    Standalone(ConnectionManager),
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
        let push_keys = keys.clone();
        let forward = move |info: PushInfo| {
            if let Some(message) = to_bus_message(&push_keys, info) {
                // The receiver is gone only while the gateway shuts down.
                let _ = tx.send(message);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        let conn = match mode {
            RedisMode::Standalone => {
                let url = urls.first().map(String::as_str).unwrap_or_default();
                let client = redis::Client::open(with_resp3(url))?;
                let config = ConnectionManagerConfig::new()
                    .set_push_sender(forward)
                    .set_automatic_resubscription()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(5)))
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(2));
                SubscriptionConn::Standalone(
                    ConnectionManager::new_with_config(client, config).await?,
                )
            }
            RedisMode::Cluster => {
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
            SubscriptionConn::Standalone(conn) => {
                conn.clone().subscribe(self.channels(users)).await?
            }
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
            SubscriptionConn::Standalone(conn) => {
                conn.clone().unsubscribe(self.channels(users)).await?
            }
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

fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}/?protocol=resp3")
    }
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

#[cfg(test)]
mod tests {
    use super::with_resp3;

    #[test]
    fn resp3_is_requested_once() {
        assert_eq!(with_resp3("redis://h:1"), "redis://h:1/?protocol=resp3");
        assert_eq!(
            with_resp3("redis://h:1/0?x=1"),
            "redis://h:1/0?x=1&protocol=resp3"
        );
        assert_eq!(
            with_resp3("redis://h/?protocol=resp3"),
            "redis://h/?protocol=resp3"
        );
    }
}
