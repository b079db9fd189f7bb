//! Announcing edits and deletions: `message_updated` to every member, and the same for a change
//! whose database write got no answer.
//!
//! An edit or deletion is one guarded `UPDATE`, marked pending on the bus (`Bus::mark_change`,
//! with what it changes) from before the write until after its publish. When its connection
//! breaks after the statement was sent, the row may have changed with nobody told: the client
//! sees 503, and its retry of a deletion finds a tombstone, which is "done already" with nothing
//! to announce. The recent-event log, which only holds what was published, would then never
//! carry that deletion, and members resuming from it would keep the message. So a change that
//! failed that way registers a late publish (syncs stay on the database, which has the change,
//! see `crate::announce`) and a resolver reads the message once the database answers: if the
//! change is there, it is announced. A replica that dies between the write and the publish
//! leaves its mark, and the replica that takes it over (`crate::announce::sweep`) does the same
//! once. Announcing it twice (the write did go through and a retry changed it again) is
//! harmless: clients apply `message_updated` by replacing the message they hold, and the resume
//! seam drops a repeat of the same message and time. Announcing an older state after a newer
//! one is not, so a late announcement reads the message again after publishing it.

use std::sync::atomic::Ordering;

use chat_bus::PendingChange;
use chat_proto::{Cursor, Message, ServerEvent};
use chat_store::StoreError;

use super::{LateEntry, until_settled};
use crate::state::AppState;

/// Whether `message` shows `change` as its latest change.
fn shows(message: &Message, change: &PendingChange) -> bool {
    match &change.edit {
        None => message.deleted_at.is_some(),
        Some(text) => {
            message.deleted_at.is_none()
                && message.edited_at.is_some()
                && message.text.as_deref() == Some(text.as_str())
        }
    }
}

/// A change's pending mark on the bus, cleared when dropped (off the caller's path). A mark that
/// could not be written (Redis is out of reach, and with it the publish) is logged and left out.
pub(crate) struct ChangeMark {
    state: AppState,
    id: Option<u64>,
}

impl ChangeMark {
    pub(crate) async fn register(state: &AppState, change: &PendingChange) -> Self {
        let announcer = &state.announcer;
        let id = announcer.change_ids.fetch_add(1, Ordering::Relaxed);
        let marked = state.bus.mark_change(&announcer.replica, id, change).await;
        if let Err(e) = &marked {
            tracing::warn!(error = %e, "marking an edit or deletion pending failed");
        }
        Self {
            state: state.clone(),
            id: marked.is_ok().then_some(id),
        }
    }
}

impl Drop for ChangeMark {
    fn drop(&mut self) {
        let Some(id) = self.id else { return };
        let state = self.state.clone();
        tokio::spawn(async move {
            if let Err(e) = state.bus.clear_change(&state.announcer.replica, id).await {
                tracing::debug!(error = %e, "clearing a pending change failed");
            }
        });
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
/// late publish registered and the change marked, and announces the change once the database
/// shows it.
pub(crate) fn after_failed_change(
    state: &AppState,
    change: PendingChange,
    mark: ChangeMark,
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
        resolve_change(&state, &change).await;
        drop((late, mark));
    });
}

/// Settles the change until the database answers (or `RESOLVE_FOR` passes).
async fn resolve_change(state: &AppState, change: &PendingChange) {
    if !until_settled(|| settle(state, change)).await {
        tracing::warn!(
            chat_id = change.chat_id,
            message_id = change.message_id,
            "gave up announcing an edit or deletion whose write got no answer"
        );
    }
}

/// Reads the message and announces it if it shows the change. True once the database answered.
pub(super) async fn settle(state: &AppState, change: &PendingChange) -> bool {
    let (chat_id, message_id) = (change.chat_id, change.message_id);
    let message = match state.store.message_in_chat(chat_id, message_id).await {
        Ok(Some(message)) => message,
        Ok(None) => return true,
        Err(e) => {
            tracing::debug!(error = %e, message_id, "the changed message is out of reach");
            return false;
        }
    };
    if !shows(&message, change) {
        return true;
    }
    match state.store.member_ids(chat_id).await {
        Ok(members) => {
            metrics::counter!("chat_message_changes_announced_late_total").increment(1);
            publish_update(state, &message, &members).await;
            let members = &members[..];
            let read = move || async move {
                match state.store.message_in_chat(chat_id, message_id).await {
                    Ok(now) => now,
                    Err(e) => {
                        tracing::debug!(error = %e, message_id, "re-reading the changed message failed");
                        None
                    }
                }
            };
            let publish =
                move |now: Message| async move { publish_update(state, &now, members).await };
            republish_until_still(message, read, publish).await;
            true
        }
        Err(e) => {
            tracing::debug!(error = %e, chat_id, "the changed message's members are out of reach");
            false
        }
    }
}

