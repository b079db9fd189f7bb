//! Sends on MySQL, coalesced: the sends that arrive while a transaction runs go together into the
//! next one. A send is several round trips and a commit however small it is, so under load this
//! is what lets the database keep up (docs/performance.md); alone, a send costs one round trip
//! more than on its own path.
//!
//! Writer tasks (one unless configured), each with its own queue and its own share of the chats.
//! Each takes whatever is waiting (up to `MAX_BATCH`) and stores it as the single send path does,
//! only with every statement covering the whole batch: the chats' named locks (taken in ascending
//! chat order, in one statement, so writers of several api replicas never wait on each other in a
//! cycle), the counters' row locks, one INSERT, one UPDATE for the counters and the senders'
//! watermarks, one COMMIT. The inserted ids are read back only where the server may number one
//! INSERT's rows with gaps (`InsertFacts`). The publishes run after the commit and before the locks
//! go, as on the single path, in seq order within each chat; the sends are answered then, and the
//! locks released in the background.
//!
//! What the batch path does not handle it hands to the single path, one send at a time: a
//! second send with the same idempotency key in one batch, and any database error that left the
//! connection usable (a duplicate key, a deadlock). Errors of a broken connection fail every send
//! of the batch the way they would fail a single one.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use chat_proto::{Attachment, Id, MessageKind};
use sqlx::types::chrono::NaiveDateTime;
use sqlx::{Connection, MySql, MySqlPool, Row};
use tokio::sync::{mpsc, oneshot};

use crate::messages::{NewMessage, SendOutcome, lock_wait_secs};
use crate::padded::{bind_padded, padded_len, placeholders};
use crate::{Result, StoreError};

/// Writer tasks unless configured (`Store::with_send_writers`): each holds one connection while
/// its batch runs. One makes the largest batches, so the fewest statements per message: on the
/// 2-core development machine it stored more messages a second than two or four, with lower
/// latency (docs/performance.md). Deployments gain overlap from their api replicas.
pub(crate) const DEFAULT_WRITERS: usize = 1;
/// The most sends one transaction stores. Under overload a writer's rate is this many sends per
/// transaction time, so one writer needs room to grow its batches (64 capped it well below four
/// writers in the churn load test; docs/performance.md).
const MAX_BATCH: usize = 256;
/// Sends waiting in one process beyond which new ones are refused (503 `unavailable`) rather
/// than queued, shared evenly by the writers' queues: at the 5,000-odd sends a second measured
/// here (docs/performance.md), about a fifth of a second of work. An unbounded wait let an
/// overloaded api hold thousands of open requests, each a socket, for seconds, where a quick
/// refusal lets clients back off.
const QUEUED_PER_PROCESS: usize = 1024;

type PublishFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// The caller's publish, run under the chat's lock with the send's outcome.
pub(crate) type Announce = Box<dyn FnOnce(&SendOutcome) -> PublishFuture + Send>;

/// A message to store, owned, so that it can wait in the queue.
struct QueuedMessage {
    chat_id: Id,
    sender_id: Id,
    kind: MessageKind,
    text: Option<String>,
    attachment: Option<Attachment>,
    reply_to_id: Option<Id>,
    client_msg_id: String,
}

impl QueuedMessage {
    fn new(new: &NewMessage<'_>) -> Self {
        Self {
            chat_id: new.chat_id,
            sender_id: new.sender_id,
            kind: new.kind,
            text: new.text.map(str::to_string),
            attachment: new.attachment.cloned(),
            reply_to_id: new.reply_to_id,
            client_msg_id: new.client_msg_id.to_string(),
        }
    }

    fn borrowed(&self) -> NewMessage<'_> {
        NewMessage {
            chat_id: self.chat_id,
            sender_id: self.sender_id,
            kind: self.kind,
            text: self.text.as_deref(),
            attachment: self.attachment.as_ref(),
            reply_to_id: self.reply_to_id,
            client_msg_id: &self.client_msg_id,
        }
    }

    fn idempotency_key(&self) -> (Id, Id, &str) {
        (self.chat_id, self.sender_id, &self.client_msg_id)
    }
}

