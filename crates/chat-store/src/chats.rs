//! Chats and their members: private get-or-create, groups, per-member flags, the chat list.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chat_proto::{Chat, ChatKind, Id, Member, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;

use crate::{Result, Store, StoreError};

pub struct NewGroup<'a> {
    pub title: &'a str,
    pub member_ids: &'a [Id],
}

/// A PATCH of a chat: `title` for everyone, the flags for the caller only.
#[derive(Debug, Default)]
pub struct ChatUpdate {
    pub title: Option<String>,
    pub pinned: Option<bool>,
    pub archived: Option<bool>,
}

/// The caller's standing in a chat.
pub(crate) struct Membership {
    pub kind: ChatKind,
    pub role: MemberRole,
}

impl Membership {
    /// From the `chats.kind` and `chat_members.role` columns.
    pub(crate) fn from_columns(kind: &str, role: &str) -> Self {
        Self {
            kind: ChatKind::parse(kind).unwrap_or(ChatKind::Group),
            role: MemberRole::parse(role),
        }
    }

    /// Whether the chat's title may be set: groups only.
    pub(crate) fn check_title_change(&self) -> Result<()> {
        if self.kind == ChatKind::Private {
            return Err(StoreError::Invalid("a private chat has no title".into()));
        }
        Ok(())
    }

    /// Whether the caller `me` may add a member (`removing: None`) or remove `removing`: groups
    /// only; anyone may leave, only the owner may remove others.
    pub(crate) fn check_member_change(&self, me: Id, removing: Option<Id>) -> Result<()> {
        if self.kind == ChatKind::Private {
            return Err(StoreError::Invalid(
                "members of a private chat cannot change".into(),
            ));
        }
        if let Some(user_id) = removing
            && user_id != me
            && self.role != MemberRole::Owner
        {
            return Err(StoreError::Forbidden(
                "only the owner may remove other members",
            ));
        }
        Ok(())
    }
}

/// The `pair_key` of the private chat of two users; `Invalid` for a chat with oneself.
pub(crate) fn private_pair_key(me: Id, peer: Id) -> Result<String> {
    if me == peer {
        return Err(StoreError::Invalid(
            "a private chat needs another user".into(),
        ));
    }
    Ok(format!("{}:{}", me.min(peer), me.max(peer)))
}

/// The members of a new group besides its creator, once each.
pub(crate) fn group_others(me: Id, member_ids: &[Id]) -> BTreeSet<Id> {
    member_ids.iter().copied().filter(|&id| id != me).collect()
}

/// At most this many chats in a list.
pub(crate) const CHAT_LIST_LIMIT: u32 = 500;

/// `CHAT_COLUMNS`: the chat, its counters, and the caller's watermark and flags.
pub(crate) type ChatRow = (
    u64,
    String,
    Option<String>,
    NaiveDateTime,
    u64,
    Option<u64>,
    u64,
    bool,
    bool,
);
/// `chat_id, user id, username, role, last_read_seq, joined_at`.
pub(crate) type MemberRow = (u64, u64, String, String, u64, NaiveDateTime);

pub(crate) const CHAT_COLUMNS: &str = "c.id, c.kind, c.title, c.created_at, c.last_seq, c.last_message_id, \
     m.last_read_seq, m.pinned, m.archived";

/// The chats' part of the backend contract (`crate::backend`).
#[async_trait]
pub(crate) trait ChatQueries {
    async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)>;
    async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat>;
    async fn chats_of(&self, me: Id) -> Result<Vec<Chat>>;
    async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat>;
    async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat>;
    async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>>;
    async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>>;
    async fn require_member(&self, me: Id, chat_id: Id) -> Result<()>;
    async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()>;
    async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()>;
}

impl Store {
    /// The private chat of the pair, created if needed; `true` when it was created now.
    pub async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        self.backend.get_or_create_private(me, peer).await
    }

    /// Creates a group with the caller as owner; `NotFound` if a member id is not a user.
    pub async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        self.backend.create_group(me, group).await
    }

    /// The caller's chats: pinned first, then by last activity.
    pub async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        self.backend.chats_of(me).await
    }

    /// One chat as the caller sees it; `NotFound` for non-members.
    pub async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        self.backend.chat(me, chat_id).await
    }

    pub async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat> {
        self.backend.update_chat(me, chat_id, update).await
    }

    /// The members of a chat the caller belongs to.
    pub async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>> {
        self.backend.members(me, chat_id).await
    }

    /// The user ids of a chat's members (for publishing); no access check.
    pub async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>> {
        self.backend.member_ids(chat_id).await
    }

    /// `NotFound` unless the user is a member of the chat.
    pub async fn require_member(&self, me: Id, chat_id: Id) -> Result<()> {
        self.backend.require_member(me, chat_id).await
    }

    /// Adds a user to a group (any member may); adding a member twice is fine.
    pub async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        self.backend.add_member(me, chat_id, user_id).await
    }

    /// Removes a member: anyone may leave, only the owner may remove others.
    pub async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        self.backend.remove_member(me, chat_id, user_id).await
    }
}

/// The chat ids of chat rows.
pub(crate) fn chat_ids(rows: &[ChatRow]) -> Vec<Id> {
    rows.iter().map(|r| r.0).collect()
}

/// The ids of the last messages of chat rows.
pub(crate) fn last_message_ids(rows: &[ChatRow]) -> Vec<Id> {
    rows.iter().filter_map(|r| r.5).collect()
}

/// Chats from their rows, members by chat and last messages by id.
pub(crate) fn build_chats(
    rows: Vec<ChatRow>,
    mut members: HashMap<Id, Vec<Member>>,
    mut last_messages: HashMap<Id, Message>,
) -> Vec<Chat> {
    rows.into_iter()
        .map(
            |(id, kind, title, created_at, last_seq, last_id, last_read, pinned, archived)| Chat {
                id,
                kind: ChatKind::parse(&kind).unwrap_or(ChatKind::Group),
                title,
                members: members.remove(&id).unwrap_or_default(),
                last_message: last_id.and_then(|mid| last_messages.remove(&mid)),
                unread_count: last_seq.saturating_sub(last_read),
                pinned,
                archived,
                created_at: created_at.and_utc(),
                last_seq,
            },
        )
        .collect()
}

/// Members by chat, in the order of the rows.
pub(crate) fn group_members(rows: Vec<MemberRow>) -> HashMap<Id, Vec<Member>> {
    let mut by_chat: HashMap<Id, Vec<Member>> = HashMap::new();
    for (chat_id, user_id, username, role, last_read_seq, joined_at) in rows {
        by_chat.entry(chat_id).or_default().push(Member {
            id: user_id,
            user_id,
            username,
            role: MemberRole::parse(&role),
            last_read_seq,
            joined_at: joined_at.and_utc(),
        });
    }
    by_chat
}
