//! `GET /v1/sync`: what a client missed since a cursor, in the shapes of the live events.

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
    let slice = state.store.sync(caller.id, from, limit).await?;
    let cursor = match slice.more_from {
        Some(at) => Cursor::at(at.timestamp_millis()),
        // Caught up: the next sync starts a little before now, so a transaction that took its
        // timestamp before now but commits after is still found.
        None => Cursor::at((now_ms - OVERLAP_MS).max(since.from_ms)),
    };
    Ok(Json(SyncPage {
        events: slice.events.into_iter().map(to_event).collect(),
        cursor: cursor.to_string(),
        has_more: slice.more_from.is_some(),
    }))
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
