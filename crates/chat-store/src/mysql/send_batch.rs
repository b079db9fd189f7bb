//! Sends on MySQL, coalesced: the sends that arrive while a transaction runs go together into the
//! next one. A send is several round trips and a commit however small it is, so under load this
//! is what lets the database keep up (docs/performance.md).
//!
//! Writer tasks (one unless configured), each with its own queue, its own share of the chats and
//! its own database session. Each takes whatever is waiting (up to `MAX_BATCH`) and stores it
//! with every statement covering the whole batch, in four round trips: the chats' named locks
//! (taken in ascending chat order, in one statement, so writers of several api replicas never
//! wait on each other in a cycle) with BEGIN; the counters' row locks with the members; one
//! INSERT; one UPDATE for the counters and the senders' watermarks, with COMMIT. The inserted ids
//! are read back only where the server may number one INSERT's rows with gaps (`InsertFacts`).
//! The publishes run after the commit and before the locks go, in seq order within each chat;
//! then the sends are answered, and the locks go with the next batch's first statement, or after
//! `RELEASE_GRACE` when no send comes.
//!
//! What a batch cannot store together goes again one send at a time, each a batch of one on the
//! same session: a second send with the same idempotency key in one batch, and a batch the server
//! refused with the connection still usable (a duplicate key, a deadlock). Alone, a duplicate key
//! is a retried send, answered with the message first stored under it; any other refusal is that
//! send's error. Errors of a broken connection fail every send of the batch.

use std::collections::{BTreeMap, HashMap, HashSet};

use chat_proto::{Attachment, Id, MessageKind};
use sqlx::types::chrono::NaiveDateTime;
use std::time::{Duration, Instant};

use sqlx::pool::PoolConnection;
use sqlx::{Executor, MySql, MySqlConnection, MySqlPool, Row};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use super::MySqlBackend;
use super::chat_lock::{CHAT_LOCK_WAIT_SECS, chat_lock_name};
use crate::chats::MEMBER_IDS;
use crate::error::{is_duplicate_of, queue_refusal};
use crate::messages::{Announce, NewMessage, SendOutcome, stored_by_client_id};
use crate::padded::{bind_padded, padded_len, placeholders};
use crate::{Result, StoreError};

/// The unique key a retried send breaks.
const IDEMPOTENCY_KEY: &str = "uq_messages_idem";

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

/// How long a writer with nothing to do keeps its last batch's named locks: a release of its own
/// is a round trip that a send arriving meanwhile would wait behind. Another replica's writer
/// sending to the same chat may wait up to this much longer for it.
const RELEASE_GRACE: Duration = Duration::from_millis(2);

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
    /// Set by `close`: each writer stores what is queued, then ends.
    closing: watch::Sender<bool>,
    writers: TaskTracker,
}

impl std::fmt::Debug for SendBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendBatcher").finish_non_exhaustive()
    }
}

impl SendBatcher {
    /// Starts the writers on the current runtime; they stop on `close` or when the batcher is
    /// dropped.
    pub(crate) fn start(pool: MySqlPool, writers: usize) -> Self {
        let writers = writers.max(1);
        let bound = (QUEUED_PER_PROCESS / writers).max(MAX_BATCH);
        let (closing, closed) = watch::channel(false);
        let tasks = TaskTracker::new();
        let queues = (0..writers)
            .map(|_| {
                let (queue, waiting) = mpsc::channel(bound);
                tasks.spawn(write_batches(pool.clone(), waiting, closed.clone()));
                queue
            })
            .collect();
        tasks.close();
        Self {
            queues,
            closing,
            writers: tasks,
        }
    }

    /// Stores and answers what is queued, refuses later sends (`Busy`), and returns once every
    /// writer has handed its connection back: a writer keeps one between batches, and the pool
    /// closes only when all are back.
    pub(crate) async fn close(&self) {
        let _ = self.closing.send(true);
        self.writers.wait().await;
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
        self.queues[writer]
            .try_send(queued)
            .map_err(|e| queue_refusal(e, "too many messages are waiting to be stored, retry"))?;
        answer
            .await
            .unwrap_or(Err(StoreError::Busy("the send was dropped, retry")))
    }
}

