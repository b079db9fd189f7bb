//! The presence registry: which gateway nodes hold sockets of which users.
//!
//! A user is online while some node has an unexpired entry for it; each node refreshes its
//! entries with its heartbeat. The first/last transitions are decided atomically (inside a Lua
//! script on Redis, under one lock in memory), so two nodes racing on the same user cannot both
//! (or neither) report it. A node that dies stops refreshing; the survivors reap its entries and
//! report the users that thereby went offline. Gateways register and unregister users in batches.

use std::time::Duration;

use crate::{Bus, Result, UserId};

impl Bus {
    /// Registers the user's first socket on `node`; `true` when the user had no socket anywhere
    /// (the user just came online).
    pub async fn presence_connect(&self, user: UserId, node: &str, ttl: Duration) -> Result<bool> {
        let came_online = self.presence_connect_many(&[user], node, ttl).await?;
        Ok(came_online == [true])
    }

    /// Registers the first socket on `node` of each user; answers, in the order given, whether
    /// each user had no socket anywhere before (came online).
    pub async fn presence_connect_many(
        &self,
        users: &[UserId],
        node: &str,
        ttl: Duration,
    ) -> Result<Vec<bool>> {
        self.backend.presence_connect_many(users, node, ttl).await
    }

    /// Unregisters the user's last socket on `node`; `true` when no node holds the user any more
    /// (the user just went offline).
    pub async fn presence_disconnect(&self, user: UserId, node: &str) -> Result<bool> {
        let went_offline = self.presence_disconnect_many(&[user], node).await?;
        Ok(went_offline == [true])
    }

    /// Unregisters the last socket on `node` of each user; answers, in the order given, whether
    /// no node holds each user any more (went offline).
    pub async fn presence_disconnect_many(
        &self,
        users: &[UserId],
        node: &str,
    ) -> Result<Vec<bool>> {
        self.backend.presence_disconnect_many(users, node).await
    }

    /// Refreshes this node's liveness and the expiry of each local user's entry. Entries that
    /// were removed meanwhile are not re-created.
    pub async fn presence_heartbeat(
        &self,
        node: &str,
        users: &[UserId],
        ttl: Duration,
    ) -> Result<()> {
        self.backend.presence_heartbeat(node, users, ttl).await
    }

    /// Removes this node from the registry on a clean shutdown, after its sockets are closed.
    pub async fn presence_leave(&self, node: &str) -> Result<()> {
        self.backend.presence_leave(node).await
    }

    /// Finds nodes whose heartbeat expired, claims each (only one reaper wins a node), removes its
    /// entries and returns the users that went offline because of it.
    pub async fn reap_dead_nodes(&self) -> Result<Vec<UserId>> {
        self.backend.reap_dead_nodes().await
    }

    /// Whether each user has an unexpired entry, in the order given.
    pub async fn online(&self, users: &[UserId]) -> Result<Vec<bool>> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.online(users).await
    }
}