struct QueuedSend {
    message: QueuedMessage,
    announce: Announce,
    reply: oneshot::Sender<Result<SendOutcome>>,
}

impl QueuedSend {
    fn answer(self, outcome: Result<SendOutcome>) {
        // The caller is gone only when its task was dropped; the send is stored all the same.
        let _ = self.reply.send(outcome);
    }
}

/// The queues in front of the writer tasks, one each. A chat's sends always go to the same
/// writer, so two writers of one process never wait for each other's locks: with shared queues,
/// a batch waiting for one chat held by another writer holds up every chat it has locked, and
/// those waits chain.
pub(crate) struct SendBatcher {
    queues: Vec<mpsc::Sender<QueuedSend>>,
}

impl std::fmt::Debug for SendBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatcher").finish_non_exhaustive()
    }
}

impl SendBatcher {
    /// Starts the writers on the current runtime; they stop when the batcher is dropped.
    pub(crate) fn start(pool: MySqlPool, writers: usize) -> Self {
        let writers = writers.max(1);
        let bound = (QUEUED_PER_PROCESS / writers).max(MAX_BATCH);
        let queues = (0..writers)
            .map(|_| {
                let (queue, waiting) = mpsc::channel(bound);
                tokio::spawn(write_batches(pool.clone(), waiting));
                queue
            })
            .collect();
        Self { queues }
    }

    pub(crate) async fn send(
        &self,
        new: &NewMessage<'_>,
        announce: Announce,
    ) -> Result<SendOutcome> {
        let (reply, answer) = oneshot::channel();
        let queued = QueuedSend {
            message: QueuedMessage::new(new),
            announce,
            reply,
        };
        let writer = (new.chat_id % self.queues.len() as u64) as usize;
        match self.queues[writer].try_send(queued) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                return Err(StoreError::Busy(
                    "too many messages are waiting to be stored, retry",
                ));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(StoreError::Busy("the store is shutting down"));
            }
        }
        answer
            .await
            .unwrap_or(Err(StoreError::Busy("the send was dropped, retry")))
    }
}

async fn write_batches(pool: MySqlPool, mut waiting: mpsc::Receiver<QueuedSend>) {
    while let Some(batch) = next_batch(&mut waiting).await {
        run_batch(&pool, batch).await;
    }
}

/// Waits for one send, then takes whatever else is already queued.
async fn next_batch(waiting: &mut mpsc::Receiver<QueuedSend>) -> Option<Vec<QueuedSend>> {
    let first = waiting.recv().await?;
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match waiting.try_recv() {
            Ok(send) => batch.push(send),
            Err(_) => break,
        }
    }
    Some(batch)
}

async fn run_batch(pool: &MySqlPool, batch: Vec<QueuedSend>) {
    let (batch, repeats) = split_repeats(batch);
    let mut alone = store_batch(pool, batch).await;
    alone.extend(repeats);
    for QueuedSend {
        message,
        announce,
        reply,
    } in alone
    {
        let outcome = crate::messages::send_alone(pool, message.borrowed(), announce).await;
        let _ = reply.send(outcome);
    }
}

/// Keeps the first send of each idempotency key; the others go the single way afterwards (and
/// find the first one stored).
fn split_repeats(batch: Vec<QueuedSend>) -> (Vec<QueuedSend>, Vec<QueuedSend>) {
    let mut seen = HashSet::new();
    let (mut first, mut repeats) = (Vec::with_capacity(batch.len()), Vec::new());
    for send in batch {
        let key = send.message.idempotency_key();
        let key = (key.0, key.1, key.2.to_string());
        if seen.insert(key) {
            first.push(send);
        } else {
            repeats.push(send);
        }
    }
    (first, repeats)
}