async fn write_batches(
    pool: MySqlPool,
    mut waiting: mpsc::Receiver<QueuedSend>,
    mut closing: watch::Receiver<bool>,
) {
    let mut session = WriterSession::new(pool);
    let mut closed = false;
    loop {
        // A send that comes soon after a batch releases its locks with its own first statement;
        // when none comes, the writer releases them for other replicas' writers.
        let grace = session.holds_locks.then_some(RELEASE_GRACE);
        match wait_for_sends(&mut waiting, &mut closing, grace, closed).await {
            Waited::Batch(batch) => run_batch(&mut session, batch).await,
            Waited::Idle => session.release().await,
            // What is queued still comes out of the queue; then it reports the end.
            Waited::Closing => {
                waiting.close();
                closed = true;
            }
            Waited::End => break,
        }
    }
    session.release().await;
}

enum Waited {
    Batch(Vec<QueuedSend>),
    /// The grace period passed with no send.
    Idle,
    /// `SendBatcher::close` was called (or the batcher dropped).
    Closing,
    /// The queue is closed and empty.
    End,
}

/// The writer's wait between batches. Nothing here is cut short midway: the queue's receive is
/// the only await that can lose the race, and a batch is taken whole in the poll it completes.
async fn wait_for_sends(
    waiting: &mut mpsc::Receiver<QueuedSend>,
    closing: &mut watch::Receiver<bool>,
    grace: Option<Duration>,
    closed: bool,
) -> Waited {
    let idle = async {
        match grace {
            Some(grace) => tokio::time::sleep(grace).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        next = next_batch(waiting) => next.map_or(Waited::End, Waited::Batch),
        () = idle => Waited::Idle,
        _ = closing.wait_for(|&close| close), if !closed => Waited::Closing,
    }
}

/// Waits for one send, then takes whatever else is already queued (up to `MAX_BATCH`); `None`
/// once the queue is closed and empty.
async fn next_batch(waiting: &mut mpsc::Receiver<QueuedSend>) -> Option<Vec<QueuedSend>> {
    let mut batch = Vec::new();
    (waiting.recv_many(&mut batch, MAX_BATCH).await > 0).then_some(batch)
}

async fn run_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) {
    let (batch, repeats) = split_repeats(batch);
    let mut alone = store_batch(session, batch).await;
    alone.extend(repeats);
    for send in alone {
        store_alone(session, send).await;
    }
}

/// Keeps the first send of each idempotency key; the others go alone afterwards (and find the
/// first one stored).
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

/// A writer's own database session, kept from batch to batch. A batch is a handful of round trips
/// in a row, and on a busy machine each one waits for both processes to be scheduled
/// (docs/performance.md), so the session saves the ones that do no work: the pool's pings on
/// acquire and release, and a statement of its own for BEGIN, for COMMIT and for releasing the
/// chats' named locks. Those ride in the text protocol with the statement next to them.
struct WriterSession {
    pool: MySqlPool,
    conn: Option<PoolConnection<MySql>>,
    /// A transaction is open: it is rolled back before the locks go.
    in_transaction: bool,
    /// Named locks of the last batch are held: the next statement releases them first.
    holds_locks: bool,
    last_used: Instant,
}

impl WriterSession {
    fn new(pool: MySqlPool) -> Self {
        Self {
            pool,
            conn: None,
            in_transaction: false,
            holds_locks: false,
            last_used: Instant::now(),
        }
    }

