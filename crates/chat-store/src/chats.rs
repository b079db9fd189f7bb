//! Chats and their members: private get-or-create, groups, per-member flags, the chat list.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Chat, ChatKind, Id, Member, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Type};

use crate::dialect::{Dialect, Stamp, UniqueKey, bound, key};
use crate::messages::{MessageRow, message_columns};
use crate::padded::placeholders;
use crate::users::UserQueries;
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
const CHAT_LIST_LIMIT: u32 = 500;

/// A chat as the caller sees it, before its members and last message are added: `CHAT_COLUMNS`.
#[derive(FromRow)]
pub(crate) struct ChatRow {
    id: u64,
    kind: String,
    title: Option<String>,
    created_at: NaiveDateTime,
    last_seq: u64,
    last_message_id: Option<u64>,
    /// The caller's watermark and flags.
    last_read_seq: u64,
    pinned: bool,
    archived: bool,
}

/// The columns of [`ChatRow`] on `chats c` joined with the caller's `chat_members m`.
const CHAT_COLUMNS: &str = "c.id, c.kind, c.title, c.created_at, c.last_seq, c.last_message_id, \
     m.last_read_seq, m.pinned, m.archived";

/// The user ids of a chat's members (bind: the chat's id), for every backend's send path too.
pub(crate) const MEMBER_IDS: &str = "SELECT user_id FROM chat_members WHERE chat_id = ?";

/// A member of a chat (`members_of_chats`).
#[derive(FromRow)]
pub(crate) struct MemberRow {
    chat_id: u64,
    user_id: u64,
    username: String,
    role: String,
    last_read_seq: u64,
    joined_at: NaiveDateTime,
    last_delivered_seq: u64,
}

#[derive(FromRow)]
pub(crate) struct MembershipRow {
    kind: String,
    role: String,
}

/// The chats' part of the backend contract (`crate::backend`), the same SQL on both databases.
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
    async fn group_chats_of(&self, users: &[Id]) -> Result<HashMap<Id, Vec<Id>>>;
    async fn chat_kind_and_seq(&self, chat_id: Id) -> Result<Option<(ChatKind, u64)>>;

    // The steps the operations above share.

    /// The caller's standing in a chat; `NotFound` for non-members.
    async fn membership(&self, me: Id, chat_id: Id) -> Result<Membership>;
    /// The id of the private chat with this `pair_key`.
    async fn private_chat_id(&self, pair_key: &str) -> Result<Option<Id>>;
    /// Chats from their rows, with their members and last messages: two queries in all.
    async fn assemble_chats(&self, rows: Vec<ChatRow>) -> Result<Vec<Chat>>;
    async fn members_of_chats(&self, chat_ids: &[Id]) -> Result<HashMap<Id, Vec<Member>>>;
    async fn messages_by_id(&self, ids: &[Id]) -> Result<HashMap<Id, Message>>;
}

