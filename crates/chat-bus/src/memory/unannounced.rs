//! The unannounced-send records in memory: a set per chat, as the Redis set
//! (`redis/unannounced.rs`). No expiry: SQLite answers every commit, so nothing lands here in the
//! embedded mode unless a caller records by hand.

use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;

use super::MemoryBus;
use crate::backend::UnannouncedBackend;
use crate::{Result, UnannouncedSend};

#[derive(Default)]
pub(crate) struct Unannounced {
    by_chat: Mutex<HashMap<u64, BTreeSet<UnannouncedSend>>>,
}

impl Unannounced {
    pub(crate) fn record(&self, chat_id: u64, send: UnannouncedSend) {
        self.by_chat.lock().entry(chat_id).or_default().insert(send);
    }

    pub(crate) fn of(&self, chat_id: u64) -> Vec<UnannouncedSend> {
        self.by_chat
            .lock()
            .get(&chat_id)
            .map(|sends| sends.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub(crate) fn forget(&self, chat_id: u64, sends: &[UnannouncedSend]) {
        let mut by_chat = self.by_chat.lock();
        if let Some(set) = by_chat.get_mut(&chat_id) {
            for send in sends {
                set.remove(send);
            }
            if set.is_empty() {
                by_chat.remove(&chat_id);
            }
        }
    }
}

#[async_trait]
impl UnannouncedBackend for MemoryBus {
    async fn record_unannounced(&self, chat_id: u64, send: &UnannouncedSend) -> Result<()> {
        self.unannounced.record(chat_id, send.clone());
        Ok(())
    }

    async fn unannounced(&self, chat_id: u64) -> Result<Vec<UnannouncedSend>> {
        Ok(self.unannounced.of(chat_id))
    }

    async fn forget_unannounced(&self, chat_id: u64, sends: &[UnannouncedSend]) -> Result<()> {
        self.unannounced.forget(chat_id, sends);
        Ok(())
    }
}
