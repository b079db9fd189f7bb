//! Chats and their members on SQLite: private get-or-create, groups, per-member flags, the chat
//! list. Validation and assembly are shared with the MySQL code (`crate::chats`).

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Chat, Id, Member, MemberRole, Message};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{QueryBuilder, Sqlite as Db};

use super::messages::{MESSAGE_COLUMNS, SqliteMessageRow, message_row};
use super::{SqliteBackend, ids, is_unique_violation, key, time, unsigned, unsigned_opt};
use crate::chats::ChatQueries;
use crate::chats::{
    CHAT_COLUMNS, CHAT_LIST_LIMIT, ChatRow, ChatUpdate, MemberRow, Membership, NewGroup,
    build_chats, chat_ids, group_members, group_others, last_message_ids, private_pair_key,
};
use crate::messages::message_from_row;
use crate::users::UserQueries;
use crate::{Result, StoreError};

type SqliteChatRow = (
    i64,
    String,
    Option<String>,
    NaiveDateTime,
    i64,
    Option<i64>,
    i64,
    bool,
    bool,
);

fn chat_row(row: SqliteChatRow) -> Result<ChatRow> {
    let (id, kind, title, created_at, last_seq, last_id, last_read, pinned, archived) = row;
    Ok((
        unsigned(id)?,
        kind,
        title,
        created_at,
        unsigned(last_seq)?,
        unsigned_opt(last_id)?,
        unsigned(last_read)?,
        pinned,
        archived,
    ))
}

type SqliteMemberRow = (i64, i64, String, String, i64, NaiveDateTime);

fn member_row(row: SqliteMemberRow) -> Result<MemberRow> {
    let (chat_id, user_id, username, role, last_read_seq, joined_at) = row;
    Ok((
        unsigned(chat_id)?,
        unsigned(user_id)?,
        username,
        role,
        unsigned(last_read_seq)?,
        joined_at,
    ))
}

#[async_trait]
impl ChatQueries for SqliteBackend {
    async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        let pair_key = private_pair_key(me, peer)?;
        if !self.user_exists(peer).await? {
            return Err(StoreError::NotFound);
        }
        if let Some(chat_id) = self.private_chat_id(&pair_key).await? {
            return Ok((self.chat(me, chat_id).await?, false));
        }
        let now = time(now_millis());
        let mut tx = self.begin_write().await?;
        let inserted = sqlx::query(
            "INSERT INTO chats (kind, pair_key, created_by, created_at, last_activity_at) \
             VALUES ('private', ?, ?, ?, ?)",
        )
        .bind(&pair_key)
        .bind(key(me))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await;
        let chat_id = match inserted {
            Ok(done) => unsigned(done.last_insert_rowid())?,
            Err(e) if is_unique_violation(&e, "chats.pair_key") => {
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
        insert_members(
            &mut tx,
            chat_id,
            &[(me, MemberRole::Member), (peer, MemberRole::Member)],
        )
        .await?;
        tx.commit().await?;
        Ok((self.chat(me, chat_id).await?, true))
    }

    async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        let others = group_others(me, group.member_ids);
        if !others.is_empty() && self.count_users(&others).await? != others.len() as i64 {
            return Err(StoreError::NotFound);
        }
        let now = time(now_millis());
        let mut tx = self.begin_write().await?;
        let chat_id = sqlx::query(
            "INSERT INTO chats (kind, title, created_by, created_at, last_activity_at) \
             VALUES ('group', ?, ?, ?, ?)",
        )
        .bind(group.title)
        .bind(key(me))
        .bind(&now)
        .bind(&now)
        .execute(&mut *tx)
        .await?
        .last_insert_rowid();
        let chat_id = unsigned(chat_id)?;
        let members: Vec<(Id, MemberRole)> = std::iter::once((me, MemberRole::Owner))
            .chain(others.iter().map(|&id| (id, MemberRole::Member)))
            .collect();
        insert_members(&mut tx, chat_id, &members).await?;
        tx.commit().await?;
        self.chat(me, chat_id).await
    }

