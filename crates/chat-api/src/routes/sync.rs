//! `GET /v1/sync`: what a client missed since a cursor, in the shapes of the live events.
//!
//! A cursor inside the recent-event log's window is answered from the log when it covers it
//! (`crate::recent_log::sync_page`): one indexed read of the user's groups instead of the four
//! joins of a database sync, so that a storm of reconnecting clients does not land on the
//! database. Anything else is answered from the database.

use axum::Json;
use axum::extract::State;
use chat_proto::cursor::{Cursor, OVERLAP_MS};
use chat_proto::{ServerEvent, SyncPage};
use chat_store::SyncEvent;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, QueryParams};
use crate::state::AppState;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 500;

#[derive(Deserialize)]
pub struct SyncQuery {
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
}

pub async fn sync(
    State(state): State<AppState>,
    caller: AuthUser,
    QueryParams(query): QueryParams<SyncQuery>,
) -> ApiResult<Json<SyncPage>> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    let raw = query
        .since
        .ok_or_else(|| ApiError::invalid("since is required (a cursor; c0 for everything)"))?;
    let since = Cursor::parse(&raw, now_ms).map_err(|e| ApiError::invalid(e.to_string()))?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1-{MAX_LIMIT}")));
    }
    let from = chrono::DateTime::from_timestamp_millis(since.from_ms)
        .ok_or_else(|| ApiError::invalid("cursor is out of range"))?;
    if let Some(page) =
        crate::recent_log::sync_page(&state, caller.id, since.from_ms, limit, now_ms).await
    {
        metrics::counter!("chat_sync_total", "source" => "log").increment(1);
        return Ok(Json(page));
    }
    metrics::counter!("chat_sync_total", "source" => "database").increment(1);
    let slice = state.store.sync(caller.id, from, limit).await?;
    let cursor = match slice.more_from {
        Some(at) => Cursor::at(at.timestamp_millis()),
        None => caught_up(since.from_ms, now_ms),
    };
    Ok(Json(SyncPage {
        events: slice.events.into_iter().map(to_event).collect(),
        cursor: cursor.to_string(),
        has_more: slice.more_from.is_some(),
    }))
}

/// The cursor of a sync that returned everything: a little before now, so that a transaction
/// that took its timestamp before now but commits (or is published) after is still found.
pub(crate) fn caught_up(since_ms: i64, now_ms: i64) -> Cursor {
    Cursor::at((now_ms - OVERLAP_MS).max(since_ms))
}

fn to_event(event: SyncEvent) -> ServerEvent {
    let cursor = Cursor::after_event(event.at().timestamp_millis()).to_string();
    match event {
        SyncEvent::Message(message) => ServerEvent::NewMessage { message, cursor },
        SyncEvent::Updated(message) => ServerEvent::MessageUpdated { message, cursor },
        SyncEvent::Delivered {
            chat_id,
            user_id,
            up_to_seq,
            ..
        } => ServerEvent::MessageDelivered {
            chat_id,
            user_id,
            up_to_seq,
            cursor,
        },
        SyncEvent::Read {
            chat_id,
            user_id,
            up_to_seq,
            ..
        } => ServerEvent::MessageRead {
            chat_id,
            user_id,
            up_to_seq,
            cursor,
        },
    }
}
