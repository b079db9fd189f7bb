//! Where a chat's events go on the bus. A group chat's events are published once, to the chat's
//! channel, and each gateway routes them to the members it holds; a private chat's (two members)
//! go to each member's own channel, as do user-scoped events (presence, logout). So a message to
//! a group of a thousand is one publish, not a thousand.
//!
//! Gateways learn a user's groups when the user connects (`/internal/v1/memberships`) and follow
//! membership changes through notices published here, in the chat's send order (the callers hold
//! the chat's send lock): a `member_removed` on the chat's channel reaches every gateway before the
//! chat's next event, and a `member_added` also goes to the added user's channel, so that the
//! gateway holding the user subscribes to the chat.
//!
//! The events a sync returns (`new_message`, `message_updated`, `message_delivered`,
//! `message_read`) also go into the recent-event log of each channel they are published on, in
//! the same command, scored by the time their cursor is made from (`crate::recent_log`).
//!
//! A chat's kind never changes, so it is looked up once and remembered (a bounded map, cleared
//! when full). Should the lookup fail, the event goes to every member's channel: slower, never
//! lost.

use std::collections::HashMap;

use chat_proto::ServerEvent;
use chat_proto::codec::BusBody;
use parking_lot::RwLock;

use crate::state::AppState;

/// Chats whose kind is remembered at most; past this the map starts over.
const MAX_KNOWN_CHATS: usize = 200_000;

/// Which chats are groups, as far as looked up.
#[derive(Default)]
pub struct ChatKinds {
    groups: RwLock<HashMap<u64, bool>>,
}

impl AppState {
    /// Publishes a chat's event to its members but `skip`: once on a group's channel, or on each
    /// member's channel for a private chat. `members` is who may see it (the chat's members).
    pub async fn publish_chat_event(
        &self,
        chat_id: u64,
        members: &[u64],
        event: ServerEvent,
        skip: Option<u64>,
    ) {
        let logged_at = event.sync_time_ms();
        if self.is_group(chat_id).await == Some(true) {
            let body = BusBody::ChatEvent {
                chat_id,
                skip,
                event,
            };
            match logged_at {
                Some(at_ms) => self.publish_to_chat_logged(chat_id, body, at_ms).await,
                None => self.publish_to_chat(chat_id, body).await,
            }
            return;
        }
        let others: Vec<u64>;
        let recipients = match skip {
            Some(skipped) => {
                others = members.iter().copied().filter(|&m| m != skipped).collect();
                &others[..]
            }
            None => members,
        };
        let body = BusBody::Event(event);
        match logged_at {
            Some(at_ms) => self.publish_logged(recipients, body, at_ms).await,
            None => self.publish(recipients, body).await,
        }
    }

    /// Tells the gateways that `user_id` joined group `chat_id`, whose last message was
    /// `after_seq`: on the chat's channel (gateways holding the user route the chat's next
    /// events to them) and on the user's (the gateway holding them subscribes to the chat).
    /// Call under the chat's send lock.
    pub async fn announce_member_added(&self, chat_id: u64, user_id: u64, after_seq: u64) {
        let body = BusBody::MemberAdded {
            chat_id,
            user_id,
            after_seq,
        };
        self.publish_to_chat(chat_id, body.clone()).await;
        self.publish(&[user_id], body).await;
    }

    /// Tells only the gateway holding `user_id` that they are in group `chat_id` (a new group,
    /// which no gateway routes yet).
    pub async fn announce_member_added_to_user(&self, chat_id: u64, user_id: u64, after_seq: u64) {
        let body = BusBody::MemberAdded {
            chat_id,
            user_id,
            after_seq,
        };
        self.publish(&[user_id], body).await;
    }

    /// Tells the gateways that `user_id` left group `chat_id`, on the chat's channel (before its
    /// next event) and on the user's own (for a gateway still learning the user's groups).
    /// Call under the chat's send lock.
    pub async fn announce_member_removed(&self, chat_id: u64, user_id: u64) {
        let body = BusBody::MemberRemoved { chat_id, user_id };
        self.publish_to_chat(chat_id, body.clone()).await;
        self.publish(&[user_id], body).await;
    }

    /// Whether the chat is a group; `None` when that could not be looked up.
    async fn is_group(&self, chat_id: u64) -> Option<bool> {
        if let Some(&group) = self.chat_kinds.groups.read().get(&chat_id) {
            return Some(group);
        }
        let group = match self.store.chat_kind_and_seq(chat_id).await {
            Ok(Some((kind, _))) => kind == chat_proto::ChatKind::Group,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, chat_id, "looking up a chat's kind failed");
                return None;
            }
        };
        self.remember_kind(chat_id, group);
        Some(group)
    }

    /// Notes a chat's kind (a new chat's creator knows it already).
    pub fn remember_kind(&self, chat_id: u64, group: bool) {
        let mut groups = self.chat_kinds.groups.write();
        if groups.len() >= MAX_KNOWN_CHATS {
            groups.clear();
        }
        groups.insert(chat_id, group);
    }
}
