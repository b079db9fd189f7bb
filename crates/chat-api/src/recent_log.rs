//! chat-api's side of the recent-event log (`chat_bus`'s `recent` module): which events go into
//! it and at what time, and what happens when a publish fails.
//!
//! The events a sync returns are logged, scored by the time a sync orders them by
//! (`chat_store::SyncEvent::at`, the ms their cursor is made from). Gateways serve resumes from
//! the log only where it is complete, so an event left out of it must not go unnoticed: a
//! publish that failed may have left its event out of the log (while the database has it), so
//! the channels' logs are marked incomplete up to now, retried until that lands or until the
//! event has aged out of any window a log could still cover (then no covered read can reach back
//! to it anyway).
//!
//! `GET /v1/sync` reads the log too ([`sync_page`]). Unlike a gateway's resume, which holds a
//! live subscription, a sync's answer moves the client's cursor: it is given from the log only
//! while nothing can be published late (`crate::announce`'s late publishes).

use std::time::Duration;

use chat_bus::{RECENT_LOG_SKEW_MS, Topic};
use chat_ops::Backoff;
use chat_proto::{Cursor, ServerEvent, SyncPage};

use crate::state::AppState;

/// How the invalidation after a failed publish is retried.
const RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));

/// A sync of `user`'s events from `from_ms` answered from the log, or `None` (then the database
/// answers): the log must cover every channel of the user from `from_ms` on, and no publish may
/// be late. More than `limit` events end the page at a whole millisecond, as the database's
/// pages do; a page that cannot (one millisecond holds more) is left to the database.
pub(crate) async fn sync_page(
    state: &AppState,
    user: u64,
    from_ms: i64,
    limit: u32,
    now_ms: i64,
) -> Option<SyncPage> {
    if !state.bus.recent_log().enabled() || !state.announcer.log_sync_safe(now_ms) {
        return None;
    }
    let mut groups = match state.store.group_chats_of(&[user]).await {
        Ok(mut groups) => groups.remove(&user).unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e, user, "reading the user's groups failed");
            return None;
        }
    };
    groups.sort_unstable();
    let mut events = state
        .bus
        .replay_recent_events(user, &groups, from_ms, |chat| {
            groups.binary_search(&chat).is_ok()
        })
        .await?;
    let limit = limit as usize;
    let more_from = match events.get(limit).and_then(ServerEvent::sync_time_ms) {
        Some(cut_ms) => {
            events.retain(|event| event.sync_time_ms().is_some_and(|at| at < cut_ms));
            if events.is_empty() {
                return None;
            }
            Some(cut_ms)
        }
        None => None,
    };
    let cursor = match more_from {
        Some(at) => Cursor::at(at),
        None => crate::routes::sync::caught_up(from_ms, now_ms),
    };
    Some(SyncPage {
        events,
        cursor: cursor.to_string(),
        has_more: more_from.is_some(),
    })
}

/// Marks the topics' logs incomplete up to now, off the caller's path, retrying while Redis
/// does not answer for as long as the missing event could be inside a log's window.
pub(crate) fn invalidate_after_failure(state: &AppState, topics: Vec<Topic>) {
    if !state.bus.recent_log().enabled() {
        return;
    }
    let bus = state.bus.clone();
    let give_up = tokio::time::Instant::now()
        + bus.recent_log().window
        + Duration::from_millis(2 * RECENT_LOG_SKEW_MS as u64);
    tokio::spawn(async move {
        let mut waits = RETRY.delays();
        loop {
            match bus.invalidate_recent(&topics).await {
                Ok(()) => return,
                Err(e) if tokio::time::Instant::now() >= give_up => {
                    tracing::warn!(error = %e, "gave up marking recent-event logs incomplete; the event has aged out of them");
                    return;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "marking recent-event logs incomplete failed")
                }
            }
            tokio::time::sleep(waits.next_delay()).await;
        }
    });
}
