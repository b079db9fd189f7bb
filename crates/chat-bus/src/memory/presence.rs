//! The presence registry in memory, shaped like its Redis counterpart (`redis/presence.rs`):
//! per user, the nodes holding the user's sockets with an expiry each (the `presence:{uid}`
//! sorted set, itself expiring after twice the TTL), the heartbeat deadline of each node
//! (`gw:nodes`) and the users of each node (`gw:node:<node>`, expiring after ten TTLs).
//!
//! One lock covers all three, so the first/last decisions that Redis makes inside a script are
//! just as atomic here, and a node is reaped once even if two gateways reap at the same time.

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{MemoryBus, deadline, now};
use crate::backend::PresenceBackend;
use crate::{Result, UserId};

/// Below this many users the user map is never swept.
const MIN_SWEEP: usize = 1024;

#[derive(Default)]
pub(crate) struct Presence {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    users: HashMap<UserId, UserNodes>,
    /// Node → heartbeat deadline.
    nodes: HashMap<String, Instant>,
    node_users: HashMap<String, NodeUsers>,
    sweep_above: usize,
}

/// `presence:{uid}`: node → entry expiry, and the key's own expiry.
struct UserNodes {
    nodes: HashMap<String, Instant>,
    key_expires: Instant,
}

/// `gw:node:<node>`: the node's users, and the key's expiry.
struct NodeUsers {
    users: HashSet<UserId>,
    key_expires: Instant,
}

impl State {
    /// The user's set if its key has not expired (an expired key is dropped, as Redis would).
    fn live_user(&mut self, user: UserId, now: Instant) -> Option<&mut UserNodes> {
        if self.users.get(&user).is_some_and(|u| u.key_expires <= now) {
            self.users.remove(&user);
        }
        self.users.get_mut(&user)
    }

    fn live_node_users(&mut self, node: &str, now: Instant) -> Option<&mut NodeUsers> {
        if self
            .node_users
            .get(node)
            .is_some_and(|n| n.key_expires <= now)
        {
            self.node_users.remove(node);
        }
        self.node_users.get_mut(node)
    }

    /// The DISCONNECT script: removes the node's entry and expired ones; `true` when the entry
    /// existed and none is left.
    fn remove_node_entry(&mut self, user: UserId, node: &str, now: Instant) -> bool {
        let Some(entry) = self.live_user(user, now) else {
            return false;
        };
        let removed = entry.nodes.remove(node).is_some();
        entry.nodes.retain(|_, expires| *expires > now);
        // Redis deletes an emptied sorted set by itself, whichever way it was emptied.
        let left = entry.nodes.len();
        if left == 0 {
            self.users.remove(&user);
        }
        removed && left == 0
    }

    /// Drops users whose key expired, once the map has doubled since the last sweep (a user
    /// whose gateway vanished without being reaped would otherwise stay forever).
    fn maybe_sweep(&mut self, now: Instant) {
        if self.users.len() > self.sweep_above.max(MIN_SWEEP) {
            self.users.retain(|_, u| u.key_expires > now);
            self.node_users.retain(|_, n| n.key_expires > now);
            self.sweep_above = self.users.len() * 2;
        }
    }
}

impl Presence {
    /// The CONNECT script plus the node's user set; `true` when no node held the user.
    pub(crate) fn connect(&self, user: UserId, node: &str, ttl: Duration, now: Instant) -> bool {
        let mut state = self.state.lock();
        let key_expires = deadline(now, ttl.saturating_mul(2));
        let before = match state.live_user(user, now) {
            Some(entry) => {
                entry.nodes.retain(|_, expires| *expires > now);
                entry.nodes.len()
            }
            None => 0,
        };
        let entry = state.users.entry(user).or_insert_with(|| UserNodes {
            nodes: HashMap::new(),
            key_expires,
        });
        entry.nodes.insert(node.to_string(), deadline(now, ttl));
        entry.key_expires = key_expires;

        let node_key_expires = deadline(now, ttl.saturating_mul(10));
        if state.live_node_users(node, now).is_none() {
            state.node_users.insert(
                node.to_string(),
                NodeUsers {
                    users: HashSet::new(),
                    key_expires: node_key_expires,
                },
            );
        }
        if let Some(node_users) = state.node_users.get_mut(node) {
            node_users.users.insert(user);
            node_users.key_expires = node_key_expires;
        }
        state.maybe_sweep(now);
        before == 0
    }