#[async_trait]
impl<D, DB> ChatQueries for D
where
    D: Dialect<Db = DB> + UserQueries,
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<bool>: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
    for<'r> ChatRow: FromRow<'r, DB::Row>,
    for<'r> MemberRow: FromRow<'r, DB::Row>,
    for<'r> MembershipRow: FromRow<'r, DB::Row>,
    for<'r> MessageRow: FromRow<'r, DB::Row>,
    for<'r> (u64,): FromRow<'r, DB::Row>,
    for<'r> (i64,): FromRow<'r, DB::Row>,
    for<'r> (u64, u64): FromRow<'r, DB::Row>,
    for<'r> (String, u64): FromRow<'r, DB::Row>,
{
    async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        let pair_key = private_pair_key(me, peer)?;
        if !self.user_exists(peer).await? {
            return Err(StoreError::NotFound);
        }
        if let Some(chat_id) = self.private_chat_id(&pair_key).await? {
            return Ok((self.chat(me, chat_id).await?, false));
        }
        let now = Stamp(now_millis());
        let mut tx = self.writer().begin_with(D::BEGIN_WRITE).await?;
        let inserted = sqlx::query(
            "INSERT INTO chats (kind, pair_key, created_by, created_at, last_activity_at) \
             VALUES ('private', ?, ?, ?, ?)",
        )
        .bind(pair_key.as_str())
        .bind(key(me))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await;
        let chat_id = match inserted {
            Ok(done) => D::inserted_id(&done)?,
            Err(e) if D::is_duplicate(&e, UniqueKey::ChatPair) => {
                // Another request created it between the lookup and this transaction.
                tx.rollback().await?;
                let chat_id = self
                    .private_chat_id(&pair_key)
                    .await?
                    .ok_or(StoreError::NotFound)?;
                return Ok((self.chat(me, chat_id).await?, false));
            }
            Err(e) => return Err(e.into()),
        };
        let members = [(me, MemberRole::Member), (peer, MemberRole::Member)];
        insert_members(&mut tx, chat_id, &members).await?;
        tx.commit().await?;
        Ok((self.chat(me, chat_id).await?, true))
    }

    async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        let others = group_others(me, group.member_ids);
        if !others.is_empty() {
            let sql = format!(
                "SELECT COUNT(*) FROM users WHERE id IN ({})",
                placeholders(others.len(), "?", ", ")
            );
            let mut query = sqlx::query_as(&sql);
            for &id in &others {
                query = query.bind(key(id));
            }
            let (count,): (i64,) = query.fetch_one(self.reader()).await?;
            if count != others.len() as i64 {
                return Err(StoreError::NotFound);
            }
        }
        let now = Stamp(now_millis());
        let mut tx = self.writer().begin_with(D::BEGIN_WRITE).await?;
        let done = sqlx::query(
            "INSERT INTO chats (kind, title, created_by, created_at, last_activity_at) \
             VALUES ('group', ?, ?, ?, ?)",
        )
        .bind(group.title)
        .bind(key(me))
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let chat_id = D::inserted_id(&done)?;
        let members: Vec<(Id, MemberRole)> = std::iter::once((me, MemberRole::Owner))
            .chain(others.iter().map(|&id| (id, MemberRole::Member)))
            .collect();
        insert_members(&mut tx, chat_id, &members).await?;
        tx.commit().await?;
        self.chat(me, chat_id).await
    }

    async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        let rows: Vec<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? ORDER BY m.pinned DESC, c.last_activity_at DESC, c.id DESC LIMIT ?"
        ))
        .bind(key(me))
        .bind(bound(CHAT_LIST_LIMIT.into()))
        .fetch_all(self.reader())
        .await?;
        self.assemble_chats(rows).await
    }

    async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        let row: Option<ChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? AND m.chat_id = ?"
        ))
        .bind(key(me))
        .bind(key(chat_id))
        .fetch_optional(self.reader())
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        self.assemble_chats(vec![row])
            .await?
            .pop()
            .ok_or(StoreError::NotFound)
    }

    async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat> {
        let membership = self.membership(me, chat_id).await?;
        if let Some(title) = &update.title {
            membership.check_title_change()?;
            sqlx::query("UPDATE chats SET title = ? WHERE id = ?")
                .bind(title.as_str())
                .bind(key(chat_id))
                .execute(self.writer())
                .await?;
        }
        if update.pinned.is_some() || update.archived.is_some() {
            sqlx::query(
                "UPDATE chat_members SET pinned = COALESCE(?, pinned), \
                 archived = COALESCE(?, archived) WHERE chat_id = ? AND user_id = ?",
            )
            .bind(update.pinned)
            .bind(update.archived)
            .bind(key(chat_id))
            .bind(key(me))
            .execute(self.writer())
            .await?;
        }
        self.chat(me, chat_id).await
    }

    async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>> {
        self.membership(me, chat_id).await?;
        Ok(self
            .members_of_chats(&[chat_id])
            .await?
            .remove(&chat_id)
            .unwrap_or_default())
    }

    async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>> {
        let rows: Vec<(u64,)> = sqlx::query_as(MEMBER_IDS)
            .bind(key(chat_id))
            .fetch_all(self.reader())
            .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn require_member(&self, me: Id, chat_id: Id) -> Result<()> {
        self.membership(me, chat_id).await.map(|_| ())
    }

    async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        self.membership(me, chat_id)
            .await?
            .check_member_change(me, None)?;
        if !self.user_exists(user_id).await? {
            return Err(StoreError::NotFound);
        }
        // A new member starts with nothing unread.
        sqlx::query(&format!(
            "{} INTO chat_members (chat_id, user_id, role, joined_at, last_read_seq) \
             SELECT id, ?, 'member', ?, last_seq FROM chats WHERE id = ?",
            D::INSERT_IGNORE
        ))
        .bind(key(user_id))
        .bind(Stamp(now_millis()))
        .bind(key(chat_id))
        .execute(self.writer())
        .await?;
        Ok(())
    }

    async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        self.membership(me, chat_id)
            .await?
            .check_member_change(me, Some(user_id))?;
        let removed = sqlx::query("DELETE FROM chat_members WHERE chat_id = ? AND user_id = ?")
            .bind(key(chat_id))
            .bind(key(user_id))
            .execute(self.writer())
            .await?;
        if D::rows_affected(&removed) == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn group_chats_of(&self, users: &[Id]) -> Result<HashMap<Id, Vec<Id>>> {
        let mut chats: HashMap<Id, Vec<Id>> = HashMap::new();
        if users.is_empty() {
            return Ok(chats);
        }
        // The writer: a gateway asks right after a member was added, and must see it.
        let sql = format!(
            "SELECT m.user_id, m.chat_id FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE c.kind = 'group' AND m.user_id IN ({})",
            placeholders(users.len(), "?", ", ")
        );
        let mut query = sqlx::query_as(&sql);
        for &user in users {
            query = query.bind(key(user));
        }
        let rows: Vec<(u64, u64)> = query.fetch_all(self.writer()).await?;
        for (user, chat) in rows {
            chats.entry(user).or_default().push(chat);
        }
        Ok(chats)
    }

    async fn chat_kind_and_seq(&self, chat_id: Id) -> Result<Option<(ChatKind, u64)>> {
        let row: Option<(String, u64)> =
            sqlx::query_as("SELECT kind, last_seq FROM chats WHERE id = ?")
                .bind(key(chat_id))
                .fetch_optional(self.writer())
                .await?;
        Ok(row.map(|(kind, seq)| (ChatKind::parse(&kind).unwrap_or(ChatKind::Group), seq)))
    }

    async fn membership(&self, me: Id, chat_id: Id) -> Result<Membership> {
        let row: Option<MembershipRow> = sqlx::query_as(
            "SELECT c.kind, m.role FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(key(chat_id))
        .bind(key(me))
        .fetch_optional(self.reader())
        .await?;
        let row = row.ok_or(StoreError::NotFound)?;
        Ok(Membership::from_columns(&row.kind, &row.role))
    }

    async fn private_chat_id(&self, pair_key: &str) -> Result<Option<Id>> {
        let row: Option<(u64,)> = sqlx::query_as("SELECT id FROM chats WHERE pair_key = ?")
            .bind(pair_key)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.map(|(id,)| id))
    }

    async fn assemble_chats(&self, rows: Vec<ChatRow>) -> Result<Vec<Chat>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let chat_ids: Vec<Id> = rows.iter().map(|row| row.id).collect();
        let last_ids: Vec<Id> = rows.iter().filter_map(|row| row.last_message_id).collect();
        let members = self.members_of_chats(&chat_ids).await?;
        let last_messages = self.messages_by_id(&last_ids).await?;
        Ok(build_chats(rows, members, last_messages))
    }

    async fn members_of_chats(&self, chat_ids: &[Id]) -> Result<HashMap<Id, Vec<Member>>> {
        let sql = format!(
            "SELECT cm.chat_id, u.id AS user_id, u.username, cm.role, cm.last_read_seq, \
             cm.joined_at, cm.last_delivered_seq FROM chat_members cm JOIN users u ON u.id = cm.user_id \
             WHERE cm.chat_id IN ({}) ORDER BY cm.chat_id, u.id",
            placeholders(chat_ids.len(), "?", ", ")
        );
        let mut query = sqlx::query_as(&sql);
        for &id in chat_ids {
            query = query.bind(key(id));
        }
        let rows: Vec<MemberRow> = query.fetch_all(self.reader()).await?;
        Ok(group_members(rows))
    }

    async fn messages_by_id(&self, ids: &[Id]) -> Result<HashMap<Id, Message>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let sql = format!(
            "SELECT {} FROM messages WHERE id IN ({})",
            message_columns::<D>("messages"),
            placeholders(ids.len(), "?", ", ")
        );
        let mut query = sqlx::query_as(&sql);
        for &id in ids {
            query = query.bind(key(id));
        }
        let rows: Vec<MessageRow> = query.fetch_all(self.reader()).await?;
        Ok(rows
            .into_iter()
            .map(Message::from)
            .map(|m| (m.id, m))
            .collect())
    }
}

