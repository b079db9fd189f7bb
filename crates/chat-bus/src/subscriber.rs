//! A gateway's subscription: one SUBSCRIBE (SSUBSCRIBE on a cluster) per locally connected user,
//! and one per group chat that has a member connected here. Messages are forwarded, with the
//! user or chat id already parsed from the channel name, to a channel the gateway's dispatcher
//! reads.
//!
//! On Redis the subscription is a connection of its own (`redis/subscriber/`) that reconnects
//! with backoff; a `Disconnected` message tells the gateway that events may have been missed
//! meanwhile. On the in-memory bus it is a registration in the bus' own registry
//! (`memory/pubsub.rs`); it never disconnects, so it never sends `Disconnected`.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::SubscriptionBackend;
use crate::{ChatId, Result, Topic, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A payload published to a user's channel.
    Payload { user: UserId, payload: Bytes },
    /// A payload published to a group chat's channel.
    ChatPayload { chat: ChatId, payload: Bytes },
    /// The subscription connection dropped; what was published until it is back is lost to it.
    Disconnected,
}

impl BusMessage {
    /// The message for a payload that arrived on `topic`'s channel.
    pub(crate) fn on(topic: Topic, payload: Bytes) -> Self {
        match topic {
            Topic::User(user) => Self::Payload { user, payload },
            Topic::Chat(chat) => Self::ChatPayload { chat, payload },
        }
    }
}

/// The handle on a subscription; clones share it, and it ends with the last one.
#[derive(Clone)]
pub struct Subscriber {
    subscription: Arc<dyn SubscriptionBackend>,
}

impl Subscriber {
    pub(crate) fn new(subscription: Arc<dyn SubscriptionBackend>) -> Self {
        Self { subscription }
    }

    /// Subscribes to the channels of several users.
    pub async fn subscribe_many(&self, users: &[UserId]) -> Result<()> {
        let topics: Vec<Topic> = users.iter().map(|&user| Topic::User(user)).collect();
        self.subscribe_topics(&topics).await
    }

    pub async fn unsubscribe_many(&self, users: &[UserId]) -> Result<()> {
        let topics: Vec<Topic> = users.iter().map(|&user| Topic::User(user)).collect();
        self.unsubscribe_topics(&topics).await
    }

    /// Subscribes to the channels of several users and group chats, in one request.
    pub async fn subscribe_topics(&self, topics: &[Topic]) -> Result<()> {
        // SUBSCRIBE without channels is an error; subscribing nothing is done.
        if topics.is_empty() {
            return Ok(());
        }
        self.subscription.subscribe(topics).await
    }

    pub async fn unsubscribe_topics(&self, topics: &[Topic]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.subscription.unsubscribe(topics).await
    }
}
