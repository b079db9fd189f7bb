//! The announce bookkeeping in memory, as in Redis (`redis/announce.rs`): watermarks, each
//! replica's pending counts, pending changes and heartbeat deadlines. Watermarks and pending counts do not expire
//! here: the embedded mode is one process with one chat-api, whose own sends are all it holds.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{MemoryBus, deadline, now};
use crate::Result;
use crate::backend::AnnounceBackend;

#[derive(Default)]
pub(crate) struct Announce {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    watermarks: HashMap<u64, u64>,
    /// Replica → chat → pending sends.
    pending: HashMap<String, HashMap<u64, i64>>,
    /// Replica → change id → encoded pending change.
    changes: HashMap<String, HashMap<u64, String>>,
    /// Replica → heartbeat deadline.
    replicas: HashMap<String, Instant>,
    /// (replica, id) → the wall-clock ms the late publish's entry expires.
    late: HashMap<(String, u64), i64>,
}

#[async_trait]
impl AnnounceBackend for MemoryBus {
    async fn announced(&self, chat_id: u64) -> Result<Option<u64>> {
        Ok(self.announce.state.lock().watermarks.get(&chat_id).copied())
    }

    async fn advance_announced(&self, chat_id: u64, seq: u64) -> Result<()> {
        let mut state = self.announce.state.lock();
        let watermark = state.watermarks.entry(chat_id).or_insert(seq);
        *watermark = (*watermark).max(seq);
        Ok(())
    }

    async fn mark_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        let mut state = self.announce.state.lock();
        *state
            .pending
            .entry(replica.to_string())
            .or_default()
            .entry(chat_id)
            .or_default() += 1;
        Ok(())
    }

    async fn clear_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        let mut state = self.announce.state.lock();
        let chats = state.pending.entry(replica.to_string()).or_default();
        let left = chats.entry(chat_id).or_default();
        *left -= 1;
        if *left <= 0 {
            chats.remove(&chat_id);
        }
        if chats.is_empty() {
            state.pending.remove(replica);
        }
        Ok(())
    }

    async fn mark_change(&self, replica: &str, id: u64, change: &str) -> Result<()> {
        let mut state = self.announce.state.lock();
        state
            .changes
            .entry(replica.to_string())
            .or_default()
            .insert(id, change.to_string());
        Ok(())
    }

    async fn clear_change(&self, replica: &str, id: u64) -> Result<()> {
        let mut state = self.announce.state.lock();
        if let Some(changes) = state.changes.get_mut(replica) {
            changes.remove(&id);
            if changes.is_empty() {
                state.changes.remove(replica);
            }
        }
        Ok(())
    }

    async fn pending_changes(&self, replica: &str) -> Result<Vec<(u64, String)>> {
        let state = self.announce.state.lock();
        let mut changes: Vec<(u64, String)> = state
            .changes
            .get(replica)
            .map(|changes| changes.iter().map(|(id, c)| (*id, c.clone())).collect())
            .unwrap_or_default();
        changes.sort_unstable();
        Ok(changes)
    }

    async fn replica_heartbeat(&self, replica: &str, ttl: Duration) -> Result<()> {
        let until = deadline(now(), ttl);
        self.announce
            .state
            .lock()
            .replicas
            .insert(replica.to_string(), until);
        Ok(())
    }

    async fn dead_replicas(&self) -> Result<Vec<String>> {
        let now = now();
        let mut dead: Vec<String> = (self.announce.state.lock().replicas.iter())
            .filter(|(_, until)| **until <= now)
            .map(|(replica, _)| replica.clone())
            .collect();
        dead.sort();
        Ok(dead)
    }

    async fn pending_chats(&self, replica: &str) -> Result<Vec<u64>> {
        let state = self.announce.state.lock();
        let mut chats: Vec<u64> = state
            .pending
            .get(replica)
            .map(|chats| chats.keys().copied().collect())
            .unwrap_or_default();
        chats.sort_unstable();
        Ok(chats)
    }

    async fn forget_replica(&self, replica: &str) -> Result<()> {
        let mut state = self.announce.state.lock();
        state.pending.remove(replica);
        state.changes.remove(replica);
        state.replicas.remove(replica);
        state.late.retain(|(of, _), _| of != replica);
        Ok(())
    }

    async fn mark_late(&self, replica: &str, id: u64, until_ms: i64) -> Result<()> {
        let mut state = self.announce.state.lock();
        state.late.insert((replica.to_string(), id), until_ms);
        Ok(())
    }

    async fn clear_late(&self, replica: &str, id: u64) -> Result<()> {
        let mut state = self.announce.state.lock();
        state.late.remove(&(replica.to_string(), id));
        Ok(())
    }

    async fn late_publishes(&self, now_ms: i64) -> Result<u64> {
        let mut state = self.announce.state.lock();
        state.late.retain(|_, until_ms| *until_ms > now_ms);
        Ok(state.late.len() as u64)
    }
}
