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
//!
//! Here: the queues and the writer tasks' lives (`SendBatcher`, `write_batches`); in `batch`, what
//! a writer does with what it took; in `session`, its database session; in `statements`, the
//! SQL of a batch's transaction.

mod batch;
pub(crate) mod session;
pub(crate) mod statements;
#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use chat_proto::{Attachment, Id, MessageKind};
use sqlx::MySqlPool;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::task::TaskTracker;

use self::batch::run_batch;
use self::session::WriterSession;
use crate::error::queue_refusal;
use crate::messages::{Announce, NewMessage, SendOutcome};
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

/// How long a writer with nothing to do keeps its last batch's named locks: a release of its own
/// is a round trip that a send arriving meanwhile would wait behind. Another replica's writer
/// sending to the same chat may wait up to this much longer for it.
const RELEASE_GRACE: Duration = Duration::from_millis(2);

/// A message to store, owned, so that it can wait in the queue.
pub struct QueuedMessage {
    pub(super) chat_id: Id,
    pub(super) sender_id: Id,
    pub(super) kind: MessageKind,
    pub(super) text: Option<String>,
    pub(super) attachment: Option<Attachment>,
    pub(super) reply_to_id: Option<Id>,
    pub(super) client_msg_id: String,
}

impl QueuedMessage {
    pub fn new(new: &NewMessage<'_>) -> Self {
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

    pub(super) fn borrowed(&self) -> NewMessage<'_> {
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

    pub(super) fn idempotency_key(&self) -> (Id, Id, &str) {
        (self.chat_id, self.sender_id, &self.client_msg_id)
    }
}

struct QueuedSend {
    pub(super) message: QueuedMessage,
    pub(super) announce: Announce,
    pub(super) reply: oneshot::Sender<Result<SendOutcome>>,
    /// When it was queued, for the wait histogram.
    pub(super) queued_at: Instant,
}

impl QueuedSend {
    pub(super) fn answer(self, outcome: Result<SendOutcome>) {
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
            queued_at: Instant::now(),
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

/// Runs `messages` as one batch a writer took from its queue, with no publish, and returns each
/// send's answer in order.
#[cfg(feature = "test-internals")]
pub async fn run_batch_of(
    session: &mut WriterSession,
    messages: Vec<QueuedMessage>,
) -> Vec<Result<SendOutcome>> {
    let mut answers = Vec::with_capacity(messages.len());
    let batch = messages
        .into_iter()
        .map(|message| {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            let announce: Announce = Box::new(|_| Box::pin(async {}));
            QueuedSend {
                message,
                announce,
                reply,
                queued_at: Instant::now(),
            }
        })
        .collect();
    run_batch(session, batch).await;
    let mut outcomes = Vec::with_capacity(answers.len());
    for answer in answers {
        outcomes.push(answer.await.unwrap_or(Err(StoreError::Busy("unanswered"))));
    }
    outcomes
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
