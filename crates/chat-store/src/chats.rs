//! Chats and their members: private get-or-create, groups, per-member flags, the chat list.

use std::collections::{BTreeSet, HashMap};

use chat_proto::time::now_millis;
use chat_proto::{Chat, ChatKind, Id, Member, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{MySql, MySqlPool, QueryBuilder};

use crate::error::is_duplicate_of;
use crate::messages::{MESSAGE_COLUMNS, MessageRow, message_from_row};
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

impl Store {
    /// The private chat of the pair, created if needed; `true` when it was created now.
    pub async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        let pool = mysql_or_sqlite!(self, get_or_create_private(me, peer));
        let pair_key = private_pair_key(me, peer)?;
        if !self.user_exists(peer).await? {
            return Err(StoreError::NotFound);
        }
        if let Some(chat_id) = private_chat_id(pool, &pair_key).await? {
            return Ok((self.chat(me, chat_id).await?, false));
        }
        let now = now_millis().naive_utc();
        let mut tx = pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO chats (kind, pair_key, created_by, created_at, last_activity_at) \
             VALUES ('private', ?, ?, ?, ?)",
        )
        .bind(&pair_key)
        .bind(me)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        let chat_id = match inserted {
            Ok(done) => done.last_insert_id(),
            Err(e) if is_duplicate_of(&e, "uq_chats_pair") => {
                // Another request created it first.
                drop(tx);
                let chat_id = private_chat_id(pool, &pair_key)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                return Ok((self.chat(me, chat_id).await?, false));
            }
            Err(e) => return Err(e.into()),
        };
        insert_members(
            &mut tx,
            chat_id,
            &[(me, MemberRole::Member), (peer, MemberRole::Member)],
        )
        .await?;
        tx.commit().await?;
        Ok((self.chat(me, chat_id).await?, true))
    }

    /// Creates a group with the caller as owner; `NotFound` if a member id is not a user.
    pub async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        let pool = mysql_or_sqlite!(self, create_group(me, group));
        let others = group_others(me, group.member_ids);
        if !others.is_empty() && count_users(pool, &others).await? != others.len() as i64 {
            return Err(StoreError::NotFound);
        }
        let now = now_millis().naive_utc();
        let mut tx = pool.begin().await?;
        let chat_id = sqlx::query(
            "INSERT INTO chats (kind, title, created_by, created_at, last_activity_at) \
             VALUES ('group', ?, ?, ?, ?)",
        )
        .bind(group.title)
        .bind(me)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .last_insert_id();
        let members: Vec<(Id, MemberRole)> = std::iter::once((me, MemberRole::Owner))
            .chain(others.iter().map(|&id| (id, MemberRole::Member)))
            .collect();
        insert_members(&mut tx, chat_id, &members).await?;
        tx.commit().await?;
        self.chat(me, chat_id).await
    }

    /// The caller's chats: pinned first, then by last activity.
    pub async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        let pool = mysql_or_sqlite!(self, chats_of(me));
        let rows: Vec<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? ORDER BY m.pinned DESC, c.last_activity_at DESC, c.id DESC LIMIT ?"
        ))
        .bind(me)
        .bind(CHAT_LIST_LIMIT)
        .fetch_all(pool)
        .await?;
        assemble_chats(pool, rows).await
    }

    /// One chat as the caller sees it; `NotFound` for non-members.
    pub async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        let pool = mysql_or_sqlite!(self, chat(me, chat_id));
        let row: Option<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? AND m.chat_id = ?"
        ))
        .bind(me)
        .bind(chat_id)
        .fetch_optional(pool)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        assemble_chats(pool, vec![row])
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    pub async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat> {
        let pool = mysql_or_sqlite!(self, update_chat(me, chat_id, update));
        let membership = membership(pool, me, chat_id).await?;
        if let Some(title) = &update.title {
            membership.check_title_change()?;
            sqlx::query("UPDATE chats SET title = ? WHERE id = ?")
                .bind(title)
                .bind(chat_id)
                .execute(pool)
                .await?;
        }
        if update.pinned.is_some() || update.archived.is_some() {
            sqlx::query(
                "UPDATE chat_members SET pinned = COALESCE(?, pinned), archived = COALESCE(?, archived) \
                 WHERE chat_id = ? AND user_id = ?",
            )
            .bind(update.pinned)
            .bind(update.archived)
            .bind(chat_id)
            .bind(me)
            .execute(pool)
            .await?;
        }
        self.chat(me, chat_id).await
    }

    /// The members of a chat the caller belongs to.
    pub async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>> {
        let pool = mysql_or_sqlite!(self, members(me, chat_id));
        membership(pool, me, chat_id).await?;
        Ok(members_of_chats(pool, &[chat_id])
            .await?
            .remove(&chat_id)
            .unwrap_or_default())
    }

    /// The user ids of a chat's members (for publishing); no access check.
    pub async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>> {
        let pool = mysql_or_sqlite!(self, member_ids(chat_id));
        let rows: Vec<(u64,)> =
            sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
                .bind(chat_id)
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// `NotFound` unless the user is a member of the chat.
    pub async fn require_member(&self, me: Id, chat_id: Id) -> Result<()> {
        let pool = mysql_or_sqlite!(self, require_member(me, chat_id));
        membership(pool, me, chat_id).await.map(|_| ())
    }

    /// Adds a user to a group (any member may); adding a member twice is fine.
    pub async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let pool = mysql_or_sqlite!(self, add_member(me, chat_id, user_id));
        membership(pool, me, chat_id)
            .await?
            .check_member_change(me, None)?;
        if !self.user_exists(user_id).await? {
            return Err(StoreError::NotFound);
        }
        // A new member starts with nothing unread.
        sqlx::query(
            "INSERT IGNORE INTO chat_members (chat_id, user_id, role, joined_at, last_read_seq) \
             SELECT id, ?, 'member', ?, last_seq FROM chats WHERE id = ?",
        )
        .bind(user_id)
        .bind(now_millis().naive_utc())
        .bind(chat_id)
        .execute(pool)
        .await?;
        Ok(())
    }

    /// Removes a member: anyone may leave, only the owner may remove others.
    pub async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let pool = mysql_or_sqlite!(self, remove_member(me, chat_id, user_id));
        membership(pool, me, chat_id)
            .await?
            .check_member_change(me, Some(user_id))?;
        let removed = sqlx::query("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?")
            .bind(chat_id)
            .bind(user_id)
            .execute(pool)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

