//! The batch's transaction, statement by statement: lock the chats' counters (with their members
//! and the database's clock), check reply targets, insert every message in one INSERT, and move
//! the counters and senders' watermarks in one UPDATE sent with COMMIT.

use std::collections::{BTreeMap, HashMap};

use chat_proto::Id;
use sqlx::MySqlConnection;
use sqlx::types::chrono::NaiveDateTime;

use super::QueuedMessage;
use super::session::WriterSession;
use crate::chats::MEMBER_IDS;
use crate::messages::SendOutcome;
use crate::padded::{bind_padded, padded_len, placeholders};
use crate::{Result, StoreError};

/// Why a batch could not be stored.
pub enum BatchError {
    /// The connection is healthy and the batch path cannot store these sends: they can go one by
    /// one (the transaction is rolled back first).
    Retry(RetryCause),
    /// The connection broke (or its COMMIT went unanswered): every send gets this error.
    Failed(StoreError),
}

/// Why a batch went one send at a time (logged), or, alone, why a send failed.
#[derive(Debug, thiserror::Error)]
pub enum RetryCause {
    /// Refused by the server (a duplicate key, a deadlock): alone, each send meets it or not.
    #[error(transparent)]
    Refused(sqlx::Error),
    /// Ids that could not be matched to the inserted rows (`insert_messages`); never for a
    /// single row.
    #[error("an inserted message was not read back")]
    NotReadBack,
}

impl From<RetryCause> for StoreError {
    fn from(cause: RetryCause) -> Self {
        match cause {
            RetryCause::Refused(e) => e.into(),
            RetryCause::NotReadBack => StoreError::Database(sqlx::Error::RowNotFound),
        }
    }
}

impl From<sqlx::Error> for BatchError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(_) => Self::Retry(RetryCause::Refused(err)),
            other => Self::Failed(other.into()),
        }
    }
}

/// What the batch's transaction learns about one chat.
struct ChatState {
    next_seq: u64,
    members: Vec<Id>,
}

/// What the counters query learns for the INSERT besides the chats: the database's clock and
/// how it numbers the rows of one statement.
pub struct InsertFacts {
    pub now: NaiveDateTime,
    /// The distance between the ids of one multi-row INSERT when the server gives them out
    /// consecutively (`innodb_autoinc_lock_mode` 0 or 1, as on MariaDB by default): the session's
    /// `auto_increment_increment`. `None` (mode 2, MySQL 8's default): they must be read back.
    pub id_step: Option<u64>,
}

impl InsertFacts {
    pub(super) fn id_step(autoinc_lock_mode: u64, increment: u64) -> Option<u64> {
        (autoinc_lock_mode <= 1 && increment >= 1).then_some(increment)
    }
}

/// Stores the batch in the session's transaction and commits it: per send, its outcome (or the
/// error that is its alone, such as not being a member).
pub async fn write_batch(
    session: &mut WriterSession,
    batch: &[&QueuedMessage],
) -> std::result::Result<Vec<Result<SendOutcome>>, BatchError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut chat_ids: Vec<Id> = batch.iter().map(|message| message.chat_id).collect();
    chat_ids.sort_unstable();
    chat_ids.dedup();
    let conn = session.connection().await?;
    let (mut chats, facts) = lock_counters(conn, &chat_ids).await?;
    let now = facts.now;
    let targets = reply_targets(conn, batch).await?;
    // Seqs in queue order within each chat; a refused send takes none.
    let seqs: Vec<Result<(u64, Vec<Id>)>> = batch
        .iter()
        .map(|queued| {
            let message = queued.borrowed();
            let chat = chats
                .get_mut(&message.chat_id)
                .filter(|chat| chat.members.contains(&message.sender_id))
                .ok_or(StoreError::NotFound)?;
            if let Some(target) = message.reply_to_id {
                message.check_reply_target(targets.get(&target).copied())?;
            }
            chat.next_seq += 1;
            Ok((chat.next_seq, chat.members.clone()))
        })
        .collect();
    let rows: Vec<(&QueuedMessage, u64)> = batch
        .iter()
        .zip(&seqs)
        .filter_map(|(&message, seq)| Some((message, seq.as_ref().ok()?.0)))
        .collect();
    let mut ids = Vec::new();
    if !rows.is_empty() {
        ids = insert_messages(conn, &rows, &facts).await?;
        session
            .commit_with(&counters_update(&rows, &ids, now))
            .await?;
    }
    let mut ids = ids.into_iter();
    let created_at = now.and_utc();
    Ok(batch
        .iter()
        .zip(seqs)
        .map(|(message, seq)| {
            let (seq, member_ids) = seq?;
            let id = ids.next().ok_or(StoreError::NotFound)?;
            Ok(SendOutcome {
                message: message.borrowed().stored_as(id, seq, created_at),
                created: true,
                member_ids,
            })
        })
        .collect())
}

