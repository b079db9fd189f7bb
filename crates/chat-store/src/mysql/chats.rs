//! Chats and their members on MySQL: private get-or-create, groups, per-member flags, the chat
//! list.

use std::collections::{BTreeSet, HashMap};

use async_trait::async_trait;
use chat_proto::time::now_millis;
use chat_proto::{Chat, Id, Member, MemberRole, Message};
use sqlx::{MySql, MySqlPool, QueryBuilder};

use super::MySqlBackend;
use super::messages::MESSAGE_COLUMNS;
use crate::chats::{
    CHAT_COLUMNS, CHAT_LIST_LIMIT, ChatQueries, ChatRow, ChatUpdate, MemberRow, Membership,
    NewGroup, build_chats, chat_ids, group_members, group_others, last_message_ids,
    private_pair_key,
};
use crate::error::is_duplicate_of;
use crate::messages::{MessageRow, message_from_row};
use crate::users::UserQueries;
use crate::{Result, StoreError};

#[async_trait]
impl ChatQueries for MySqlBackend {
    async fn get_or_create_private(&self, me: Id, peer: Id) -> Result<(Chat, bool)> {
        let pool = &self.pool;
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

    async fn create_group(&self, me: Id, group: NewGroup<'_>) -> Result<Chat> {
        let pool = &self.pool;
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

    async fn chats_of(&self, me: Id) -> Result<Vec<Chat>> {
        let pool = &self.pool;
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

    async fn chat(&self, me: Id, chat_id: Id) -> Result<Chat> {
        let pool = &self.pool;
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

    async fn update_chat(&self, me: Id, chat_id: Id, update: ChatUpdate) -> Result<Chat> {
        let pool = &self.pool;
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

    async fn members(&self, me: Id, chat_id: Id) -> Result<Vec<Member>> {
        let pool = &self.pool;
        membership(pool, me, chat_id).await?;
        Ok(members_of_chats(pool, &[chat_id])
            .await?
            .remove(&chat_id)
            .unwrap_or_default())
    }

    async fn member_ids(&self, chat_id: Id) -> Result<Vec<Id>> {
        let pool = &self.pool;
        let rows: Vec<(u64,)> =
            sqlx::query_as("SELECT user_id FROM chat_members WHERE chat_id = ?")
                .bind(chat_id)
                .fetch_all(pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn require_member(&self, me: Id, chat_id: Id) -> Result<()> {
        let pool = &self.pool;
        membership(pool, me, chat_id).await.map(|_| ())
    }

    async fn add_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let pool = &self.pool;
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

    async fn remove_member(&self, me: Id, chat_id: Id, user_id: Id) -> Result<()> {
        let pool = &self.pool;
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

pub(super) async fn membership(pool: &MySqlPool, me: Id, chat_id: Id) -> Result<Membership> {
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
