//! The subscription to a Redis Cluster: each user's shard channel is SSUBSCRIBEd on the master
//! that owns its slot, over one [`NodeSubscription`] per master, the same connection a standalone
//! gateway uses (redis-rs's cluster connection parsed every push into owned values, and that cost
//! the cluster's fan-out about as much as it had cost standalone's: docs/performance.md).
//!
//! The slot map comes from CLUSTER SLOTS, asked of a known master or a seed. It is asked again
//! whenever a command fails: a `MOVED` after a slot moved, a master that died and whose replica
//! was promoted. The failed channels are then tried on the new map. A master's connection that
//! breaks sends `Disconnected` by itself; one that the new map no longer lists is dropped, and
//! `Disconnected` is sent for it too, so the gateway subscribes its users again wherever their
//! slots now are.

use std::collections::HashMap;
use std::sync::Arc;

use redis_protocol::resp2::types::BytesFrame;
use tokio::sync::{Mutex, mpsc};

use super::node::{Endpoint, NodeSubscription};
use crate::BusMessage;
use crate::keys::Keys;
use crate::redis::{SLOTS, slot_of};
use crate::{BusError, Result};

/// Tries of one (un)subscribe: the first on the map as it is, then on fresh maps.
const ATTEMPTS: usize = 3;

/// A handle on the subscription; every clone shares the connections.
#[derive(Clone)]
pub(crate) struct ClusterSubscription {
    shards: Arc<Mutex<Shards>>,
}

impl ClusterSubscription {
    /// Reads the slot map from the first seed that answers; connections to masters are opened
    /// when a channel of theirs is first subscribed.
    pub(crate) async fn connect(
        urls: &[String],
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        let seeds = urls
            .iter()
            .map(|url| Endpoint::parse(url))
            .collect::<Result<Vec<_>>>()?;
        if seeds.is_empty() {
            return Err(BusError::Config("no Redis Cluster seed URL".into()));
        }
        let mut shards = Shards {
            seeds,
            keys,
            messages,
            slots: Vec::new(),
            masters: HashMap::new(),
        };
        shards.refresh().await?;
        Ok(Self {
            shards: Arc::new(Mutex::new(shards)),
        })
    }

    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        self.shards
            .lock()
            .await
            .apply(Change::Subscribe, channels)
            .await
    }

    pub(crate) async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        self.shards
            .lock()
            .await
            .apply(Change::Unsubscribe, channels)
            .await
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Subscribe,
    Unsubscribe,
}

/// The slots `first..=last` and the master serving them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    first: u16,
    last: u16,
    master: Endpoint,
}

struct Shards {
    seeds: Vec<Endpoint>,
    keys: Arc<Keys>,
    messages: mpsc::UnboundedSender<BusMessage>,
    /// Sorted by `first`.
    slots: Vec<SlotRange>,
    masters: HashMap<Endpoint, NodeSubscription>,
}

impl Shards {
    async fn apply(&mut self, change: Change, mut channels: Vec<String>) -> Result<()> {
        let mut attempt = 1;
        loop {
            let (failed, error) = self.send(change, channels).await;
            let Some(error) = error else { return Ok(()) };
            if attempt == ATTEMPTS {
                return Err(error);
            }
            tracing::debug!(error = %error, channels = failed.len(), "re-reading the slot map");
            self.refresh().await?;
            channels = failed;
            attempt += 1;
        }
    }

    /// Sends the change to each master for its channels, all masters at once. Returns the
    /// channels that failed and the first error.
    async fn send(
        &mut self,
        change: Change,
        channels: Vec<String>,
    ) -> (Vec<String>, Option<BusError>) {
        let mut by_master: HashMap<Endpoint, Vec<String>> = HashMap::new();
        let mut failed = Vec::new();
        let mut error = None;
        for channel in channels {
            match master_of(&self.slots, slot_of(channel.as_bytes())) {
                Some(master) => by_master.entry(master.clone()).or_default().push(channel),
                None => {
                    failed.push(channel);
                    error.get_or_insert_with(|| unavailable("a slot no master serves"));
                }
            }
        }
        let mut requests = Vec::new();
        for (master, mut channels) in by_master {
            // Same-slot channels side by side go out as one command (see `node::requests`).
            channels.sort_by_key(|channel| slot_of(channel.as_bytes()));
            let connection = match (change, self.masters.get(&master)) {
                (_, Some(connection)) => connection.clone(),
                // Nothing was subscribed where nothing is connected.
                (Change::Unsubscribe, None) => continue,
                (Change::Subscribe, None) => match self.open(&master).await {
                    Ok(connection) => connection,
                    Err(e) => {
                        failed.extend(channels);
                        error.get_or_insert(e);
                        continue;
                    }
                },
            };
            requests.push(async move {
                let outcome = match change {
                    Change::Subscribe => connection.subscribe(channels.clone()).await,
                    Change::Unsubscribe => connection.unsubscribe(channels.clone()).await,
                };
                (channels, outcome)
            });
        }
        for (channels, outcome) in futures_util::future::join_all(requests).await {
            if let Err(e) = outcome {
                failed.extend(channels);
                error.get_or_insert(e);
            }
        }
        (failed, error)
    }