/// Locks the chats' counter rows; their next seqs, members, and the database's clock. The
/// members come in the same statement, counted, summed and listed per chat by a subquery,
/// which takes no row locks of its own (a locking read locks only the outer query's rows); a
/// list the server cut short (`parse_members`) is read again, row by row.
async fn lock_counters(
    conn: &mut MySqlConnection,
    chat_ids: &[Id],
) -> std::result::Result<(HashMap<Id, ChatState>, InsertFacts), BatchError> {
    let padded = padded_len(chat_ids.len());
    let list = placeholders(padded, "?", ", ");
    // The id facts ride along for free; the increment is a session variable, so it is read here
    // rather than once per process.
    let sql = format!(
        "SELECT c.id, c.last_seq, NOW(3), CAST(@@innodb_autoinc_lock_mode AS UNSIGNED), \
         CAST(@@auto_increment_increment AS UNSIGNED), \
         (SELECT CONCAT(COUNT(*), ' ', SUM(m.user_id), ' ', JSON_ARRAYAGG(m.user_id)) \
          FROM chat_members m \
          WHERE m.chat_id = c.id) \
         FROM chats c WHERE c.id IN ({list}) FOR UPDATE"
    );
    type Locked = (u64, u64, NaiveDateTime, u64, u64, Option<String>);
    let locked: Vec<Locked> = bind_padded(sqlx::query_as(&sql), chat_ids, padded)
        .fetch_all(&mut *conn)
        .await?;
    // The timestamp comes from the database, taken under the chats' locks: one clock for all
    // api replicas, so sync cursors (points in time) order messages the way they committed.
    let facts = match locked.first() {
        Some(&(_, _, now, lock_mode, increment, _)) => InsertFacts {
            now,
            id_step: InsertFacts::id_step(lock_mode, increment),
        },
        None => InsertFacts {
            now: sqlx::query_scalar("SELECT NOW(3)")
                .fetch_one(&mut *conn)
                .await?,
            id_step: None,
        },
    };
    let mut chats = HashMap::with_capacity(locked.len());
    for (id, last_seq, _, _, _, members) in locked {
        let members = match members.as_deref().map(parse_members) {
            Some(Ok(members)) => members,
            None => Vec::new(),
            Some(Err(why)) => {
                tracing::debug!(chat = id, why, "a member list came back cut short");
                let rows: Vec<(u64,)> = sqlx::query_as(MEMBER_IDS)
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?;
                rows.into_iter().map(|(member,)| member).collect()
            }
        };
        chats.insert(
            id,
            ChatState {
                next_seq: last_seq,
                members,
            },
        );
    }
    Ok((chats, facts))
}

/// A chat's members as `"<count> <sum> <JSON list>"`. MariaDB cuts a JSON_ARRAYAGG longer than
/// `group_concat_max_len` (1 MiB by default) and still closes the list, possibly inside its last
/// number: a cut list has fewer members than counted, or a last one smaller than it was, so a
/// smaller sum.
pub(super) fn parse_members(checked: &str) -> std::result::Result<Vec<Id>, String> {
    let mut parts = checked.splitn(3, ' ');
    let (Some(count), Some(sum), Some(list)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("not a count, a sum and a list: {checked:?}"));
    };
    let count: usize = count.parse().map_err(|e| format!("count {count:?}: {e}"))?;
    let sum: u128 = sum.parse().map_err(|e| format!("sum {sum:?}: {e}"))?;
    let members: Vec<Id> = serde_json::from_str(list).map_err(|e| format!("list: {e}"))?;
    let listed: u128 = members.iter().map(|&id| u128::from(id)).sum();
    if members.len() != count || listed != sum {
        return Err(format!(
            "{} members summing to {listed} in the list, {count} summing to {sum} counted",
            members.len()
        ));
    }
    Ok(members)
}

