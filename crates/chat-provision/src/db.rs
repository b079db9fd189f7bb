//! The SQL: multi-row prepared INSERTs in batches, all inside one transaction, so a failed run
//! leaves nothing behind. Rows are written exactly as chat-store writes them (DATETIME(3) UTC,
//! `pair_key` "<low>:<high>", roles `owner`/`member`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::{Connection, MySqlConnection, MySqlTransaction};

use crate::plan::{self, Plan, multi_row_sql};

/// What was created: user ids by index, chat ids by pair / group index.
pub struct Created {
    pub user_ids: Vec<u64>,
    pub pair_chat_ids: Vec<u64>,
    pub group_chat_ids: Vec<u64>,
}

/// Now, truncated to milliseconds like chat-store's timestamps.
fn now_millis() -> NaiveDateTime {
    let now = Utc::now();
    DateTime::from_timestamp_millis(now.timestamp_millis())
        .unwrap_or(now)
        .naive_utc()
}

/// Waits until chat-api's migrations have created the tables this tool writes.
pub async fn connect_when_migrated(url: &str, wait: Duration) -> anyhow::Result<MySqlConnection> {
    let deadline = Instant::now() + wait;
    loop {
        let attempt = async {
            let mut conn = MySqlConnection::connect(url).await?;
            let (tables,): (i64,) = sqlx::query_as(
                "SELECT COUNT(*) FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_name IN ('users', 'chats', 'chat_members')",
            )
            .fetch_one(&mut conn)
            .await?;
            anyhow::Ok((conn, tables))
        }
        .await;
        let last = match attempt {
            Ok((conn, 3)) => return Ok(conn),
            Ok((_, _)) => "the schema is not there yet (chat-api runs the migrations at its start)"
                .to_string(),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("database not ready after {wait:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub async fn provision(
    conn: &mut MySqlConnection,
    run: &str,
    plan: &Plan,
    password_hash: &str,
    batch: usize,
) -> anyhow::Result<Created> {
    let batch = batch.max(1);
    let mut tx = conn.begin().await?;
    let (existing,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM users WHERE username LIKE ?")
        .bind(plan::username_like(run))
        .fetch_one(&mut *tx)
        .await?;
    ensure!(
        existing == 0,
        "run {run:?} already has {existing} users: pick another --run"
    );

    let user_ids = insert_users(&mut tx, run, plan.users, password_hash, batch).await?;
    let pair_chat_ids = insert_pairs(&mut tx, &plan.pairs, &user_ids, batch).await?;
    let group_chat_ids = insert_groups(&mut tx, run, &plan.groups, &user_ids, batch).await?;
    tx.commit().await?;
    Ok(Created {
        user_ids,
        pair_chat_ids,
        group_chat_ids,
    })
}

async fn insert_users(
    tx: &mut MySqlTransaction<'_>,
    run: &str,
    users: usize,
    password_hash: &str,
    batch: usize,
) -> anyhow::Result<Vec<u64>> {
    let names: Vec<String> = (0..users).map(|n| plan::username(run, n)).collect();
    let now = now_millis();
    for chunk in names.chunks(batch) {
        let sql = multi_row_sql(
            "INSERT INTO users (username, password_hash, created_at) VALUES ",
            "(?, ?, ?)",
            chunk.len(),
        );
        let mut query = sqlx::query(&sql);
        for name in chunk {
            query = query.bind(name).bind(password_hash).bind(now);
        }
        query.execute(&mut **tx).await.context("inserting users")?;
    }
    // Ids by name rather than from LAST_INSERT_ID(): right whatever the auto-increment settings.
    let rows: Vec<(u64, String)> =
        sqlx::query_as("SELECT id, username FROM users WHERE username LIKE ?")
            .bind(plan::username_like(run))
            .fetch_all(&mut **tx)
            .await?;
    let by_name: HashMap<String, u64> = rows.into_iter().map(|(id, name)| (name, id)).collect();
    names
        .iter()
        .map(|name| {
            by_name
                .get(name)
                .copied()
                .with_context(|| format!("user {name} was not found after the insert"))
        })
        .collect()
}

async fn insert_pairs(
    tx: &mut MySqlTransaction<'_>,
    pairs: &[(usize, usize)],
    user_ids: &[u64],
    batch: usize,
) -> anyhow::Result<Vec<u64>> {
    let now = now_millis();
    let mut chat_ids = Vec::with_capacity(pairs.len());
    for chunk in pairs.chunks(batch) {
        let members: Vec<(u64, u64)> = chunk
            .iter()
            .map(|&(a, b)| (user_ids[a], user_ids[b]))
            .collect();
        let keys: Vec<String> = members.iter().map(|&(a, b)| plan::pair_key(a, b)).collect();
        let sql = multi_row_sql(
            "INSERT INTO chats (kind, pair_key, created_by, created_at, last_activity_at) VALUES ",
            "('private', ?, ?, ?, ?)",
            chunk.len(),
        );
        let mut query = sqlx::query(&sql);
        for (key, &(a, b)) in keys.iter().zip(&members) {
            query = query.bind(key).bind(a.min(b)).bind(now).bind(now);
        }
        query
            .execute(&mut **tx)
            .await
            .context("inserting private chats")?;

        let sql = multi_row_sql(
            "SELECT id, pair_key FROM chats WHERE pair_key IN (",
            "?",
            chunk.len(),
        ) + ")";
        let mut query = sqlx::query_as::<_, (u64, String)>(&sql);
        for key in &keys {
            query = query.bind(key);
        }
        let by_key: HashMap<String, u64> = query
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|(id, key)| (key, id))
            .collect();
        let ids: Vec<u64> = keys
            .iter()
            .map(|key| {
                by_key
                    .get(key)
                    .copied()
                    .with_context(|| format!("chat {key} was not found after the insert"))
            })
            .collect::<anyhow::Result<_>>()?;

        let rows: Vec<(u64, u64)> = ids
            .iter()
            .zip(&members)
            .flat_map(|(&chat, &(a, b))| [(chat, a), (chat, b)])
            .collect();
        insert_members(tx, &rows, "member", now).await?;
        chat_ids.extend(ids);
    }
    Ok(chat_ids)
}

async fn insert_groups(
    tx: &mut MySqlTransaction<'_>,
    run: &str,
    groups: &[std::ops::Range<usize>],
    user_ids: &[u64],
    batch: usize,
) -> anyhow::Result<Vec<u64>> {
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let now = now_millis();
    // Groups have no unique key: find ours by title among the rows above the current maximum id,
    // which the primary key answers without scanning older chats.
    let (floor,): (u64,) =
        sqlx::query_as("SELECT CAST(COALESCE(MAX(id), 0) AS UNSIGNED) FROM chats")
            .fetch_one(&mut **tx)
            .await?;
    let titles: Vec<String> = (0..groups.len())
        .map(|g| plan::group_title(run, g))
        .collect();
    for (chunk_titles, chunk_groups) in titles.chunks(batch).zip(groups.chunks(batch)) {
        let sql = multi_row_sql(
            "INSERT INTO chats (kind, title, created_by, created_at, last_activity_at) VALUES ",
            "('group', ?, ?, ?, ?)",
            chunk_titles.len(),
        );
        let mut query = sqlx::query(&sql);
        for (title, members) in chunk_titles.iter().zip(chunk_groups) {
            query = query
                .bind(title)
                .bind(user_ids[members.start])
                .bind(now)
                .bind(now);
        }
        query.execute(&mut **tx).await.context("inserting groups")?;
    }
    let rows: Vec<(u64, String)> = sqlx::query_as(
        "SELECT id, title FROM chats WHERE id > ? AND kind = 'group' AND title LIKE ?",
    )
    .bind(floor)
    .bind(format!("lt\\_{run}\\_g%"))
    .fetch_all(&mut **tx)
    .await?;
    let by_title: HashMap<String, u64> = rows.into_iter().map(|(id, t)| (t, id)).collect();
    let chat_ids: Vec<u64> = titles
        .iter()
        .map(|t| {
            by_title
                .get(t)
                .copied()
                .with_context(|| format!("group {t} was not found after the insert"))
        })
        .collect::<anyhow::Result<_>>()?;

    let mut rows: Vec<(u64, u64)> = Vec::new();
    let mut owners: Vec<(u64, u64)> = Vec::new();
    for (&chat, members) in chat_ids.iter().zip(groups) {
        owners.push((chat, user_ids[members.start]));
        rows.extend(
            user_ids[members.start + 1..members.end]
                .iter()
                .map(|&u| (chat, u)),
        );
    }
    for chunk in owners.chunks(batch) {
        insert_members(tx, chunk, "owner", now).await?;
    }
    for chunk in rows.chunks(batch) {
        insert_members(tx, chunk, "member", now).await?;
    }
    Ok(chat_ids)
}

/// One multi-row INSERT of `(chat_id, user_id)` rows with one role.
async fn insert_members(
    tx: &mut MySqlTransaction<'_>,
    rows: &[(u64, u64)],
    role: &str,
    now: NaiveDateTime,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sql = multi_row_sql(
        "INSERT INTO chat_members (chat_id, user_id, role, joined_at) VALUES ",
        "(?, ?, ?, ?)",
        rows.len(),
    );
    let mut query = sqlx::query(&sql);
    for &(chat, user) in rows {
        query = query.bind(chat).bind(user).bind(role).bind(now);
    }
    query
        .execute(&mut **tx)
        .await
        .context("inserting chat members")?;
    Ok(())
}
