//! Endpoints only gateways call, with a service token.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_proto::codec::BusBody;
use chat_proto::{
    Memberships, MembershipsRequest, PresenceBatch, PresenceChange, ServerEvent, UserGroups,
};
use futures_util::future::try_join_all;

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, ServiceCaller};
use crate::state::AppState;

/// A gateway saw a user's first socket anywhere open, or last socket anywhere close: store
/// `last_seen` and tell the user's contacts and chat peers.
pub async fn presence(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    JsonBody(change): JsonBody<PresenceChange>,
) -> ApiResult<StatusCode> {
    announce(&state, &[change]).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Several such changes in the order one gateway saw them: what queued on one of its notice
/// lanes while the lane's previous request was out.
pub async fn presence_batch(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    JsonBody(batch): JsonBody<PresenceBatch>,
) -> ApiResult<StatusCode> {
    if batch.changes.len() > PresenceBatch::MAX_CHANGES {
        return Err(ApiError::invalid(format!(
            "a presence batch holds at most {} changes, this one {}",
            PresenceBatch::MAX_CHANGES,
            batch.changes.len()
        )));
    }
    announce(&state, &batch.changes).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores every change's `last_seen` (together: the store coalesces them), then publishes the
/// events in the order given, so a user's online and offline reach the audience in that order.
/// Nothing is published unless every change was stored; the gateway sends the batch again.
async fn announce(state: &AppState, changes: &[PresenceChange]) -> ApiResult<()> {
    let seen = try_join_all(changes.iter().map(|c| state.store.mark_seen(c.user_id))).await?;
    for (change, seen) in changes.iter().zip(seen) {
        let event = ServerEvent::Presence {
            user_id: change.user_id,
            status: change.status,
            last_seen: Some(seen.last_seen),
        };
        state.publish(&seen.audience, BusBody::Event(event)).await;
    }
    Ok(())
}

/// The group chats of the users whose first socket opened on the calling gateway, which
/// routes those groups' events to them from then on (see `crate::fanout`).
pub async fn memberships(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    JsonBody(request): JsonBody<MembershipsRequest>,
) -> ApiResult<Json<Memberships>> {
    if request.users.len() > MembershipsRequest::MAX_USERS {
        return Err(ApiError::invalid(format!(
            "a memberships request names at most {} users, this one {}",
            MembershipsRequest::MAX_USERS,
            request.users.len()
        )));
    }
    let mut groups = state.store.group_chats_of(&request.users).await?;
    let users = request
        .users
        .iter()
        .map(|&user_id| UserGroups {
            user_id,
            chat_ids: groups.remove(&user_id).unwrap_or_default(),
        })
        .collect();
    Ok(Json(Memberships { users }))
}