/// The chat of each message the batch replies to (absent: no such message).
async fn reply_targets(
    conn: &mut MySqlConnection,
    batch: &[&QueuedMessage],
) -> std::result::Result<HashMap<Id, Id>, sqlx::Error> {
    let targets: Vec<Id> = batch
        .iter()
        .filter_map(|message| message.reply_to_id)
        .collect();
    if targets.is_empty() {
        return Ok(HashMap::new());
    }
    let padded = padded_len(targets.len());
    let sql = format!(
        "SELECT id, chat_id FROM messages WHERE id IN ({})",
        placeholders(padded, "?", ", ")
    );
    let rows: Vec<(u64, u64)> = bind_padded(sqlx::query_as(&sql), &targets, padded)
        .fetch_all(&mut *conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts the rows in one statement; returns their ids in the same order.
pub async fn insert_messages(
    conn: &mut MySqlConnection,
    rows: &[(&QueuedMessage, u64)],
    facts: &InsertFacts,
) -> std::result::Result<Vec<Id>, BatchError> {
    let sql = format!(
        "INSERT INTO messages (chat_id, seq, sender_id, kind, body, attachment_id, reply_to_id, \
         client_msg_id, created_at) VALUES {}",
        placeholders(rows.len(), "(?, ?, ?, ?, ?, ?, ?, ?, ?)", ", ")
    );
    // Only the padded sizes are worth a cached statement (the rows cannot be padded).
    let mut query = sqlx::query(&sql).persistent(padded_len(rows.len()) == rows.len());
    for (message, seq) in rows {
        query = query
            .bind(message.chat_id)
            .bind(*seq)
            .bind(message.sender_id)
            .bind(message.kind.as_str())
            .bind(message.text.as_deref())
            .bind(message.attachment.as_ref().map(|a| a.id))
            .bind(message.reply_to_id)
            .bind(message.client_msg_id.as_bytes())
            .bind(facts.now);
    }
    let done = query.execute(&mut *conn).await?;
    let first = done.last_insert_id();
    if rows.len() == 1 {
        return Ok(vec![first]);
    }
    if let Some(step) = facts.id_step {
        return Ok((0..rows.len() as u64)
            .map(|row| first + row * step)
            .collect());
    }
    // Ids of one statement are ascending from the first, but need not be consecutive; read
    // them back. Nobody else inserts into these chats while their locks are held.
    let chat_ids: Vec<Id> = rows.iter().map(|(message, _)| message.chat_id).collect();
    let padded = padded_len(chat_ids.len());
    let sql = format!(
        "SELECT chat_id, seq, id FROM messages WHERE id >= ? AND chat_id IN ({})",
        placeholders(padded, "?", ", ")
    );
    let stored: Vec<(u64, u64, u64)> =
        bind_padded(sqlx::query_as(&sql).bind(first), &chat_ids, padded)
            .fetch_all(&mut *conn)
            .await?;
    let stored: HashMap<(Id, u64), Id> = stored
        .into_iter()
        .map(|(chat_id, seq, id)| ((chat_id, seq), id))
        .collect();
    rows.iter()
        .map(|(message, seq)| stored.get(&(message.chat_id, *seq)).copied())
        .collect::<Option<Vec<Id>>>()
        .ok_or_else(|| BatchError::Retry(RetryCause::NotReadBack))
}

/// The UPDATE that moves each chat's counter and last message to its highest row of the batch,
/// and, since sending implies having read the chat up to one's own message, each sender's
/// watermark to their highest seq of the batch: one statement over a derived table of one row
/// per (chat, sender), the chat's values repeated on each. The members join is a LEFT JOIN, so a
/// counter moves even when its senders left the chat meanwhile. It is sent as text with COMMIT
/// (`WriterSession::commit_with`), so its values are written into it: numbers, and the
/// database's own timestamp.
fn counters_update(rows: &[(&QueuedMessage, u64)], ids: &[Id], now: NaiveDateTime) -> String {
    let mut last: BTreeMap<Id, (u64, Id)> = BTreeMap::new();
    let mut read: BTreeMap<(Id, Id), u64> = BTreeMap::new();
    for ((message, seq), &id) in rows.iter().zip(ids) {
        let entry = last.entry(message.chat_id).or_insert((*seq, id));
        if *seq > entry.0 {
            *entry = (*seq, id);
        }
        let entry = read
            .entry((message.chat_id, message.sender_id))
            .or_insert(*seq);
        *entry = (*entry).max(*seq);
    }
    let table = read
        .into_iter()
        .filter_map(|((chat, user), read_seq)| {
            let &(last_seq, last_id) = last.get(&chat)?;
            Some([chat, user, read_seq, last_seq, last_id])
        })
        .enumerate()
        .map(|(row, [chat, user, read_seq, last_seq, last_id])| {
            // The first row names the columns.
            if row == 0 {
                format!(
                    "SELECT {chat} AS chat_id, {user} AS user_id, {read_seq} AS read_seq, \
                     {last_seq} AS last_seq, {last_id} AS last_id"
                )
            } else {
                format!("SELECT {chat}, {user}, {read_seq}, {last_seq}, {last_id}")
            }
        })
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    format!(
        "UPDATE chats c JOIN ({table}) v ON v.chat_id = c.id \
         LEFT JOIN chat_members m ON m.chat_id = v.chat_id AND m.user_id = v.user_id \
         SET c.last_seq = v.last_seq, c.last_message_id = v.last_id, \
         c.last_activity_at = '{}', m.last_read_seq = GREATEST(m.last_read_seq, v.read_seq)",
        now.format("%Y-%m-%d %H:%M:%S%.3f")
    )
}