/// Adds the members of a new chat in its transaction.
async fn insert_members<DB>(
    tx: &mut sqlx::Transaction<'_, DB>,
    chat_id: Id,
    members: &[(Id, MemberRole)],
) -> Result<()>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Stamp: Encode<'q, DB> + Type<DB>,
{
    let now = Stamp(now_millis());
    let sql = format!(
        "INSERT INTO chat_members (chat_id, user_id, role, joined_at) VALUES {}",
        placeholders(members.len(), "(?, ?, ?, ?)", ", ")
    );
    let mut query = sqlx::query(&sql);
    for (user_id, role) in members {
        query = query
            .bind(key(chat_id))
            .bind(key(*user_id))
            .bind(role.as_str())
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
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

    /// The group chats each of these users is in (users in none are left out); no access
    /// check. What a gateway routes group events by.
    pub async fn group_chats_of(&self, users: &[Id]) -> Result<HashMap<Id, Vec<Id>>> {
        self.backend.group_chats_of(users).await
    }

    /// A chat's kind and the seq of its last message, read from the primary; `None` for a chat
    /// that does not exist.
    pub async fn chat_kind_and_seq(&self, chat_id: Id) -> Result<Option<(ChatKind, u64)>> {
        self.backend.chat_kind_and_seq(chat_id).await
    }
}

/// Chats from their rows, members by chat and last messages by id.
fn build_chats(
    rows: Vec<ChatRow>,
    mut members: HashMap<Id, Vec<Member>>,
    mut last_messages: HashMap<Id, Message>,
) -> Vec<Chat> {
    rows.into_iter()
        .map(|row| Chat {
            id: row.id,
            kind: ChatKind::parse(&row.kind).unwrap_or(ChatKind::Group),
            title: row.title,
            members: members.remove(&row.id).unwrap_or_default(),
            last_message: row.last_message_id.and_then(|id| last_messages.remove(&id)),
            unread_count: row.last_seq.saturating_sub(row.last_read_seq),
            pinned: row.pinned,
            archived: row.archived,
            created_at: row.created_at.and_utc(),
            last_seq: row.last_seq,
        })
        .collect()
}

/// Members by chat, in the order of the rows.
fn group_members(rows: Vec<MemberRow>) -> HashMap<Id, Vec<Member>> {
    let mut by_chat: HashMap<Id, Vec<Member>> = HashMap::new();
    for row in rows {
        by_chat.entry(row.chat_id).or_default().push(Member {
            id: row.user_id,
            user_id: row.user_id,
            username: row.username,
            role: MemberRole::parse(&row.role),
            last_read_seq: row.last_read_seq,
            // Reading implies delivery: a read moves the delivered watermark as clients see it.
            last_delivered_seq: row.last_delivered_seq.max(row.last_read_seq),
            joined_at: row.joined_at.and_utc(),
        });
    }
    by_chat
}
