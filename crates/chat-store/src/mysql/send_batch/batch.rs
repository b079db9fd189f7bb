//! Storing what a writer took from its queue: the sends go together in one transaction; then the
//! publishes, in seq order within each chat, and the answers.
//!
//! A batch the server refuses is tried together again where the cause can be taken out: sends
//! already stored under their idempotency key (a client resending what it sent before its
//! gateway died) are found in one query and answered as repeats, and a deadlock's victim runs
//! again. Only what is left after that goes one send at a time, each its own commit: in a
//! reconnect storm a batch of a few hundred sends with one resend among them, sent alone, cost a
//! few hundred commits in a row, and the process's sends waited seconds behind them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use chat_proto::{Id, Message};
use sqlx::MySql;

use super::session::WriterSession;
use super::statements::{BatchError, RetryCause, write_batch};
use super::{QueuedMessage, QueuedSend};
use crate::dialect::key;
use crate::error::{is_deadlock, is_duplicate_of};
use crate::messages::{Announce, MessageRow, SendOutcome, message_columns, stored_by_client_id};
use crate::mysql::MySqlBackend;
use crate::padded::{padded_len, placeholders};
use crate::{Result, StoreError};

/// The unique key a retried send breaks.
const IDEMPOTENCY_KEY: &str = "uq_messages_idem";
/// How many times a refused batch is tried together again before its sends go one at a time.
/// One round answers the resends a batch holds; a second covers a resend that arrived in the
/// same batch as a deadlock.
const TOGETHER_AGAIN: usize = 2;

/// What became of a batch tried together.
enum Tried {
    /// Stored and answered, or failed and answered.
    Answered,
    /// The server refused the batch with the connection usable; nothing is answered.
    Refused(Vec<QueuedSend>, RetryCause),
}

/// Stores, announces and answers a batch.
pub(super) async fn run_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) {
    let now = Instant::now();
    let waited = metrics::histogram!("chat_api_send_wait_seconds");
    for send in &batch {
        waited.record(now.saturating_duration_since(send.queued_at));
    }
    metrics::histogram!("chat_api_send_batch_sends").record(batch.len() as f64);
    let (mut batch, repeats) = split_repeats(batch);
    let mut alone = Vec::new();
    for round in 0..=TOGETHER_AGAIN {
        let (sends, cause) = match store_batch(session, std::mem::take(&mut batch)).await {
            Tried::Answered => break,
            Tried::Refused(sends, cause) => (sends, cause),
        };
        let again = round < TOGETHER_AGAIN;
        match &cause {
            RetryCause::Refused(e) if again && is_duplicate_of(e, IDEMPOTENCY_KEY) => {
                batch = answer_stored(session, sends).await;
            }
            RetryCause::Refused(e) if again && is_deadlock(e) => {
                tracing::debug!(
                    sends = sends.len(),
                    "a batch was a deadlock's victim; again"
                );
                batch = sends;
            }
            _ => {
                tracing::debug!(error = %cause, sends = sends.len(), "batch refused; sending one by one");
                alone = sends;
                break;
            }
        }
    }
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

/// Stores and announces a batch and answers its sends, or gives them back refused.
async fn store_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) -> Tried {
    if batch.is_empty() {
        return Tried::Answered;
    }
    let chats: Vec<Id> = batch
        .iter()
        .map(|send| send.message.chat_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let began = Instant::now();
    let granted = match session.begin(&chats).await {
        Ok(granted) => granted,
        Err(e) => {
            // Some locks may be held: closing the session frees them.
            session.discard();
            fail_all(batch, &StoreError::from(e));
            return Tried::Answered;
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
            let committed = Instant::now();
            metrics::histogram!("chat_api_send_transaction_seconds")
                .record(committed.duration_since(began));
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
            metrics::histogram!("chat_api_send_publish_seconds").record(committed.elapsed());
            for (reply, outcome) in replies {
                let _ = reply.send(outcome);
            }
            Tried::Answered
        }
        Err(BatchError::Retry(cause)) => Tried::Refused(batch, cause),
        Err(BatchError::Failed(e)) => {
            session.discard();
            fail_all(batch, &e);
            Tried::Answered
        }
    }
}

/// A batch that broke the idempotency key: rolls its transaction back (the chats' locks stay),
/// finds the sends already stored in one query, announces and answers them as repeats under the
/// locks, and returns the others, to be stored together again. When the lookup fails, every send
/// is returned and the next round settles it.
async fn answer_stored(session: &mut WriterSession, sends: Vec<QueuedSend>) -> Vec<QueuedSend> {
    if session.rollback().await.is_err() {
        return sends;
    }
    let messages: Vec<&QueuedMessage> = sends.iter().map(|send| &send.message).collect();
    let mut stored = match stored_by_keys(session, &messages).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::debug!(error = %e, "looking up a batch's resends failed");
            return sends;
        }
    };
    let mut rest = Vec::with_capacity(sends.len());
    for send in sends {
        let (chat_id, sender_id, client_msg_id) = send.message.idempotency_key();
        let found = stored.remove(&(chat_id, sender_id, client_msg_id.to_string()));
        match found {
            Some(message) => {
                let outcome = SendOutcome::repeat(message);
                (send.announce)(&outcome).await;
                let _ = send.reply.send(Ok(outcome));
            }
            None => rest.push(send),
        }
    }
    rest
}

/// The messages stored under any of `messages`' idempotency keys, by key.
async fn stored_by_keys(
    session: &mut WriterSession,
    messages: &[&QueuedMessage],
) -> Result<HashMap<(Id, Id, String), Message>> {
    let Some(last) = messages.last() else {
        return Ok(HashMap::new());
    };
    // Padded with the last key, so that a few statement shapes serve every batch size.
    let padded = padded_len(messages.len());
    let sql = format!(
        "SELECT {} FROM messages WHERE {}",
        message_columns::<MySqlBackend>("messages"),
        placeholders(
            padded,
            "(chat_id = ? AND sender_id = ? AND client_msg_id = ?)",
            " OR "
        )
    );
    let mut query = sqlx::query_as::<_, MessageRow>(&sql);
    for n in 0..padded {
        let (chat_id, sender_id, client_msg_id) = messages.get(n).unwrap_or(last).idempotency_key();
        query = query
            .bind(key(chat_id))
            .bind(key(sender_id))
            .bind(client_msg_id.as_bytes());
    }
    let rows = query.fetch_all(session.connection().await?).await?;
    Ok(rows
        .into_iter()
        .map(Message::from)
        .map(|message| {
            let key = (
                message.chat_id,
                message.sender_id,
                message.client_msg_id.clone(),
            );
            (key, message)
        })
        .collect())
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