/// Stores and announces a batch and answers its sends; returns the sends to retry one by one.
async fn store_batch(pool: &MySqlPool, batch: Vec<QueuedSend>) -> Vec<QueuedSend> {
    if batch.is_empty() {
        return batch;
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            fail_all(batch, &StoreError::from(e));
            return Vec::new();
        }
    };
    let chats: Vec<Id> = batch
        .iter()
        .map(|send| send.message.chat_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let granted = match lock_chats(&mut conn, &chats).await {
        Ok(granted) => granted,
        Err(e) => {
            // Some locks may be held: closing the session frees them.
            drop(conn.detach());
            fail_all(batch, &StoreError::from(e));
            return Vec::new();
        }
    };
    let (batch, refused): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .partition(|send| granted.contains(&send.message.chat_id));
    for send in refused {
        send.answer(Err(StoreError::Busy("the chat is busy, retry")));
    }
    let messages: Vec<&QueuedMessage> = batch.iter().map(|send| &send.message).collect();
    let stored = write_batch(&mut conn, &messages).await;
    let retry = match stored {
        Ok(outcomes) => {
            let mut by_chat: BTreeMap<Id, Vec<(Announce, SendOutcome)>> = BTreeMap::new();
            let mut replies = Vec::with_capacity(outcomes.len());
            for (send, outcome) in batch.into_iter().zip(outcomes) {
                if let Ok(stored) = &outcome {
                    by_chat
                        .entry(stored.message.chat_id)
                        .or_default()
                        .push((send.announce, stored.clone()));
                }
                replies.push((send.reply, outcome));
            }
            announce_in_order(by_chat).await;
            for (reply, outcome) in replies {
                let _ = reply.send(outcome);
            }
            // Stored and published: the senders need not wait for the locks to go, and neither
            // does this writer's next batch (on another connection). A chat it shares with this
            // one waits in GET_LOCK for the release, so the chat's order holds.
            tokio::spawn(release_locks(conn));
            return Vec::new();
        }
        Err(BatchError::Retry(e)) => {
            tracing::debug!(error = %e, sends = batch.len(), "batch refused; sending one by one");
            batch
        }
        Err(BatchError::Failed(e)) => {
            drop(conn.detach());
            fail_all(batch, &e);
            return Vec::new();
        }
    };
    release_locks(conn).await;
    retry
}

fn fail_all(batch: Vec<QueuedSend>, error: &StoreError) {
    for send in batch {
        send.answer(Err(error.duplicate()));
    }
}

enum BatchError {
    /// The transaction was rolled back on a healthy connection: the sends can go one by one.
    Retry(sqlx::Error),
    /// The connection broke (or its COMMIT went unanswered): every send gets this error.
    Failed(StoreError),
}

impl From<sqlx::Error> for BatchError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::Database(_) => Self::Retry(err),
            other => Self::Failed(other.into()),
        }
    }
}

/// Takes the named locks of `chats` (ascending) in one statement; returns the chats granted.
async fn lock_chats(
    conn: &mut sqlx::pool::PoolConnection<MySql>,
    chats: &[Id],
) -> std::result::Result<HashSet<Id>, sqlx::Error> {
    let padded = padded_len(chats.len());
    let sql = format!(
        "SELECT {}",
        placeholders(padded, "GET_LOCK(LEFT(CONCAT(DATABASE(), ?), 64), ?)", ", ")
    );
    let mut query = sqlx::query(&sql);
    for index in 0..padded {
        let chat = chats[index.min(chats.len() - 1)];
        query = query
            .bind(crate::messages::chat_lock_name(chat))
            .bind(lock_wait_secs());
    }
    let row = query.fetch_one(&mut **conn).await?;
    let mut granted = HashSet::new();
    for (index, &chat) in chats.iter().enumerate() {
        if row.try_get::<Option<i64>, _>(index)? == Some(1) {
            granted.insert(chat);
        }
    }
    Ok(granted)
}

