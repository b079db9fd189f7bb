//! The subscription connection to one Redis server: one RESP2 connection in subscribed mode,
//! owned by one task, that turns every pushed message into a [`BusMessage`]. A standalone Redis
//! has one, with SUBSCRIBE; a cluster has one per master, with SSUBSCRIBE (see `cluster`).
//!
//! Why not redis-rs's connection manager, as for every other command: it parses each push into a
//! tree of owned values with a general-purpose parser, and that was about a fifth of a gateway's
//! CPU while it fanned a group's messages out (docs/performance.md). Here redis-protocol's codec
//! decodes a push without copying: the payload handed on is a slice of the read buffer.
//!
//! When the connection breaks, the requests in flight fail, the gateway hears `Disconnected` (its
//! registry then subscribes its users again), and the task reconnects with backoff; a request
//! made while it is down fails at once. A PING every ten seconds finds a connection that died
//! without a word (a host gone, a dropped route), which would otherwise go on delivering nothing.
//!
//! The module's parts: `connection` opens and authenticates a connection and speaks RESP2 on it;
//! `requests` keeps the (un)subscribe requests in flight and matches Redis' confirmations to
//! them; `task` is the task that owns the connection, serves requests and pushes, pings, and
//! reconnects. [`NodeSubscription`] here is the handle the rest of the crate holds.

mod connection;
mod requests;
mod task;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::BusMessage;
use crate::keys::Keys;
use crate::{BusError, Result};
pub(crate) use connection::Endpoint;
use requests::{Command, Request};
use task::{Task, Timing};

/// A handle on the subscription task; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct NodeSubscription {
    requests: mpsc::UnboundedSender<Request>,
    sharded: bool,
}

impl NodeSubscription {
    /// Connects to a standalone Redis (an unreachable Redis is an error here, as it is for every
    /// other connection) and starts the task that forwards pushed messages to `messages`.
    pub(crate) async fn connect(
        url: &str,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        Self::open(Endpoint::parse(url)?, false, keys, messages).await
    }

    /// Connects to one master of a cluster, for shard channels (SSUBSCRIBE).
    pub(crate) async fn connect_sharded(
        endpoint: Endpoint,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        Self::open(endpoint, true, keys, messages).await
    }

    async fn open(
        endpoint: Endpoint,
        sharded: bool,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        let connection = endpoint.open(&keys.subscriber_name()).await?;
        let (requests, waiting) = mpsc::unbounded_channel();
        let task = Task {
            endpoint,
            keys,
            messages,
            requests: waiting,
            timing: Timing::default(),
        };
        tokio::spawn(task.run(connection));
        Ok(Self { requests, sharded })
    }

    /// Subscribes to `channels`; resolves once Redis confirmed every one of them.
    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        let command = if self.sharded {
            Command::ShardSubscribe
        } else {
            Command::Subscribe
        };
        self.request(command, channels).await
    }

    pub(crate) async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        let command = if self.sharded {
            Command::ShardUnsubscribe
        } else {
            Command::Unsubscribe
        };
        self.request(command, channels).await
    }

    async fn request(&self, command: Command, channels: Vec<String>) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            command,
            channels,
            done,
        };
        self.requests
            .send(request)
            .map_err(|_| unavailable("the subscription task has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("the subscription task has stopped")))
    }
}

fn unavailable(why: &str) -> BusError {
    BusError::Subscription(why.to_string())
}
