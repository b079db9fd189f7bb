//! The caller's contact list, with live presence from Redis.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chat_proto::Contact;
use serde::Serialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, parse_id};
use crate::state::AppState;

#[derive(Serialize)]
pub struct ContactList {
    contacts: Vec<Contact>,
}

pub async fn list(State(state): State<AppState>, caller: AuthUser) -> ApiResult<Json<ContactList>> {
    let rows = state.store.contacts(caller.id).await?;
    let ids: Vec<u64> = rows.iter().map(|(user, _)| user.id).collect();
    let online = state.bus.online(&ids).await?;
    let contacts = rows
        .into_iter()
        .zip(online)
        .map(|((user, last_seen), online)| Contact {
            user,
            online,
            last_seen,
        })
        .collect();
    Ok(Json(ContactList { contacts }))
}

pub async fn add(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    let user_id = parse_id(&user_id)?;
    if user_id == caller.id {
        return Err(ApiError::invalid("you cannot add yourself as a contact"));
    }
    state
        .store
        .add_contact(caller.id, user_id)
        .await
        .map_err(|e| match e {
            chat_store::StoreError::NotFound => ApiError::not_found("user"),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(user_id): Path<String>,
) -> ApiResult<StatusCode> {
    let user_id = parse_id(&user_id)?;
    state.store.remove_contact(caller.id, user_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