/// Releases every named lock of the session; if that fails, closes the connection instead.
async fn release_locks(mut conn: sqlx::pool::PoolConnection<MySql>) {
    if sqlx::query("DO RELEASE_ALL_LOCKS()")
        .execute(&mut *conn)
        .await
        .is_err()
    {
        drop(conn.detach());
    }
}

/// What the batch's transaction learns about one chat.
struct ChatState {
    next_seq: u64,
    members: Vec<Id>,
}

/// What the counters query learns for the INSERT besides the chats: the database's clock and
/// how it numbers the rows of one statement.
struct InsertFacts {
    now: NaiveDateTime,
    /// The distance between the ids of one multi-row INSERT when the server gives them out
    /// consecutively (`innodb_autoinc_lock_mode` 0 or 1, as on MariaDB by default): the session's
    /// `auto_increment_increment`. `None` (mode 2, MySQL 8's default): they must be read back.
    id_step: Option<u64>,
}

impl InsertFacts {
    fn id_step(autoinc_lock_mode: u64, increment: u64) -> Option<u64> {
        (autoinc_lock_mode <= 1 && increment >= 1).then_some(increment)
    }
}

/// Stores the batch in one transaction: per send, its outcome (or the error that is its alone,
/// such as not being a member).
async fn write_batch(
    conn: &mut sqlx::pool::PoolConnection<MySql>,
    batch: &[&QueuedMessage],
) -> std::result::Result<Vec<Result<SendOutcome>>, BatchError> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let mut chat_ids: Vec<Id> = batch.iter().map(|message| message.chat_id).collect();
    chat_ids.sort_unstable();
    chat_ids.dedup();
    let mut tx = conn.begin().await?;
    let (mut chats, facts) = lock_counters(&mut tx, &chat_ids).await?;
    let now = facts.now;
    let targets = reply_targets(&mut tx, batch).await?;
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
        ids = insert_messages(&mut tx, &rows, &facts).await?;
        update_counters(&mut tx, &rows, &ids, now).await?;
        tx.commit()
            .await
            .map_err(|e| BatchError::Failed(StoreError::at_commit(e)))?;
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

/// Locks the chats' counter rows; their next seqs, members, and the database's clock.
async fn lock_counters(
    tx: &mut sqlx::Transaction<'_, MySql>,
    chat_ids: &[Id],
) -> std::result::Result<(HashMap<Id, ChatState>, InsertFacts), sqlx::Error> {
    let padded = padded_len(chat_ids.len());
    let list = placeholders(padded, "?", ", ");
    // The id facts ride along for free; the increment is a session variable, so it is read here
    // rather than once per process.
    let sql = format!(
        "SELECT id, last_seq, NOW(3), CAST(@@innodb_autoinc_lock_mode AS UNSIGNED), \
         CAST(@@auto_increment_increment AS UNSIGNED) FROM chats WHERE id IN ({list}) FOR UPDATE"
    );
    let locked: Vec<(u64, u64, NaiveDateTime, u64, u64)> =
        bind_padded(sqlx::query_as(&sql), chat_ids, padded)
            .fetch_all(&mut **tx)
            .await?;
    // The timestamp comes from the database, taken under the chats' locks: one clock for all
    // api replicas, so sync cursors (points in time) order messages the way they committed.
    let facts = match locked.first() {
        Some(&(_, _, now, lock_mode, increment)) => InsertFacts {
            now,
            id_step: InsertFacts::id_step(lock_mode, increment),
        },
        None => InsertFacts {
            now: sqlx::query_scalar("SELECT NOW(3)")
                .fetch_one(&mut **tx)
                .await?,
            id_step: None,
        },
    };
    let mut chats: HashMap<Id, ChatState> = locked
        .into_iter()
        .map(|(id, last_seq, ..)| {
            let state = ChatState {
                next_seq: last_seq,
                members: Vec::new(),
            };
            (id, state)
        })
        .collect();
    let sql = format!("SELECT chat_id, user_id FROM chat_members WHERE chat_id IN ({list})");
    let members: Vec<(u64, u64)> = bind_padded(sqlx::query_as(&sql), chat_ids, padded)
        .fetch_all(&mut **tx)
        .await?;
    for (chat_id, user_id) in members {
        if let Some(chat) = chats.get_mut(&chat_id) {
            chat.members.push(user_id);
        }
    }
    Ok((chats, facts))
}

