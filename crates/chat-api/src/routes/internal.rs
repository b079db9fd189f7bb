//! Endpoints only gateways call, with a service token.

use axum::extract::State;
use axum::http::StatusCode;
use chat_proto::codec::BusBody;
use chat_proto::{PresenceStatus, ServerEvent};
use serde::Deserialize;

use crate::error::ApiResult;
use crate::extract::{JsonBody, ServiceCaller};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct PresenceChange {
    user_id: u64,
    status: PresenceStatus,
}

/// A gateway saw a user's first socket anywhere open, or last socket anywhere close: store
/// `last_seen` and tell the user's contacts and chat peers.
pub async fn presence(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    JsonBody(change): JsonBody<PresenceChange>,
) -> ApiResult<StatusCode> {
    let seen = state.store.mark_seen(change.user_id).await?;
    let audience = seen.audience;
    let event = ServerEvent::Presence {
        user_id: change.user_id,
        status: change.status,
        last_seen: Some(seen.last_seen),
    };
    state.publish(&audience, BusBody::Event(event)).await;
    Ok(StatusCode::NO_CONTENT)
}
