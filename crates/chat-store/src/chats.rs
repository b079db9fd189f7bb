//! Chats and their members: private get-or-create, groups, per-member flags, the chat list.

use std::collections::{BTreeSet, HashMap};

use chat_proto::time::now_millis;
use chat_proto::{Chat, ChatKind, Id, Member, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{MySql, QueryBuilder};

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

/// At most this many chats in a list.
const CHAT_LIST_LIMIT: u32 = 500;

type ChatRow = (
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
type MemberRow = (u64, u64, String, String, u64, NaiveDateTime);

const CHAT_COLUMNS: &str = "c.id, c.kind, c.title, c.created_at, c.last_seq, c.last_message_id, \
     m.last_read_seq, m.pinned, m.archived";

impl Store {
    /// The private chat of the pair, created if needed; `true` when it was created now.
    pub async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        if me == peer {
            return Err(StoreError::Invalid(
                "a private chat needs another user".into(),
            ));
        }
        if !self.user_exists(peer).await? {
            return Err(StoreError::NotFound);
        }
        let pair_key = format!("{}:{}", me.min(peer), me.max(peer));
        if let Some(chat_id) = self.private_chat_id(&pair_key).await? {
            return Ok((self.chat(me, chat_id).await?, false));
        }
        let now = now_millis().naive_utc();
        let mut tx = self.pool.begin().await?;
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
                let chat_id = self
                    .private_chat_id(&pair_key)
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

    async fn private_chat_id(&self, pair_key: &str) -> Result<Option<Id>> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM chats WHERE pair_key = ?")
            .bind(pair_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(id,)| id))
    }

    /// Creates a group with the caller as owner; `NotFound` if a member id is not a user.
    pub async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        let others: BTreeSet<Id> = group
            .member_ids
            .iter()
            .copied()
            .filter(|&id| id != me)
            .collect();
        if !others.is_empty() && self.count_users(&others).await? != others.len() as i64 {
            return Err(StoreError::NotFound);
        }
        let now = now_millis().naive_utc();
        let mut tx = self.pool.begin().await?;
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

    async fn count_users(&self, ids: &BTreeSet<Id>) -> Result<i64> {
        let mut query = QueryBuilder::<MySql>::new("SELECT COUNT(*) FROM users WHERE id IN (");
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(")");
        let (count,): (i64,) = query.build_query_as().fetch_one(&self.pool).await?;
        Ok(count)
    }

    /// The caller's chats: pinned first, then by last activity.
    pub async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        let rows: Vec<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? ORDER BY m.pinned DESC, c.last_activity_at DESC, c.id DESC LIMIT ?"
        ))
        .bind(me)
        .bind(CHAT_LIST_LIMIT)
        .fetch_all(&self.pool)
        .await?;
        self.assemble_chats(rows).await
    }

    /// One chat as the caller sees it; `NotFound` for non-members.
    pub async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        let row: Option<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? AND m.chat_id = ?"
        ))
        .bind(me)
        .bind(chat_id)
        .fetch_optional(&self.pool)
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        self.assemble_chats(vec![row])
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    /// Adds members and last messages to chat rows with two queries in all.
    async fn assemble_chats(&self, rows: Vec<ChatRow>) -> Result<Vec<Chat>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let chat_ids: Vec<Id> = rows.iter().map(|r| r.0).collect();
        let mut members = self.members_of_chats(&chat_ids).await?;
        let last_ids: Vec<Id> = rows.iter().filter_map(|r| r.5).collect();
        let mut last_messages = self.messages_by_id(&last_ids).await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, kind, title, created_at, last_seq, last_id, last_read, pinned, archived)| {
                    Chat {
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
                    }
                },
            )
            .collect())
    }

    async fn members_of_chats(&self, chat_ids: &[Id]) -> Result<HashMap<Id, Vec<Member>>> {
        let mut query = QueryBuilder::<MySql>::new(
            "SELECT cm.chat_id, u.id, u.username, cm.role, cm.last_read_seq, cm.joined_at \
             FROM chat_members cm JOIN users u ON u.id = cm.user_id WHERE cm.chat_id IN (",
        );
        let mut list = query.separated(", ");
        for id in chat_ids {
            list.push_bind(*id);
        }
        query.push(") ORDER BY cm.chat_id, u.id");
        let rows: Vec<MemberRow> = query.build_query_as().fetch_all(&self.pool).await?;
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
        Ok(by_chat)
    }

    async fn messages_by_id(&self, ids: &[Id]) -> Result<HashMap<Id, Message>> {
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
        let rows: Vec<MessageRow> = query.build_query_as().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(message_from_row)
            .map(|m| (m.id, m))
            .collect())
    }

    pub async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat> {
        let membership = self.membership(me, chat_id).await?;
        if let Some(title) = &update.title {
            if membership.kind == ChatKind::Private {
                return Err(StoreError::Invalid("a private chat has no title".into()));
            }
            sqlx::query("UPDATE chats SET title = ? WHERE id = ?")
                .bind(title)
                .bind(chat_id)
                .execute(&self.pool)
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
            .execute(&self.pool)
            .await?;
        }
        self.chat(me, chat_id).await
    }

    /// The members of a chat the caller belongs to.
    pub async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>> {
        self.membership(me, chat_id).await?;
        Ok(self
            .members_of_chats(&[chat_id])
            .await?
            .remove(&chat_id)
            .unwrap_or_default())
    }

    /// The user ids of a chat's members (for publishing); no access check.
    pub async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>> {
        let rows: Vec<(u64,)> =
            sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
                .bind(chat_id)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// `NotFound` unless the user is a member of the chat.
    pub async fn require_member(&self, me: Id, chat_id: Id) -> Result<()> {
        self.membership(me, chat_id).await.map(|_| ())
    }

    pub(crate) async fn membership(&self, me: Id, chat_id: Id) -> Result<Membership> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT c.kind, m.role FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(chat_id)
        .bind(me)
        .fetch_optional(&self.pool)
        .await?;
        let (kind, role) = row.ok_or(StoreError::NotFound)?;
        Ok(Membership {
            kind: ChatKind::parse(&kind).unwrap_or(ChatKind::Group),
            role: MemberRole::parse(&role),
        })
    }

    /// Adds a user to a group (any member may); adding a member twice is fine.
    pub async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let membership = self.membership(me, chat_id).await?;
        if membership.kind == ChatKind::Private {
            return Err(StoreError::Invalid(
                "members of a private chat cannot change".into(),
            ));
        }
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
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes a member: anyone may leave, only the owner may remove others.
    pub async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let membership = self.membership(me, chat_id).await?;
        if membership.kind == ChatKind::Private {
            return Err(StoreError::Invalid(
                "members of a private chat cannot change".into(),
            ));
        }
        if user_id != me && membership.role != MemberRole::Owner {
            return Err(StoreError::Forbidden(
                "only the owner may remove other members",
            ));
        }
        let removed = sqlx::query("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?")
            .bind(chat_id)
            .bind(user_id)
            .execute(&self.pool)
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