    /// `true` when the user just went offline.
    pub(crate) fn disconnect(&self, user: UserId, node: &str, now: Instant) -> bool {
        let mut state = self.state.lock();
        let went_offline = state.remove_node_entry(user, node, now);
        if let Some(node_users) = state.live_node_users(node, now) {
            node_users.users.remove(&user);
            if node_users.users.is_empty() {
                state.node_users.remove(node);
            }
        }
        went_offline
    }

    /// Refreshes the node's deadline and the entries it still has (never re-creating one).
    pub(crate) fn heartbeat(&self, node: &str, users: &[UserId], ttl: Duration, now: Instant) {
        let mut state = self.state.lock();
        let expiry = deadline(now, ttl);
        state.nodes.insert(node.to_string(), expiry);
        if let Some(node_users) = state.live_node_users(node, now) {
            node_users.key_expires = deadline(now, ttl.saturating_mul(10));
        }
        let key_expires = deadline(now, ttl.saturating_mul(2));
        for &user in users {
            if let Some(entry) = state.live_user(user, now) {
                // ZADD XX: only an entry that is still there (even if past its expiry).
                if let Some(expires) = entry.nodes.get_mut(node) {
                    *expires = expiry;
                }
                entry.key_expires = key_expires;
            }
        }
    }

    pub(crate) fn leave(&self, node: &str) {
        let mut state = self.state.lock();
        state.nodes.remove(node);
        state.node_users.remove(node);
    }

    /// Removes every node whose heartbeat deadline passed and its entries; returns the users
    /// that went offline (ordered by node deadline, then user id, for stable results).
    pub(crate) fn reap(&self, now: Instant) -> Vec<(String, Vec<UserId>)> {
        let mut state = self.state.lock();
        let mut dead: Vec<(Instant, String)> = state
            .nodes
            .iter()
            .filter(|(_, expires)| **expires <= now)
            .map(|(node, expires)| (*expires, node.clone()))
            .collect();
        dead.sort();
        let mut reaped = Vec::with_capacity(dead.len());
        for (_, node) in dead {
            state.nodes.remove(&node);
            let mut users: Vec<UserId> = state
                .live_node_users(&node, now)
                .map(|n| n.users.iter().copied().collect())
                .unwrap_or_default();
            users.sort_unstable();
            let offline = users
                .into_iter()
                .filter(|&user| state.remove_node_entry(user, &node, now))
                .collect();
            state.node_users.remove(&node);
            reaped.push((node, offline));
        }
        reaped
    }

    /// Whether each user has an entry expiring at or after `now` (ZCOUNT now +inf).
    pub(crate) fn online(&self, users: &[UserId], now: Instant) -> Vec<bool> {
        let mut state = self.state.lock();
        users
            .iter()
            .map(|&user| {
                state
                    .live_user(user, now)
                    .is_some_and(|entry| entry.nodes.values().any(|expires| *expires >= now))
            })
            .collect()
    }
}

#[async_trait]
impl PresenceBackend for MemoryBus {
    async fn presence_connect_many(
        &self,
        users: &[UserId],
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>> {
        let now = now();
        Ok(users
            .iter()
            .map(|&user| self.presence.connect(user, node, ttl, now))
            .collect())
    }

    async fn presence_disconnect_many(&self, users: &[UserId], node: &str) -> Result<Vec<bool>> {
        let now = now();
        Ok(users
            .iter()
            .map(|&user| self.presence.disconnect(user, node, now))
            .collect())
    }

    async fn presence_heartbeat(&self, node: &str, users: &[UserId], ttl: Duration) -> Result<()> {
        self.presence.heartbeat(node, users, ttl, now());
        Ok(())
    }

    async fn presence_leave(&self, node: &str) -> Result<()> {
        self.presence.leave(node);
        Ok(())
    }

    async fn reap_dead_nodes(&self) -> Result<Vec<UserId>> {
        let mut offline = Vec::new();
        for (node, users) in self.presence.reap(now()) {
            tracing::warn!(node = %node, "reaped a gateway node whose heartbeat expired");
            offline.extend(users);
        }
        Ok(offline)
    }

    async fn online(&self, users: &[UserId]) -> Result<Vec<bool>> {
        Ok(self.presence.online(users, now()))
    }
}