async fn insert_members(
    tx: &mut sqlx::Transaction<'_, MySql>,
    chat_id: Id,
    members: &[(Id, MemberRole)],
) -> Result<()> {
    let now = now_millis().naive_utc();
    let mut query =
        QueryBuilder::<MySql>::new("INSERT INTO chat_members (chat_id, user_id, role, joined_at) ");
    query.push_values(members, |mut row, (user_id, role)| {
        row.push_bind(chat_id)
            .push_bind(*user_id)
            .push_bind(role.as_str())
            .push_bind(now);
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}

async fn private_chat_id(pool: &MySqlPool, pair_key: &str) -> Result<Option<Id>> {
    let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM chats WHERE pair_key = ?")
        .bind(pair_key)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(id,)| id))
}

async fn count_users(pool: &MySqlPool, ids: &BTreeSet<Id>) -> Result<i64> {
    let mut query = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM users WHERE id IN (");
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    let (count,): (i64,) = query.build_query_as().fetch_one(pool).await?;
    Ok(count)
}

pub(crate) async fn membership(pool: &MySqlPool, me: Id, chat_id: Id) -> Result<Membership> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT c.kind, m.role FROM chat_members m JOIN chats c ON c.id = m.chat_id \
         WHERE m.chat_id = ? AND m.user_id = ?",
    )
    .bind(chat_id)
    .bind(me)
    .fetch_optional(pool)
    .await?;
    let (kind, role) = row.ok_or(StoreError::NotFound)?;
    Ok(Membership::from_columns(&kind, &role))
}

/// Adds members and last messages to chat rows with two queries in all.
async fn assemble_chats(pool: &MySqlPool, rows: Vec<ChatRow>) -> Result<Vec<Chat>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let members = members_of_chats(pool, &chat_ids(&rows)).await?;
    let last_messages = messages_by_id(pool, &last_message_ids(&rows)).await?;
    Ok(build_chats(rows, members, last_messages))
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

async fn members_of_chats(pool: &MySqlPool, chat_ids: &[Id]) -> Result<HashMap<Id, Vec<Member>>> {
    let mut query = QueryBuilder::<MySql>::new(
        "SELECT cm.chat_id, u.id, u.username, cm.role, cm.last_read_seq, cm.joined_at \
         FROM chat_members cm JOIN users u ON u.id = cm.user_id WHERE cm.chat_id IN (",
    );
    let mut list = query.separated(", ");
    for id in chat_ids {
        list.push_bind(*id);
    }
    query.push(") ORDER BY cm.chat_id, u.id");
    let rows: Vec<MemberRow> = query.build_query_as().fetch_all(pool).await?;
    Ok(group_members(rows))
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

async fn messages_by_id(pool: &MySqlPool, ids: &[Id]) -> Result<HashMap<Id, Message>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = QueryBuilder::<MySql>::new(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ("
    ));
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    let rows: Vec<MessageRow> = query.build_query_as().fetch_all(pool).await?;
    Ok(rows
        .into_iter()
        .map(message_from_row)
        .map(|m| (m.id, m))
        .collect())
}