    async fn open(&mut self, master: &Endpoint) -> Result<NodeSubscription> {
        let connection = NodeSubscription::connect_sharded(
            master.clone(),
            self.keys.clone(),
            self.messages.clone(),
        )
        .await?;
        self.masters.insert(master.clone(), connection.clone());
        Ok(connection)
    }

    /// Reads the slot map again, from the masters first (the seeds may be stale), and drops the
    /// connections to servers that are no longer masters.
    async fn refresh(&mut self) -> Result<()> {
        let mut candidates: Vec<Endpoint> = Vec::new();
        for node in self.slots.iter().map(|r| &r.master).chain(&self.seeds) {
            if !candidates.contains(node) {
                candidates.push(node.clone());
            }
        }
        let mut last_error = unavailable("no cluster node to ask for the slot map");
        for node in candidates {
            match node.query(&["CLUSTER", "SLOTS"]).await {
                Ok(reply) => match parse_slots(reply, &node) {
                    Some(slots) if !slots.is_empty() => {
                        self.adopt(slots);
                        return Ok(());
                    }
                    _ => last_error = unavailable("CLUSTER SLOTS gave no slot map"),
                },
                Err(e) => last_error = e,
            }
        }
        Err(last_error)
    }

    fn adopt(&mut self, slots: Vec<SlotRange>) {
        let before = self.masters.len();
        self.masters
            .retain(|master, _| slots.iter().any(|range| &range.master == master));
        if self.masters.len() < before {
            // Whatever was subscribed on the dropped connections is gone with them.
            let _ = self.messages.send(BusMessage::Disconnected);
        }
        self.slots = slots;
    }
}

fn unavailable(why: &str) -> BusError {
    BusError::Subscription(why.to_string())
}

fn master_of(slots: &[SlotRange], slot: u16) -> Option<&Endpoint> {
    let after = slots.partition_point(|range| range.first <= slot);
    let range = slots.get(after.checked_sub(1)?)?;
    (slot <= range.last).then_some(&range.master)
}

/// The ranges of a CLUSTER SLOTS reply, sorted: `[first, last, [host, port, id, …], replicas…]`
/// each. An empty host means the server that answered; `?` an unknown one (the range is left out).
fn parse_slots(reply: BytesFrame, asked: &Endpoint) -> Option<Vec<SlotRange>> {
    let BytesFrame::Array(entries) = reply else {
        return None;
    };
    let mut ranges = Vec::with_capacity(entries.len());
    for entry in entries {
        let BytesFrame::Array(parts) = entry else {
            return None;
        };
        let (Some(first), Some(last), Some(BytesFrame::Array(master))) =
            (parts.first(), parts.get(1), parts.get(2))
        else {
            return None;
        };
        let (Some(BytesFrame::BulkString(host)), Some(BytesFrame::Integer(port))) =
            (master.first(), master.get(1))
        else {
            return None;
        };
        let host = std::str::from_utf8(host).ok()?;
        if host == "?" {
            continue;
        }
        let host = if host.is_empty() { asked.host() } else { host };
        ranges.push(SlotRange {
            first: slot_number(first)?,
            last: slot_number(last)?,
            master: asked.at(host, u16::try_from(*port).ok()?),
        });
    }
    ranges.sort_by_key(|range| range.first);
    Some(ranges)
}

fn slot_number(frame: &BytesFrame) -> Option<u16> {
    match frame {
        BytesFrame::Integer(n) => u16::try_from(*n).ok().filter(|&slot| slot < SLOTS),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
