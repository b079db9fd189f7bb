//! Per-user and per-chat channels inside one process: a registry from topic (a user or a group
//! chat) to the subscriptions that subscribed it, each with the unbounded sender of its
//! [`crate::Subscriber`]'s channel.
//!
//! Like SUBSCRIBE on Redis, subscribing a topic twice on one subscription delivers once, and
//! several subscriptions (two in-process gateways) each get every message. Publishing clones the
//! payload `Bytes` (a reference count, not the data) into each channel and never waits: the
//! channels are unbounded, as the Redis subscriber's is. A subscription is dropped from the
//! registry with the last clone of its `Subscriber`, or at the first publish after its receiver
//! went away.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::backend::SubscriptionBackend;
use crate::{BusMessage, ChatId, Result, Topic, UserId};

type Sender = mpsc::UnboundedSender<BusMessage>;

#[derive(Default)]
pub(crate) struct PubSub {
    // Publishing only reads the registry, so concurrent publishers do not queue behind each other.
    registry: RwLock<Registry>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Who gets a topic's messages: (subscription id, its sender).
    by_topic: HashMap<Topic, Vec<(u64, Sender)>>,
    /// What each subscription subscribed, to clean `by_topic` when it goes.
    subscriptions: HashMap<u64, (Sender, HashSet<Topic>)>,
}

impl Registry {
    fn remove_subscription(&mut self, id: u64) {
        let Some((_, topics)) = self.subscriptions.remove(&id) else {
            return;
        };
        for topic in topics {
            self.unlink(topic, id);
        }
    }

    fn unlink(&mut self, topic: Topic, id: u64) {
        if let Some(subscribers) = self.by_topic.get_mut(&topic) {
            subscribers.retain(|(sub, _)| *sub != id);
            if subscribers.is_empty() {
                self.by_topic.remove(&topic);
            }
        }
    }
}

impl PubSub {
    /// A new subscription with no user yet, and the receiving end of its channel.
    pub(crate) fn subscribe(
        self: &Arc<Self>,
    ) -> (Subscription, mpsc::UnboundedReceiver<BusMessage>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut registry = self.registry.write();
        let id = registry.next_id;
        registry.next_id += 1;
        registry.subscriptions.insert(id, (tx, HashSet::new()));
        let subscription = Subscription {
            pubsub: self.clone(),
            id,
        };
        (subscription, rx)
    }

    /// Hands the payload to every subscription of each user, in the order given (a user listed
    /// twice gets it twice, as two PUBLISH commands would do).
    pub(crate) fn publish(&self, users: &[UserId], payload: &Bytes) {
        self.publish_topics(users.iter().map(|&user| Topic::User(user)), payload);
    }

    /// Hands the payload to every subscription of the chat.
    pub(crate) fn publish_chat(&self, chat: ChatId, payload: &Bytes) {
        self.publish_topics(std::iter::once(Topic::Chat(chat)), payload);
    }

    fn publish_topics(&self, topics: impl Iterator<Item = Topic>, payload: &Bytes) {
        let mut gone = Vec::new();
        {
            let registry = self.registry.read();
            for topic in topics {
                for (id, tx) in registry.by_topic.get(&topic).into_iter().flatten() {
                    if tx.send(BusMessage::on(topic, payload.clone())).is_err() {
                        gone.push(*id);
                    }
                }
            }
        }
        if !gone.is_empty() {
            let mut registry = self.registry.write();
            for id in gone {
                registry.remove_subscription(id);
            }
        }
    }
}

/// One subscriber's registration; shared by the clones of its [`crate::Subscriber`], and
/// unregistered when the last one goes.
pub(crate) struct Subscription {
    pubsub: Arc<PubSub>,
    id: u64,
}

impl Subscription {
    pub(crate) fn subscribe_many(&self, topics: &[Topic]) {
        let mut registry = self.pubsub.registry.write();
        let Registry {
            by_topic,
            subscriptions,
            ..
        } = &mut *registry;
        // Gone only if the registry dropped it after its receiver closed: nothing to deliver to.
        let Some((tx, subscribed)) = subscriptions.get_mut(&self.id) else {
            return;
        };
        for &topic in topics {
            if subscribed.insert(topic) {
                by_topic
                    .entry(topic)
                    .or_default()
                    .push((self.id, tx.clone()));
            }
        }
    }

    pub(crate) fn unsubscribe_many(&self, topics: &[Topic]) {
        let mut registry = self.pubsub.registry.write();
        for &topic in topics {
            let was_subscribed = registry
                .subscriptions
                .get_mut(&self.id)
                .is_some_and(|(_, subscribed)| subscribed.remove(&topic));
            if was_subscribed {
                registry.unlink(topic, self.id);
            }
        }
    }
}

#[async_trait]
impl SubscriptionBackend for Subscription {
    async fn subscribe(&self, topics: &[Topic]) -> Result<()> {
        self.subscribe_many(topics);
        Ok(())
    }

    async fn unsubscribe(&self, topics: &[Topic]) -> Result<()> {
        self.unsubscribe_many(topics);
        Ok(())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.pubsub.registry.write().remove_subscription(self.id);
    }
}