/// The chat of each message the batch replies to (absent: no such message).
async fn reply_targets(
    tx: &mut sqlx::Transaction<'_, MySql>,
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
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Inserts the rows in one statement; returns their ids in the same order.
async fn insert_messages(
    tx: &mut sqlx::Transaction<'_, MySql>,
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
    let done = query.execute(&mut **tx).await?;
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
            .fetch_all(&mut **tx)
            .await?;
    let stored: HashMap<(Id, u64), Id> = stored
        .into_iter()
        .map(|(chat_id, seq, id)| ((chat_id, seq), id))
        .collect();
    rows.iter()
        .map(|(message, seq)| stored.get(&(message.chat_id, *seq)).copied())
        .collect::<Option<Vec<Id>>>()
        .ok_or_else(|| {
            BatchError::Retry(sqlx::Error::Protocol(
                "an inserted message was not read back".into(),
            ))
        })
}

/// Moves each chat's counter and last message to its highest row of the batch, and, since
/// sending implies having read the chat up to one's own message, each sender's watermark to
/// their highest seq of the batch: one statement over a derived table of one row per (chat,
/// sender), the chat's values repeated on each. The members join is a LEFT JOIN, so a counter
/// moves even when its senders left the chat meanwhile.
async fn update_counters(
    tx: &mut sqlx::Transaction<'_, MySql>,
    rows: &[(&QueuedMessage, u64)],
    ids: &[Id],
    now: NaiveDateTime,
) -> std::result::Result<(), sqlx::Error> {
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
    let table: Vec<[u64; 5]> = read
        .into_iter()
        .filter_map(|((chat, user), read_seq)| {
            let &(last_seq, last_id) = last.get(&chat)?;
            Some([chat, user, read_seq, last_seq, last_id])
        })
        .collect();
    let sql = format!(
        "UPDATE chats c JOIN ({}) v ON v.chat_id = c.id \
         LEFT JOIN chat_members m ON m.chat_id = v.chat_id AND m.user_id = v.user_id \
         SET c.last_seq = v.last_seq, c.last_message_id = v.last_id, c.last_activity_at = ?, \
         m.last_read_seq = GREATEST(m.last_read_seq, v.read_seq)",
        rows_table(
            &["chat_id", "user_id", "read_seq", "last_seq", "last_id"],
            table.len()
        )
    );
    bind_rows(sqlx::query(&sql), &table)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A derived table of `rows` rows, padded (`padded_len`), for an UPDATE to join; `bind_rows`
/// binds its values.
fn rows_table(columns: &[&str], rows: usize) -> String {
    let row = columns
        .iter()
        .map(|column| format!("? AS {column}"))
        .collect::<Vec<_>>()
        .join(", ");
    placeholders(padded_len(rows), &format!("SELECT {row}"), " UNION ALL ")
}

fn bind_rows<'q, const N: usize>(
    mut query: sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments>,
    rows: &[[u64; N]],
) -> sqlx::query::Query<'q, MySql, sqlx::mysql::MySqlArguments> {
    for index in 0..padded_len(rows.len()) {
        for value in rows[index.min(rows.len() - 1)] {
            query = query.bind(value);
        }
    }
    query
}

