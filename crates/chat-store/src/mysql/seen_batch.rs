//! Presence changes on MySQL, coalesced: the `last_seen` writes and audience reads that arrive
//! while one batch runs go together into the next. Every connect and disconnect of a user is one
//! such change, and alone each was an autocommit UPDATE, so a redo-log flush: in the churn load
//! test they were 95% of the database's commits (docs/performance.md). A batch is two round
//! trips whatever its size: one UPDATE (its own commit) stamping every user of the batch with the
//! same time, and one SELECT of the (user, audience member) pairs.

use std::collections::HashMap;

use chat_proto::Id;
use chat_proto::time::{Timestamp, now_millis};
use sqlx::MySqlPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::{is_deadlock, queue_refusal};
use crate::padded::{padded_len, placeholders};
use crate::{Result, Seen, StoreError};

/// The most changes one batch takes (its SELECT binds three lists of this many ids).
const MAX_BATCH: usize = 256;
/// How often the batch's UPDATE runs when the server picks it as a deadlock's victim. A send
/// batch's INSERT holds shared locks on its senders' `users` rows (the foreign key check) in the
/// order of its rows, while this UPDATE takes them exclusively in id order, so the two can meet
/// in a cycle; the UPDATE, which changes fewer rows, is the one the server rolls back. Running it
/// again is safe (the same stamp on the same rows) and answers the changes instead of failing
/// them back to the gateway.
const DEADLOCK_ATTEMPTS: u32 = 3;
/// Changes waiting beyond which new ones are refused (`Busy`): the gateway retries a refused
/// notice after a pause, which beats holding thousands of requests open on an overloaded api.
const QUEUED: usize = 1024;

struct QueuedChange {
    user_id: Id,
    reply: oneshot::Sender<Result<Seen>>,
}

/// The queue in front of the one writer task.
pub(crate) struct SeenBatcher {
    queue: mpsc::Sender<QueuedChange>,
}

impl std::fmt::Debug for SeenBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeenBatcher").finish_non_exhaustive()
    }
}

impl SeenBatcher {
    /// Starts the writer on the current runtime; it stops when the batcher is dropped.
    pub(crate) fn start(pool: MySqlPool) -> Self {
        let (queue, waiting) = mpsc::channel(QUEUED);
        tokio::spawn(write_batches(pool, waiting));
        Self { queue }
    }

    pub(crate) async fn mark_seen(&self, user_id: Id) -> Result<Seen> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .try_send(QueuedChange { user_id, reply })
            .map_err(|e| queue_refusal(e, "too many presence changes are waiting, retry"))?;
        answer.await.unwrap_or(Err(StoreError::Busy(
            "the presence change was dropped, retry",
        )))
    }
}

async fn write_batches(pool: MySqlPool, mut waiting: mpsc::Receiver<QueuedChange>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let users: Vec<Id> = batch.iter().map(|change| change.user_id).collect();
        match store_batch(&pool, &users).await {
            Ok((last_seen, audiences)) => {
                for change in batch.drain(..) {
                    // A user twice in one batch (online, then offline) gets the same answer twice.
                    let audience = audiences.get(&change.user_id).cloned().unwrap_or_default();
                    let _ = change.reply.send(Ok(Seen {
                        last_seen,
                        audience,
                    }));
                }
            }
            Err(e) => {
                for change in batch.drain(..) {
                    let _ = change.reply.send(Err(e.duplicate()));
                }
            }
        }
    }
}

/// Stamps `users` with one `last_seen` and reads each one's audience: the users it has as
/// contacts, those who have it, and its private chats' peers. Not its groups' members: with
/// them, a group of n coming online cost n² presence events.
async fn store_batch(pool: &MySqlPool, users: &[Id]) -> Result<(Timestamp, HashMap<Id, Vec<Id>>)> {
    let mut distinct = users.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    // Repeating the last id pads each list to one of a few lengths, so that the connection
    // prepares a handful of statement shapes (`crate::padded`).
    let padded = padded_len(distinct.len());
    let ids = |n: usize| distinct[n.min(distinct.len() - 1)];
    let list = placeholders(padded, "?", ", ");

    let mut conn = pool.acquire().await?;
    let now = now_millis();
    let update = format!("UPDATE users SET last_seen = ? WHERE id IN ({list})");
    for attempt in 1..=DEADLOCK_ATTEMPTS {
        let mut query = sqlx::query(&update).bind(now.naive_utc());
        for n in 0..padded {
            query = query.bind(ids(n));
        }
        match query.execute(&mut *conn).await {
            Ok(_) => break,
            Err(e) if attempt < DEADLOCK_ATTEMPTS && is_deadlock(&e) => {
                tracing::debug!(
                    attempt,
                    "a presence batch was a deadlock's victim, running it again"
                );
            }
            Err(e) => return Err(e.into()),
        }
    }

    let select = format!(
        "SELECT contact_id, owner_id FROM contacts WHERE contact_id IN ({list}) \
         UNION SELECT owner_id, contact_id FROM contacts WHERE owner_id IN ({list}) \
         UNION SELECT me.user_id, peer.user_id FROM chat_members me \
               JOIN chats c ON c.id = me.chat_id AND c.kind = 'private' \
               JOIN chat_members peer ON peer.chat_id = me.chat_id \
               WHERE me.user_id IN ({list}) AND peer.user_id <> me.user_id"
    );
    let mut query = sqlx::query_as::<_, (u64, u64)>(&select);
    for _ in 0..3 {
        for n in 0..padded {
            query = query.bind(ids(n));
        }
    }
    let mut audiences: HashMap<Id, Vec<Id>> = HashMap::with_capacity(distinct.len());
    for (user, member) in query.fetch_all(&mut *conn).await? {
        audiences.entry(user).or_default().push(member);
    }
    Ok((now, audiences))
}
