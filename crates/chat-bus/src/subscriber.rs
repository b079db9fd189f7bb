//! A gateway's subscription: one SUBSCRIBE (SSUBSCRIBE on a cluster) per locally connected user.
//! Messages are forwarded, with the user id already parsed from the channel name, to a channel
//! the gateway's dispatcher reads.
//!
//! On Redis the subscription is a connection of its own (`redis/subscriber/`) that reconnects
//! with backoff; a `Disconnected` message tells the gateway that events may have been missed
//! meanwhile. On the in-memory bus it is a registration in the bus' own registry
//! (`memory/pubsub.rs`); it never disconnects, so it never sends `Disconnected`.

use std::sync::Arc;

use bytes::Bytes;

use crate::backend::SubscriptionBackend;
use crate::{Result, UserId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A payload published to a user's channel.
    Payload { user: UserId, payload: Bytes },
    /// The subscription connection dropped; what was published until it is back is lost to it.
    Disconnected,
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
        // SUBSCRIBE without channels is an error; subscribing nobody is done.
        if users.is_empty() {
            return Ok(());
        }
        self.subscription.subscribe(users).await
    }

    pub async fn unsubscribe_many(&self, users: &[UserId]) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        self.subscription.unsubscribe(users).await
    }
}
