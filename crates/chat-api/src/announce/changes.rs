//! Announcing edits and deletions: `message_updated` to every member, and the same for a change
//! whose database write got no answer.
//!
//! An edit or deletion is one guarded `UPDATE`. When its connection breaks after the statement
//! was sent, the row may have changed with nobody told: the client sees 503, and its retry of a
//! deletion finds a tombstone, which is "done already" with nothing to announce. The recent-event
//! log, which only holds what was published, would then never carry that deletion, and members
//! resuming from it would keep the message. So a change that failed that way registers a late
//! publish (syncs stay on the database, which has the change, see `crate::announce`) and a
//! resolver reads the message once the database answers: if the change is there, it is
//! announced. Announcing it twice (the write did go through and a retry changed it again) is
//! harmless: clients apply `message_updated` by replacing the message they hold, and the resume
//! seam drops a repeat of the same message and time.

use chat_proto::{Cursor, Message, ServerEvent};
use chat_store::StoreError;

use super::{LateEntry, RESOLVE_FOR, RESOLVE_WAIT};
use crate::state::AppState;

/// The change a failed write was making, to recognise it in the stored message.
#[derive(Debug, Clone)]
pub(crate) enum ExpectedChange {
    Edit(String),
    Delete,
}

impl ExpectedChange {
    /// Whether `message` shows this change as its latest one.
    fn shown_by(&self, message: &Message) -> bool {
        match self {
            Self::Delete => message.deleted_at.is_some(),
            Self::Edit(text) => {
                message.deleted_at.is_none()
                    && message.edited_at.is_some()
                    && message.text.as_deref() == Some(text.as_str())
            }
        }
    }
}

/// `message_updated` for `message` to `member_ids`, at the time of its latest change (nothing
/// when it never changed).
pub(crate) async fn publish_update(state: &AppState, message: &Message, member_ids: &[u64]) {
    let Some(at) = message.updated_at() else {
        return;
    };
    metrics::counter!("chat_messages_updated_total").increment(1);
    let event = ServerEvent::MessageUpdated {
        message: message.clone(),
        cursor: Cursor::after_event(at.timestamp_millis()).to_string(),
    };
    state
        .publish_chat_event(message.chat_id, member_ids, event, None)
        .await;
}

/// After an edit or deletion failed with `err`: when the database may have applied it, keeps a
/// late publish registered and announces the change once the database shows it.
pub(crate) fn after_failed_change(
    state: &AppState,
    chat_id: u64,
    message_id: u64,
    expected: ExpectedChange,
    err: &StoreError,
) {
    if !matches!(
        err,
        StoreError::Unavailable(_) | StoreError::CommitUnknown(_) | StoreError::Database(_)
    ) {
        return;
    }
    metrics::counter!("chat_message_changes_unknown_total").increment(1);
    let late = LateEntry::register(state);
    let state = state.clone();
    tokio::spawn(async move {
        resolve_change(&state, chat_id, message_id, &expected).await;
        drop(late);
    });
}

/// Reads the message until the database answers, then announces it if it shows the change.
async fn resolve_change(
    state: &AppState,
    chat_id: u64,
    message_id: u64,
    expected: &ExpectedChange,
) {
    let give_up = tokio::time::Instant::now() + RESOLVE_FOR;
    let mut waits = RESOLVE_WAIT.delays();
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(waits.next_delay()).await;
        let message = match state.store.message_in_chat(chat_id, message_id).await {
            Ok(Some(message)) => message,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, message_id, "resolver: the message is out of reach");
                continue;
            }
        };
        if !expected.shown_by(&message) {
            return;
        }
        match state.store.member_ids(chat_id).await {
            Ok(members) => {
                metrics::counter!("chat_message_changes_announced_late_total").increment(1);
                publish_update(state, &message, &members).await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, chat_id, "resolver: the chat's members are out of reach")
            }
        }
    }
    tracing::warn!(
        chat_id,
        message_id,
        "gave up announcing an edit or deletion whose write got no answer"
    );
}

#[cfg(test)]
mod tests {
    use chat_proto::MessageKind;
    use chat_proto::time::now_millis;

    use super::*;

    fn message(text: Option<&str>, edited: bool, deleted: bool) -> Message {
        let now = now_millis();
        Message {
            id: 1,
            chat_id: 2,
            seq: 3,
            sender_id: 4,
            kind: MessageKind::Text,
            text: text.map(str::to_string),
            attachment: None,
            reply_to_id: None,
            client_msg_id: "m".into(),
            created_at: now,
            edited_at: edited.then_some(now),
            deleted_at: deleted.then_some(now),
        }
    }

    #[test]
    fn a_deletion_is_shown_by_a_tombstone_only() {
        assert!(ExpectedChange::Delete.shown_by(&message(None, false, true)));
        assert!(!ExpectedChange::Delete.shown_by(&message(Some("hi"), true, false)));
    }

    #[test]
    fn an_edit_is_shown_by_its_text_on_an_edited_live_message() {
        let edit = ExpectedChange::Edit("new".into());
        assert!(edit.shown_by(&message(Some("new"), true, false)));
        assert!(!edit.shown_by(&message(Some("old"), true, false)));
        assert!(
            !edit.shown_by(&message(Some("new"), false, false)),
            "sent with that text, never edited"
        );
        assert!(!edit.shown_by(&message(None, true, true)));
    }
}