/// Runs each stored send's publish: in seq order within a chat (the order the batch gave out
/// seqs), the chats side by side.
async fn announce_in_order(by_chat: BTreeMap<Id, Vec<(Announce, SendOutcome)>>) {
    let mut publishing = tokio::task::JoinSet::new();
    for (_, sends) in by_chat {
        publishing.spawn(async move {
            for (announce, outcome) in sends {
                announce(&outcome).await;
            }
        });
    }
    while publishing.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    //! The two ways `insert_messages` learns its ids, on a MariaDB database of its own with the
    //! session numbering by threes: MariaDB's default lock mode gives consecutive ids, so only
    //! this test covers the read-back that MySQL 8 (mode 2) takes.

    use super::{InsertFacts, QueuedMessage, insert_messages};
    use crate::Store;
    use chat_proto::MessageKind;
    use sqlx::{Connection, MySqlConnection};

    #[test]
    fn ids_are_computed_only_in_the_consecutive_lock_modes() {
        assert_eq!(InsertFacts::id_step(0, 1), Some(1));
        assert_eq!(InsertFacts::id_step(1, 2), Some(2));
        assert_eq!(InsertFacts::id_step(2, 1), None);
        assert_eq!(InsertFacts::id_step(1, 0), None);
    }

    #[tokio::test]
    async fn inserted_ids_match_the_stored_rows_either_way() {
        let admin_url = std::env::var("CHAT_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
        let name = format!("chat_store_ids_{}", std::process::id());
        let mut admin = MySqlConnection::connect(&admin_url)
            .await
            .expect("MariaDB is reachable (set CHAT_TEST_MYSQL_URL)");
        for sql in [
            format!("DROP DATABASE IF EXISTS `{name}`"),
            format!("CREATE DATABASE `{name}`"),
        ] {
            sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
        }
        let url = format!("{admin_url}/{name}");
        let store = Store::connect_lazy(&url, 2).expect("mysql url");
        store.migrate().await.expect("migrations");
        let alice = store.create_user("alice", None, "h").await.expect("alice");
        let bob = store.create_user("bob", None, "h").await.expect("bob");
        let (chat, _) = store
            .get_or_create_private(alice.id, bob.id)
            .await
            .expect("chat");
        store.close().await;

        let mut conn = MySqlConnection::connect(&url).await.expect("connect");
        sqlx::query("SET SESSION auto_increment_increment = 3")
            .execute(&mut conn)
            .await
            .expect("set the increment");
        let messages: Vec<QueuedMessage> = (0..6)
            .map(|i| QueuedMessage {
                chat_id: chat.id,
                sender_id: alice.id,
                kind: MessageKind::Text,
                text: Some(format!("m{i}")),
                attachment: None,
                reply_to_id: None,
                client_msg_id: format!("c{i}"),
            })
            .collect();
        let now = sqlx::query_scalar("SELECT NOW(3)")
            .fetch_one(&mut conn)
            .await
            .expect("now");
        for (half, id_step) in [(0, None), (1, Some(3))] {
            let rows: Vec<(&QueuedMessage, u64)> = messages[half * 3..half * 3 + 3]
                .iter()
                .zip(1 + half as u64 * 3..)
                .collect();
            let mut tx = conn.begin().await.expect("begin");
            let facts = InsertFacts { now, id_step };
            let ids = insert_messages(&mut tx, &rows, &facts)
                .await
                .unwrap_or_else(|_| panic!("insert with id_step {id_step:?}"));
            tx.commit().await.expect("commit");
            let seqs: Vec<u64> = rows.iter().map(|(_, seq)| *seq).collect();
            let mut stored = Vec::new();
            for seq in &seqs {
                let id: u64 =
                    sqlx::query_scalar("SELECT id FROM messages WHERE chat_id = ? AND seq = ?")
                        .bind(chat.id)
                        .bind(seq)
                        .fetch_one(&mut conn)
                        .await
                        .expect("stored row");
                stored.push(id);
            }
            assert_eq!(ids, stored, "ids with id_step {id_step:?}");
            assert_eq!(ids[1] - ids[0], 3, "the session numbers by threes");
        }
        sqlx::query(&format!("DROP DATABASE `{name}`"))
            .execute(&mut admin)
            .await
            .expect("drop the test database");
    }
}
