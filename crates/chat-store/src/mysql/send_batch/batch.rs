//! Storing what a writer took from its queue: the sends go together in one transaction, and what
//! cannot (a repeated idempotency key, a batch the server refused) goes again alone; then the
//! publishes, in seq order within each chat, and the answers.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chat_proto::Id;
use sqlx::MySql;

use super::session::WriterSession;
use super::statements::{BatchError, RetryCause, write_batch};
use super::{QueuedMessage, QueuedSend};
use crate::error::is_duplicate_of;
use crate::messages::{Announce, SendOutcome, stored_by_client_id};
use crate::mysql::MySqlBackend;
use crate::{Result, StoreError};

/// The unique key a retried send breaks.
const IDEMPOTENCY_KEY: &str = "uq_messages_idem";

/// Stores, announces and answers a batch.
pub(super) async fn run_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) {
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

/// Stores and announces a batch and answers its sends; returns the sends to retry one by one.
async fn store_batch(session: &mut WriterSession, batch: Vec<QueuedSend>) -> Vec<QueuedSend> {
    if batch.is_empty() {
        return batch;
    }
    let chats: Vec<Id> = batch
        .iter()
        .map(|send| send.message.chat_id)
        .collect::<BTreeSet<_>>()
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