    /// The session's connection: a new one from the pool after a failure, and one idle for a
    /// while is pinged first, as the pool does (`PING_AFTER_IDLE`).
    async fn connection(&mut self) -> std::result::Result<&mut MySqlConnection, sqlx::Error> {
        if let Some(conn) = self.conn.as_mut()
            && super::ping_if_idle(conn, self.last_used.elapsed())
                .await
                .is_err()
        {
            self.discard();
        }
        self.last_used = Instant::now();
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.pool.acquire().await?,
        };
        Ok(&mut **self.conn.insert(conn))
    }

    /// Releases the previous batch's locks, takes the named locks of `chats` (ascending) and
    /// begins the batch's transaction, in one round trip; returns the chats granted.
    async fn begin(&mut self, chats: &[Id]) -> std::result::Result<HashSet<Id>, sqlx::Error> {
        // A batch whose every send was refused stored nothing and left its transaction open.
        let rollback = if self.in_transaction {
            "ROLLBACK; "
        } else {
            ""
        };
        let release = if self.holds_locks {
            "DO RELEASE_ALL_LOCKS(); "
        } else {
            ""
        };
        let locks = chats
            .iter()
            .map(|&chat| {
                // Ids are numbers, so the names need no quoting beyond the literal's quotes.
                format!(
                    "GET_LOCK(LEFT(CONCAT(DATABASE(), '{}'), 64), {})",
                    chat_lock_name(chat),
                    CHAT_LOCK_WAIT_SECS
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("{rollback}{release}SELECT {locks}; BEGIN");
        let conn = self.connection().await?;
        // All of the statements' results are read here, not left for the next command.
        let rows = conn.fetch_all(sql.as_str()).await;
        // Whatever happened, the old locks are gone or the connection will be.
        self.holds_locks = true;
        let rows = rows?;
        self.in_transaction = true;
        let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
        let mut granted = HashSet::new();
        for (index, &chat) in chats.iter().enumerate() {
            if row.try_get::<Option<i64>, _>(index)? == Some(1) {
                granted.insert(chat);
            }
        }
        Ok(granted)
    }

    /// Runs `statement` and COMMIT in one round trip. A database error leaves the transaction
    /// open (the server stops at the failing statement); any other leaves the commit unknown.
    async fn commit_with(&mut self, statement: &str) -> std::result::Result<(), BatchError> {
        let sql = format!("{statement}; COMMIT");
        let conn = self.connection().await?;
        match conn.execute(sql.as_str()).await {
            Ok(_) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(e @ sqlx::Error::Database(_)) => Err(BatchError::Retry(RetryCause::Refused(e))),
            Err(e) => Err(BatchError::Failed(StoreError::at_commit(e))),
        }
    }

    /// Rolls back the open transaction and keeps the named locks; if that fails, closes the
    /// connection, which frees them too.
    async fn rollback(&mut self) -> std::result::Result<(), sqlx::Error> {
        let Some(conn) = self.conn.as_mut().filter(|_| self.in_transaction) else {
            return Ok(());
        };
        match conn.execute("ROLLBACK").await {
            Ok(_) => {
                self.in_transaction = false;
                Ok(())
            }
            Err(e) => {
                self.discard();
                Err(e)
            }
        }
    }

    /// Ends an open transaction and releases the named locks; if that fails, closes the
    /// connection instead, which does both.
    async fn release(&mut self) {
        let sql = match (self.in_transaction, self.holds_locks) {
            (false, false) => return,
            (true, true) => "ROLLBACK; DO RELEASE_ALL_LOCKS()",
            (true, false) => "ROLLBACK",
            (false, true) => "DO RELEASE_ALL_LOCKS()",
        };
        let released = match self.conn.as_mut() {
            Some(conn) => conn.execute(sql).await.is_ok(),
            None => true,
        };
        if released {
            self.in_transaction = false;
            self.holds_locks = false;
        } else {
            self.discard();
        }
    }

    /// Closes the connection, which ends its transaction and frees its locks on the server; the
    /// next batch takes a new one.
    fn discard(&mut self) {
        if let Some(conn) = self.conn.take() {
            drop(conn.detach());
        }
        self.in_transaction = false;
        self.holds_locks = false;
    }
}

impl Drop for WriterSession {
    /// A session dropped mid-batch (the runtime shutting down) must not hand its transaction or
    /// locks back to the pool.
    fn drop(&mut self) {
        if self.in_transaction || self.holds_locks {
            self.discard();
        }
    }
}

/// Stores and announces a batch and answers its sends; returns the sends to retry one by one.
async fn store_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) -> Vec<QueuedSend> {
    if batch.is_empty() {
        return batch;
    }
    let chats: Vec<Id> = batch
        .iter()
        .map(|send| send.message.chat_id)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let granted = match session.begin(&chats).await {
        Ok(granted) => granted,
        Err(e) => {
            // Some locks may be held: closing the session frees them.
            session.discard();
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
    match write_batch(session, &messages).await {
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
            // Published under the locks, so the chat's order holds across replicas; the
            // locks go with the next batch's first statement, or when the writer goes idle.
            announce_in_order(by_chat).await;
            for (reply, outcome) in replies {
                let _ = reply.send(outcome);
            }
            Vec::new()
        }
        Err(BatchError::Retry(e)) => {
            tracing::debug!(error = %e, sends = batch.len(), "batch refused; sending one by one");
            batch
        }
        Err(BatchError::Failed(e)) => {
            session.discard();
            fail_all(batch, &e);
            Vec::new()
        }
    }
}

/// Stores one send in a transaction of its own, with the batch's statements, announces it under
/// the chat's lock and answers it: what a batch could not store together.
async fn store_alone(session: &mut WriterSession, send: QueuedSend) {
    let chat = send.message.chat_id;
    match session.begin(&[chat]).await {
        Ok(granted) if granted.contains(&chat) => {}
        Ok(_) => return send.answer(Err(StoreError::Busy("the chat is busy, retry"))),
        Err(e) => {
            session.discard();
            return send.answer(Err(e.into()));
        }
    }
    let outcome = match write_batch(session, &[&send.message]).await {
        Ok(outcomes) => outcomes
            .into_iter()
            .next()
            .unwrap_or(Err(StoreError::NotFound)),
        Err(BatchError::Retry(RetryCause::Refused(e))) if is_duplicate_of(&e, IDEMPOTENCY_KEY) => {
            first_stored(session, &send.message).await
        }
        Err(BatchError::Retry(cause)) => Err(cause.into()),
        Err(BatchError::Failed(e)) => {
            session.discard();
            Err(e)
        }
    };
    if let Ok(outcome) = &outcome {
        (send.announce)(outcome).await;
    }
    let _ = send.reply.send(outcome);
}

/// A retried send: rolls back its failed INSERT (keeping the chat's lock) and answers with the
/// message first stored under its idempotency key.
async fn first_stored(session: &mut WriterSession, message: &QueuedMessage) -> Result<SendOutcome> {
    session.rollback().await?;
    let conn = session.connection().await?;
    let first = stored_by_client_id::<MySqlBackend, MySql, _>(
        conn,
        message.chat_id,
        message.sender_id,
        &message.client_msg_id,
    )
    .await?;
    first.map(SendOutcome::repeat).ok_or(StoreError::NotFound)
}

fn fail_all(batch: Vec<QueuedSend>, error: &StoreError) {
    for send in batch {
        send.answer(Err(error.duplicate()));
    }
}

enum BatchError {
    /// The connection is healthy and the batch path cannot store these sends: they can go one by
    /// one (the transaction is rolled back first).
    Retry(RetryCause),
    /// The connection broke (or its COMMIT went unanswered): every send gets this error.
    Failed(StoreError),
}

/// Why a batch went one send at a time (logged), or, alone, why a send failed.
#[derive(Debug, thiserror::Error)]
enum RetryCause {
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

/// Stores the batch in the session's transaction and commits it: per send, its outcome (or the
/// error that is its alone, such as not being a member).
async fn write_batch(
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
fn parse_members(checked: &str) -> std::result::Result<Vec<Id>, String> {
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
async fn insert_messages(
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
    //! On a MariaDB database of each test's own: the two ways `insert_messages` learns its ids
    //! (MariaDB's default lock mode gives consecutive ids, so only the session numbering by threes
    //! here covers the read-back that MySQL 8's mode 2 takes), and the writer session's statements
    //! that ride together in one round trip.

    use super::{
        BatchError, InsertFacts, QueuedMessage, RetryCause, WriterSession, insert_messages,
        write_batch,
    };
    use crate::Store;
    use chat_proto::{Chat, Id, MessageKind};
    use sqlx::{Connection, MySqlConnection, MySqlPool};

    /// A migrated database with alice and bob in one private chat.
    struct Fixture {
        admin: MySqlConnection,
        name: String,
        url: String,
        chat: Chat,
        alice: Id,
        chat_peer: Id,
    }

    impl Fixture {
        async fn new(tag: &str) -> Self {
            let admin_url = std::env::var("CHAT_TEST_MYSQL_URL")
                .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".into());
            let name = format!("chat_store_{tag}_{}", std::process::id());
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
            // Ids of seven digits, so that a member list of two is longer than the shortest
            // `group_concat_max_len` (4).
            let sql = format!("ALTER TABLE `{name}`.users AUTO_INCREMENT = 1000000");
            sqlx::query(&sql).execute(&mut admin).await.expect(&sql);
            let alice = store.create_user("alice", None, "h").await.expect("alice");
            let bob = store.create_user("bob", None, "h").await.expect("bob");
            let (chat, _) = store
                .get_or_create_private(alice.id, bob.id)
                .await
                .expect("chat");
            store.close().await;
            Self {
                admin,
                name,
                url,
                chat,
                alice: alice.id,
                chat_peer: bob.id,
            }
        }

        /// Whether another session could take the chat's named lock now.
        async fn lock_is_free(&mut self, chat: Id) -> bool {
            let name = format!("{}{}", self.name, super::chat_lock_name(chat));
            let free: Option<i64> = sqlx::query_scalar("SELECT IS_FREE_LOCK(LEFT(?, 64))")
                .bind(name)
                .fetch_one(&mut self.admin)
                .await
                .expect("IS_FREE_LOCK");
            free == Some(1)
        }

        async fn last_seq(&mut self) -> u64 {
            let sql = format!("SELECT last_seq FROM `{}`.chats WHERE id = ?", self.name);
            sqlx::query_scalar(&sql)
                .bind(self.chat.id)
                .fetch_one(&mut self.admin)
                .await
                .expect("the chat's counter")
        }

        async fn drop_database(mut self) {
            sqlx::query(&format!("DROP DATABASE `{}`", self.name))
                .execute(&mut self.admin)
                .await
                .expect("drop the test database");
        }
    }

    #[test]
    fn ids_are_computed_only_in_the_consecutive_lock_modes() {
        assert_eq!(InsertFacts::id_step(0, 1), Some(1));
        assert_eq!(InsertFacts::id_step(1, 2), Some(2));
        assert_eq!(InsertFacts::id_step(2, 1), None);
        assert_eq!(InsertFacts::id_step(1, 0), None);
    }

    #[tokio::test]
    async fn inserted_ids_match_the_stored_rows_either_way() {
        let fixture = Fixture::new("ids").await;
        let (chat, alice) = (fixture.chat.id, fixture.alice);
        let mut conn = MySqlConnection::connect(&fixture.url)
            .await
            .expect("connect");
        sqlx::query("SET SESSION auto_increment_increment = 3")
            .execute(&mut conn)
            .await
            .expect("set the increment");
        let messages: Vec<QueuedMessage> = (0..6)
            .map(|i| QueuedMessage {
                chat_id: chat,
                sender_id: alice,
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
                        .bind(chat)
                        .bind(seq)
                        .fetch_one(&mut conn)
                        .await
                        .expect("stored row");
                stored.push(id);
            }
            assert_eq!(ids, stored, "ids with id_step {id_step:?}");
            assert_eq!(ids[1] - ids[0], 3, "the session numbers by threes");
        }
        fixture.drop_database().await;
    }

    /// The statement that fails before COMMIT leaves the transaction open on a usable
    /// connection; `release` rolls it back and frees the lock.
    #[tokio::test]
    async fn a_statement_failing_before_commit_is_rolled_back_by_release() {
        let mut fixture = Fixture::new("rollback").await;
        let chat = fixture.chat.id;
        let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
        let mut session = WriterSession::new(pool.clone());

        let granted = session.begin(&[chat]).await.expect("begin");
        assert!(granted.contains(&chat), "the chat's lock is granted");
        assert!(
            !fixture.lock_is_free(chat).await,
            "the session holds the lock"
        );
        let conn = session.connection().await.expect("connection");
        sqlx::query("UPDATE chats SET last_seq = 99 WHERE id = ?")
            .bind(chat)
            .execute(&mut *conn)
            .await
            .expect("update in the transaction");
        let failed = session.commit_with("UPDATE no_such_table SET x = 1").await;
        assert!(
            matches!(failed, Err(BatchError::Retry(RetryCause::Refused(_)))),
            "a database error is retryable"
        );
        session.release().await;
        assert!(session.conn.is_some(), "the connection was kept");
        assert_eq!(fixture.last_seq().await, 0, "the update was rolled back");
        assert!(fixture.lock_is_free(chat).await, "the lock was released");

        // The same session goes on: this time the transaction commits.
        session.begin(&[chat]).await.expect("begin again");
        let sql = format!("UPDATE chats SET last_seq = 7 WHERE id = {chat}");
        assert!(session.commit_with(&sql).await.is_ok(), "commit");
        assert_eq!(fixture.last_seq().await, 7, "the update was committed");
        session.release().await;
        drop(session);
        pool.close().await;
        fixture.drop_database().await;
    }

    #[test]
    fn a_member_list_must_match_its_count_and_sum() {
        assert_eq!(super::parse_members("2 21 [10,11]"), Ok(vec![10, 11]));
        assert_eq!(
            super::parse_members("3 33 [10, 11, 12]"),
            Ok(vec![10, 11, 12])
        );
        assert!(
            super::parse_members("2 21 [10,1]").is_err(),
            "cut inside a number"
        );
        assert!(
            super::parse_members("3 33 [10,11]").is_err(),
            "cut between numbers"
        );
        assert!(super::parse_members("2 [10,11]").is_err(), "no sum");
    }

    /// A member list the server cut short is read again row by row; whole, it is used as is.
    /// Either way the send's outcome names every member.
    #[tokio::test]
    async fn a_cut_member_list_is_read_again() {
        let mut fixture = Fixture::new("members").await;
        let (chat, alice) = (fixture.chat.id, fixture.alice);
        let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
        let mut session = WriterSession::new(pool.clone());
        let mut expected = vec![alice, fixture.chat_peer];
        expected.sort_unstable();

        for (limit, client_msg_id) in [("4", "c1"), ("DEFAULT", "c2")] {
            let message = QueuedMessage {
                chat_id: chat,
                sender_id: alice,
                kind: MessageKind::Text,
                text: Some("hi".into()),
                attachment: None,
                reply_to_id: None,
                client_msg_id: client_msg_id.into(),
            };
            let conn = session.connection().await.expect("connection");
            sqlx::query(&format!("SET SESSION group_concat_max_len = {limit}"))
                .execute(&mut *conn)
                .await
                .expect("the list's limit");
            session.begin(&[chat]).await.expect("begin");
            let stored = match write_batch(&mut session, &[&message]).await {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .next()
                    .expect("one outcome")
                    .expect("stored"),
                Err(_) => panic!("the batch is stored with group_concat_max_len = {limit}"),
            };
            let mut members = stored.member_ids;
            members.sort_unstable();
            assert_eq!(members, expected, "group_concat_max_len = {limit}");
        }
        assert_eq!(fixture.last_seq().await, 2, "both messages are stored");
        session.release().await;
        drop(session);
        pool.close().await;
        fixture.drop_database().await;
    }

    /// After a batch the locks stay with the session until its next batch begins (in the same
    /// round trip) or the writer goes idle.
    #[tokio::test]
    async fn the_next_batch_releases_the_previous_batchs_locks() {
        let mut fixture = Fixture::new("locks").await;
        let chat = fixture.chat.id;
        let other = chat + 1_000_000;
        let pool = MySqlPool::connect(&fixture.url).await.expect("pool");
        let mut session = WriterSession::new(pool.clone());

        session.begin(&[chat]).await.expect("first batch");
        session
            .commit_with("DO 0")
            .await
            .map_err(|_| ())
            .expect("commit");
        assert!(!fixture.lock_is_free(chat).await, "held after the commit");
        session.begin(&[other]).await.expect("second batch");
        assert!(
            fixture.lock_is_free(chat).await,
            "released by the next batch"
        );
        assert!(
            !fixture.lock_is_free(other).await,
            "the next batch's lock is held"
        );
        session
            .commit_with("DO 0")
            .await
            .map_err(|_| ())
            .expect("commit");
        session.release().await;
        assert!(fixture.lock_is_free(other).await, "released when idle");
        drop(session);
        pool.close().await;
        fixture.drop_database().await;
    }
}
