//! The caller's profile and user search.

use axum::Json;
use axum::extract::State;
use chat_proto::{Me, UserRef};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, QueryParams};
use crate::state::AppState;

const SEARCH_LIMIT: u32 = 20;

pub async fn me(State(state): State<AppState>, caller: AuthUser) -> ApiResult<Json<Me>> {
    Ok(Json(state.store.me(caller.id).await?))
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: Option<String>,
}

#[derive(Serialize)]
pub struct UserList {
    users: Vec<UserRef>,
}

pub async fn search(
    State(state): State<AppState>,
    _caller: AuthUser,
    QueryParams(query): QueryParams<SearchQuery>,
) -> ApiResult<Json<UserList>> {
    let prefix = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_lowercase();
    if prefix.is_empty() || prefix.chars().count() > 32 {
        return Err(ApiError::invalid("q must be 1-32 characters"));
    }
    let users = state.store.search_users(&prefix, SEARCH_LIMIT).await?;
    Ok(Json(UserList { users }))
}