/// How many times a late announcement reads the message again after publishing it.
const FOLLOW_UPS: usize = 3;

/// After `published` was announced late: another change committed between its read and its
/// publish was announced by its own writer, maybe first, and members replace the message they
/// hold with each `message_updated`, so they would be left with the older state. Reads the
/// message again and announces what it now is, until a read shows what was last published. A
/// read that fails ends it: the database answered the read before the publish, so that leaves
/// the race open only if it breaks again within the publish.
async fn republish_until_still<R, P>(
    mut published: Message,
    mut read: impl FnMut() -> R,
    mut publish: impl FnMut(Message) -> P,
) where
    R: Future<Output = Option<Message>>,
    P: Future<Output = ()>,
{
    for _ in 0..FOLLOW_UPS {
        match read().await {
            Some(now) if now != published => {
                publish(now.clone()).await;
                published = now;
            }
            _ => return,
        }
    }
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

    fn change(edit: Option<&str>) -> PendingChange {
        PendingChange {
            chat_id: 2,
            message_id: 1,
            edit: edit.map(str::to_string),
        }
    }

    #[test]
    fn a_deletion_is_shown_by_a_tombstone_only() {
        assert!(shows(&message(None, false, true), &change(None)));
        assert!(!shows(&message(Some("hi"), true, false), &change(None)));
    }

    #[test]
    fn an_edit_is_shown_by_its_text_on_an_edited_live_message() {
        let edit = change(Some("new"));
        assert!(shows(&message(Some("new"), true, false), &edit));
        assert!(!shows(&message(Some("old"), true, false), &edit));
        assert!(
            !shows(&message(Some("new"), false, false), &edit),
            "sent with that text, never edited"
        );
        assert!(!shows(&message(None, true, true), &edit));
    }

    /// What `republish_until_still` publishes when its reads return `reads` in turn.
    fn republished(first: Message, reads: Vec<Option<Message>>) -> Vec<Message> {
        let reads = std::cell::RefCell::new(std::collections::VecDeque::from(reads));
        let published = std::cell::RefCell::new(Vec::new());
        let read = || std::future::ready(reads.borrow_mut().pop_front().flatten());
        let publish = |m: Message| {
            published.borrow_mut().push(m);
            std::future::ready(())
        };
        block_on(republish_until_still(first, read, publish));
        published.into_inner()
    }

    fn block_on(fut: impl std::future::Future<Output = ()>) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime")
            .block_on(fut);
    }

    fn edited(text: &str) -> Message {
        message(Some(text), true, false)
    }

    #[test]
    fn a_late_announcement_that_still_holds_is_not_repeated() {
        let a = edited("a");
        assert!(republished(a.clone(), vec![Some(a)]).is_empty());
    }

    #[test]
    fn a_change_that_overtook_a_late_announcement_is_announced_after_it() {
        let (b, deleted) = (edited("b"), message(None, true, true));
        assert_eq!(
            republished(
                edited("a"),
                vec![
                    Some(b.clone()),
                    Some(deleted.clone()),
                    Some(deleted.clone())
                ]
            ),
            vec![b, deleted],
            "members are left with the message as it is now"
        );
    }

    #[test]
    fn a_read_that_fails_ends_the_follow_ups() {
        assert!(republished(edited("a"), vec![None, Some(edited("b"))]).is_empty());
    }

    #[test]
    fn the_follow_ups_are_bounded() {
        let reads = (0..10).map(|i| Some(edited(&i.to_string()))).collect();
        assert_eq!(republished(edited("a"), reads).len(), FOLLOW_UPS);
    }
}
