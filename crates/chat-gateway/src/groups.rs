//! Which local users are in which group chats: how a group's events, published once on the
//! chat's channel, reach the members connected here.
//!
//! The registry fills it when a user's first socket opens here (one memberships request per
//! batch) and empties it when the last one closes; membership notices change it as they come.
//! The dispatcher reads it for every group event, and applies a removal read from the chat's own
//! channel at once, so that a removed member gets none of the chat's later events.
//!
//! Each route carries the seq of the chat's last message when the member was added: the member
//! gets the chat's messages above it only (a message still on its way from before the addition
//! is not theirs to receive live; history is where they find it). A member added while online,
//! to a chat this node did not route to them, starts as a pending route that gets nothing: the
//! registry subscribes the chat's channel, then the dispatcher pauses the member's sockets,
//! activates the route and replays the chat's messages since the addition (`dispatch`), so
//! nothing published before the subscription was confirmed is missed.

use std::collections::{HashMap, HashSet};

use parking_lot::RwLock;

use crate::ids::IdMap;

use crate::hub::UserId;

pub type ChatId = u64;

/// The seq of a pending route: above every message, so it gets none.
const PENDING: u64 = u64::MAX;

#[derive(Default)]
pub struct GroupRoutes {
    routes: RwLock<Routes>,
}

#[derive(Default)]
struct Routes {
    /// Per chat, its local members and the seq above which each gets its messages.
    by_chat: IdMap<IdMap<u64>>,
    /// Per local user whose groups are known, those groups.
    by_user: HashMap<UserId, HashSet<ChatId>>,
}

impl Routes {
    fn add(&mut self, chat: ChatId, user: UserId, after_seq: u64) -> bool {
        let Some(chats) = self.by_user.get_mut(&user) else {
            return false;
        };
        chats.insert(chat);
        let members = self.by_chat.entry(chat).or_default();
        if members.contains_key(&user) {
            return false;
        }
        members.insert(user, after_seq);
        true
    }

    fn remove(&mut self, chat: ChatId, user: UserId) {
        if let Some(chats) = self.by_user.get_mut(&user) {
            chats.remove(&chat);
        }
        if let Some(members) = self.by_chat.get_mut(&chat) {
            members.remove(&user);
            if members.is_empty() {
                self.by_chat.remove(&chat);
            }
        }
    }
}

impl GroupRoutes {
    /// Sets a local user's groups as chat-api listed them: new routes get every message from
    /// now on, routes already there keep theirs, groups no longer listed are dropped.
    pub fn install(&self, user: UserId, chats: &[ChatId]) {
        let mut routes = self.routes.write();
        let listed: HashSet<ChatId> = chats.iter().copied().collect();
        let before = routes
            .by_user
            .insert(user, HashSet::new())
            .unwrap_or_default();
        for &gone in before.difference(&listed) {
            routes.remove(gone, user);
        }
        for &chat in &listed {
            let seq = routes
                .by_chat
                .get(&chat)
                .and_then(|members| members.get(&user))
                .copied()
                .unwrap_or(0);
            routes.add(chat, user, seq);
        }
    }

    /// Whether the user's groups are known here (the user is held and was installed).
    pub fn knows(&self, user: UserId) -> bool {
        self.routes.read().by_user.contains_key(&user)
    }

    /// The user's groups, if known here (a resume from the log reads their channels).
    pub fn chats_of(&self, user: UserId) -> Option<Vec<ChatId>> {
        let routes = self.routes.read();
        Some(routes.by_user.get(&user)?.iter().copied().collect())
    }

    /// Whether the chat's events already reach the user.
    pub fn routes(&self, chat: ChatId, user: UserId) -> bool {
        self.routes
            .read()
            .by_chat
            .get(&chat)
            .is_some_and(|members| members.contains_key(&user))
    }

    /// Routes the chat's messages above `after_seq` to a known user; `false` if the user is not
    /// known here or was routed already (an existing route keeps its seq).
    pub fn add(&self, chat: ChatId, user: UserId, after_seq: u64) -> bool {
        self.routes.write().add(chat, user, after_seq)
    }

    /// A route that gets nothing until [`GroupRoutes::activate`]: see the module docs.
    pub fn add_pending(&self, chat: ChatId, user: UserId) -> bool {
        self.routes.write().add(chat, user, PENDING)
    }

    /// Whether the user's route in the chat waits for [`GroupRoutes::activate`].
    pub fn is_pending(&self, chat: ChatId, user: UserId) -> bool {
        self.routes
            .read()
            .by_chat
            .get(&chat)
            .and_then(|members| members.get(&user))
            == Some(&PENDING)
    }

    /// Routes the chat's messages above `after_seq` to the user; `false` unless the route was
    /// pending.
    pub fn activate(&self, chat: ChatId, user: UserId, after_seq: u64) -> bool {
        let mut routes = self.routes.write();
        match routes.by_chat.get_mut(&chat).and_then(|m| m.get_mut(&user)) {
            Some(seq) if *seq == PENDING => {
                *seq = after_seq;
                true
            }
            _ => false,
        }
    }

    pub fn remove(&self, chat: ChatId, user: UserId) {
        self.routes.write().remove(chat, user);
    }

    /// Forgets a user whose last local socket closed.
    pub fn remove_user(&self, user: UserId) {
        let mut routes = self.routes.write();
        for chat in routes.by_user.remove(&user).unwrap_or_default() {
            if let Some(members) = routes.by_chat.get_mut(&chat) {
                members.remove(&user);
                if members.is_empty() {
                    routes.by_chat.remove(&chat);
                }
            }
        }
    }

    /// The chats with a local member: the chat channels this node wants.
    pub fn chats(&self) -> HashSet<ChatId> {
        self.routes.read().by_chat.keys().copied().collect()
    }

    /// Calls `each` with every local member of the chat whose route is active and the seq
    /// above which it gets the chat's messages (under the read lock: `each` must not come back
    /// here).
    pub fn for_each_member(&self, chat: ChatId, mut each: impl FnMut(UserId, u64)) {
        let routes = self.routes.read();
        for (&user, &after_seq) in routes.by_chat.get(&chat).into_iter().flatten() {
            if after_seq != PENDING {
                each(user, after_seq);
            }
        }
    }
}

#[cfg(test)]
mod tests;