    async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        let rows: Vec<SqliteChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? ORDER BY m.pinned DESC, c.last_activity_at DESC, c.id DESC LIMIT ?"
        ))
        .bind(key(me))
        .bind(i64::from(CHAT_LIST_LIMIT))
        .fetch_all(&self.reader)
        .await?;
        let rows = rows.into_iter().map(chat_row).collect::<Result<Vec<_>>>()?;
        self.assemble_chats(rows).await
    }

    async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        let row: Option<SqliteChatRow> = sqlx::query_as(&format!(
            "SELECT {CHAT_COLUMNS} FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.user_id = ? AND m.chat_id = ?"
        ))
        .bind(key(me))
        .bind(key(chat_id))
        .fetch_optional(&self.reader)
        .await?;
        let row = chat_row(row.ok_or(StoreError::NotFound)?)?;
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
                .bind(title)
                .bind(key(chat_id))
                .execute(&self.writer)
                .await?;
        }
        if update.pinned.is_some() || update.archived.is_some() {
            sqlx::query(
                "UPDATE chat_members SET pinned = COALESCE(?, pinned), archived = COALESCE(?, archived) \
                 WHERE chat_id = ? AND user_id = ?",
            )
            .bind(update.pinned)
            .bind(update.archived)
            .bind(key(chat_id))
            .bind(key(me))
            .execute(&self.writer)
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
        let rows: Vec<(i64,)> =
            sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
                .bind(key(chat_id))
                .fetch_all(&self.reader)
                .await?;
        ids(rows)
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
        sqlx::query(
            "INSERT OR IGNORE INTO chat_members (chat_id, user_id, role, joined_at, last_read_seq) \
             SELECT id, ?, 'member', ?, last_seq FROM chats WHERE id = ?",
        )
        .bind(key(user_id))
        .bind(time(now_millis()))
        .bind(key(chat_id))
        .execute(&self.writer)
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
            .execute(&self.writer)
            .await?;
        if removed.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}

impl SqliteBackend {
    async fn private_chat_id(&self, pair_key: &str) -> Result<Option<Id>> {
        let row: Option<(i64,)> = sqlx::query_as("SELECT id FROM chats WHERE pair_key = ?")
            .bind(pair_key)
            .fetch_optional(&self.reader)
            .await?;
        row.map(|(id,)| unsigned(id)).transpose()
    }

    async fn count_users(&self, user_ids: &BTreeSet<Id>) -> Result<i64> {
        let mut query = QueryBuilder::<Db>::new("SELECT COUNT(*) FROM users WHERE id IN (");
        let mut list = query.separated(", ");
        for id in user_ids {
            list.push_bind(key(*id));
        }
        query.push(")");
        let (count,): (i64,) = query.build_query_as().fetch_one(&self.reader).await?;
        Ok(count)
    }

    /// Adds members and last messages to chat rows with two queries in all.
    async fn assemble_chats(&self, rows: Vec<ChatRow>) -> Result<Vec<Chat>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let members = self.members_of_chats(&chat_ids(&rows)).await?;
        let last_messages = self.messages_by_id(&last_message_ids(&rows)).await?;
        Ok(build_chats(rows, members, last_messages))
    }

    async fn members_of_chats(&self, chat_ids: &[Id]) -> Result<HashMap<Id, Vec<Member>>> {
        let mut query = QueryBuilder::<Db>::new(
            "SELECT cm.chat_id, u.id, u.username, cm.role, cm.last_read_seq, cm.joined_at \
             FROM chat_members cm JOIN users u ON u.id = cm.user_id WHERE cm.chat_id IN (",
        );
        let mut list = query.separated(", ");
        for id in chat_ids {
            list.push_bind(key(*id));
        }
        query.push(") ORDER BY cm.chat_id, u.id");
        let rows: Vec<SqliteMemberRow> = query.build_query_as().fetch_all(&self.reader).await?;
        let rows = rows
            .into_iter()
            .map(member_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(group_members(rows))
    }

    async fn messages_by_id(&self, message_ids: &[Id]) -> Result<HashMap<Id, Message>> {
        if message_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut query = QueryBuilder::<Db>::new(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE id IN ("
        ));
        let mut list = query.separated(", ");
        for id in message_ids {
            list.push_bind(key(*id));
        }
        query.push(")");
        let rows: Vec<SqliteMessageRow> = query.build_query_as().fetch_all(&self.reader).await?;
        rows.into_iter()
            .map(|row| {
                let message = message_from_row(message_row(row)?);
                Ok((message.id, message))
            })
            .collect()
    }

    pub(crate) async fn membership(&self, me: Id, chat_id: Id) -> Result<Membership> {
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT c.kind, m.role FROM chat_members m JOIN chats c ON c.id = m.chat_id \
             WHERE m.chat_id = ? AND m.user_id = ?",
        )
        .bind(key(chat_id))
        .bind(key(me))
        .fetch_optional(&self.reader)
        .await?;
        let (kind, role) = row.ok_or(StoreError::NotFound)?;
        Ok(Membership::from_columns(&kind, &role))
    }
}

async fn insert_members(
    tx: &mut sqlx::Transaction<'_, Db>,
    chat_id: Id,
    members: &[(Id, MemberRole)],
) -> Result<()> {
    let now = time(now_millis());
    let mut query =
        QueryBuilder::<Db>::new("INSERT INTO chat_members (chat_id, user_id, role, joined_at) ");
    query.push_values(members, |mut row, (user_id, role)| {
        row.push_bind(key(chat_id))
            .push_bind(key(*user_id))
            .push_bind(role.as_str())
            .push_bind(now.clone());
    });
    query.build().execute(&mut **tx).await?;
    Ok(())
}
