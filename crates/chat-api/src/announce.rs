//! Announcing stored messages to their chat's members in seq order, including messages whose
//! COMMIT got no answer (the connection broke after it was sent).
//!
//! Such a send answers 503 and publishes nothing, but its row may be stored. It is recorded on
//! the bus (`chat_bus::UnannouncedSend`), and whoever next holds the chat's send lock announces
//! it if it is stored, before anything newer: the next send in the chat, the sender's retry (which
//! otherwise only finds the row by its idempotency key), or a resolver task that retries until
//! the database is back. A message announced late gets its offline recipients' push jobs then,
//! since its own send queued none. Under the send lock the lookup is conclusive: on MySQL the
//! lock is held by the broken send's session until that session ends, after its COMMIT has run
//! or not.

use std::time::Duration;

use chat_bus::UnannouncedSend;
use chat_ops::Backoff;
use chat_proto::{Cursor, Message, ServerEvent};
use chat_store::SendOutcome;

use crate::state::AppState;

/// How the resolver tries: soon after the error, then at least once a second (a recipient that
/// disconnects before the announcement and resumes from a later cursor would miss it, so the
/// wait after the database is back should be short), for five minutes at most.
const RESOLVE_WAIT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
const RESOLVE_FOR: Duration = Duration::from_secs(300);

/// Runs under the chat's send lock with a send's outcome: first what earlier sends left
/// unannounced, then the message itself if this send stored it.
pub(crate) async fn announce(state: &AppState, outcome: &SendOutcome) {
    let chat_id = outcome.message.chat_id;
    let below = outcome.created.then_some(outcome.message.seq);
    announce_unannounced(state, chat_id, below, &outcome.member_ids).await;
    if outcome.created {
        publish_message(state, &outcome.member_ids, outcome.message.clone()).await;
    }
}

/// Records a send whose commit got no answer and starts a resolver for its chat.
pub(crate) async fn record_unknown_commit(state: &AppState, chat_id: u64, send: UnannouncedSend) {
    metrics::counter!("chat_messages_commit_unknown_total").increment(1);
    if let Err(e) = state.bus.record_unannounced(chat_id, &send).await {
        // With Redis down too, only the sender's retry can still tell recipients (as history).
        tracing::error!(error = %e, chat_id, "recording a send with an unknown commit failed");
        return;
    }
    tokio::spawn(resolve(state.clone(), chat_id));
}

/// Announces the chat's recorded sends once the database answers, in case no retry and no
/// other send in the chat comes along to do it.
async fn resolve(state: AppState, chat_id: u64) {
    let give_up = tokio::time::Instant::now() + RESOLVE_FOR;
    let mut waits = RESOLVE_WAIT.delays();
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(waits.next_delay()).await;
        let settled = state
            .store
            .in_send_order(chat_id, || announce_unannounced(&state, chat_id, None, &[]))
            .await;
        match settled {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(error = %e, chat_id, "resolver: the chat's lock is out of reach")
            }
        }
    }
    tracing::warn!(
        chat_id,
        "gave up announcing a send with an unknown commit; the next send in the chat will"
    );
}

/// Publishes the chat's recorded sends that are stored, oldest first, and forgets every send it
/// could look up. With `below` (the seq a send just took), a recorded send found at or above it
/// is that very send, stored by its retry, and is left to the caller. `members` may be empty
/// (they are then read). True when nothing is left to look up.
async fn announce_unannounced(
    state: &AppState,
    chat_id: u64,
    below: Option<u64>,
    members: &[u64],
) -> bool {
    let sends = match state.bus.unannounced(chat_id).await {
        Ok(sends) if sends.is_empty() => return true,
        Ok(sends) => sends,
        Err(e) => {
            tracing::warn!(error = %e, chat_id, "reading the chat's unannounced sends failed");
            return false;
        }
    };
    let mut stored = Vec::new();
    let mut settled = Vec::new();
    let mut all_looked_up = true;
    for send in sends {
        let found = state
            .store
            .message_by_client_id(chat_id, send.sender_id, &send.client_msg_id)
            .await;
        match found {
            Ok(Some(message)) => {
                stored.push(message);
                settled.push(send);
            }
            Ok(None) => settled.push(send),
            Err(e) => {
                all_looked_up = false;
                tracing::warn!(error = %e, chat_id, "looking up an unannounced send failed");
            }
        }
    }
    stored.retain(|message| below.is_none_or(|seq| message.seq < seq));
    stored.sort_by_key(|message| message.seq);
    if !stored.is_empty() {
        let members = match members {
            [] => match state.store.member_ids(chat_id).await {
                Ok(members) => members,
                Err(e) => {
                    tracing::warn!(error = %e, chat_id, "reading the chat's members failed");
                    return false;
                }
            },
            members => members.to_vec(),
        };
        for message in stored {
            metrics::counter!("chat_messages_announced_late_total").increment(1);
            publish_message(state, &members, message.clone()).await;
            // Its send answered 503 and queued no pushes; the offline members hear of it now.
            // (A retry that finds it stored queues none either: it created nothing.)
            state.push.enqueue_for_offline(SendOutcome {
                message,
                created: true,
                member_ids: members.clone(),
            });
        }
    }
    if let Err(e) = state.bus.forget_unannounced(chat_id, &settled).await {
        tracing::warn!(error = %e, chat_id, "forgetting announced sends failed");
        return false;
    }
    all_looked_up
}

/// One `new_message` event to the chat's members (see `crate::fanout`).
async fn publish_message(state: &AppState, members: &[u64], message: Message) {
    metrics::counter!("chat_messages_published_total").increment(1);
    let chat_id = message.chat_id;
    let event = ServerEvent::NewMessage {
        cursor: Cursor::after_event(message.created_at.timestamp_millis()).to_string(),
        message,
    };
    state
        .publish_chat_event(chat_id, members, event, None)
        .await;
}
