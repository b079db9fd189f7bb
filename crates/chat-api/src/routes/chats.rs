//! Chats: create (private get-or-create, groups), list, read, update, and membership.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chat_proto::{Chat, ChatKind, Member};
use chat_store::{ChatUpdate, NewGroup, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, parse_id};
use crate::state::AppState;

const MAX_GROUP_MEMBERS: usize = 1000;
const MAX_TITLE_CHARS: usize = 128;

#[derive(Deserialize)]
pub struct CreateChat {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    peer_id: Option<u64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    member_ids: Option<Vec<u64>>,
}

pub async fn create(
    State(state): State<AppState>,
    caller: AuthUser,
    JsonBody(req): JsonBody<CreateChat>,
) -> ApiResult<(StatusCode, Json<Chat>)> {
    match req.kind.as_str() {
        "private" => {
            let peer = req
                .peer_id
                .ok_or_else(|| ApiError::invalid("peer_id is required"))?;
            let (chat, created) = state
                .store
                .get_or_create_private(caller.id, peer)
                .await
                .map_err(user_not_found)?;
            let status = if created {
                crate::announce::start_watermark(&state, chat.id).await;
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(chat)))
        }
        "group" => {
            let title = valid_title(req.title.as_deref())?;
            let member_ids = req.member_ids.unwrap_or_default();
            if member_ids.len() >= MAX_GROUP_MEMBERS {
                return Err(ApiError::invalid(format!(
                    "a group has at most {MAX_GROUP_MEMBERS} members"
                )));
            }
            let chat = state
                .store
                .create_group(
                    caller.id,
                    NewGroup {
                        title: &title,
                        member_ids: &member_ids,
                    },
                )
                .await
                .map_err(user_not_found)?;
            crate::announce::start_watermark(&state, chat.id).await;
            state.remember_kind(chat.id, true);
            // No gateway routes the new chat yet: each member's gateway hears of it on the
            // member's channel and subscribes (messages sent meanwhile are replayed to them).
            let notices = chat
                .members
                .iter()
                .map(|member| state.announce_member_added_to_user(chat.id, member.user_id, 0));
            futures_util::future::join_all(notices).await;
            Ok((StatusCode::CREATED, Json(chat)))
        }
        _ => Err(ApiError::invalid("type must be \"private\" or \"group\"")),
    }
}

fn user_not_found(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::not_found("user"),
        other => other.into(),
    }
}

fn valid_title(title: Option<&str>) -> ApiResult<String> {
    let title = title.map(str::trim).unwrap_or_default();
    let chars = title.chars().count();
    if chars == 0 || chars > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(format!(
            "title must be 1-{MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(title.to_string())
}

#[derive(Serialize)]
pub struct ChatList {
    chats: Vec<Chat>,
}

pub async fn list(State(state): State<AppState>, caller: AuthUser) -> ApiResult<Json<ChatList>> {
    Ok(Json(ChatList {
        chats: state.store.chats_of(caller.id).await?,
    }))
}

pub async fn get(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<Chat>> {
    let chat_id = parse_id(&id)?;
    Ok(Json(
        state
            .store
            .chat(caller.id, chat_id)
            .await
            .map_err(chat_not_found)?,
    ))
}

/// Any store `NotFound` on a chat route means the chat (for this caller).
pub fn chat_not_found(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::not_found("chat"),
        other => other.into(),
    }
}

#[derive(Deserialize)]
pub struct UpdateChat {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    pinned: Option<bool>,
    #[serde(default)]
    archived: Option<bool>,
}

pub async fn update(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<UpdateChat>,
) -> ApiResult<Json<Chat>> {
    let chat_id = parse_id(&id)?;
    let title = match req.title.as_deref() {
        Some(raw) => Some(valid_title(Some(raw))?),
        None => None,
    };
    let update = ChatUpdate {
        title,
        pinned: req.pinned,
        archived: req.archived,
    };
    let chat = state
        .store
        .update_chat(caller.id, chat_id, update)
        .await
        .map_err(chat_not_found)?;
    Ok(Json(chat))
}

#[derive(Serialize)]
pub struct MemberList {
    members: Vec<Member>,
}

pub async fn members(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<Json<MemberList>> {
    let chat_id = parse_id(&id)?;
    let members = state
        .store
        .members(caller.id, chat_id)
        .await
        .map_err(chat_not_found)?;
    Ok(Json(MemberList { members }))
}

#[derive(Deserialize)]
pub struct AddMember {
    user_id: u64,
}

pub async fn add_member(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<AddMember>,
) -> ApiResult<StatusCode> {
    let chat_id = parse_id(&id)?;
    // Membership is checked first, so NotFound for a member caller means the added user.
    state
        .store
        .require_member(caller.id, chat_id)
        .await
        .map_err(chat_not_found)?;
    // Under the chat's send lock, so that the notice takes its place among the chat's events:
    // the new member gets every message above `after_seq`, and none below.
    let added = state
        .store
        .in_send_order(chat_id, || async {
            state
                .store
                .add_member(caller.id, chat_id, req.user_id)
                .await?;
            if let Some((ChatKind::Group, after_seq)) =
                state.store.chat_kind_and_seq(chat_id).await?
            {
                state
                    .announce_member_added(chat_id, req.user_id, after_seq)
                    .await;
            }
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(ApiError::from)?;
    added.map_err(user_not_found)?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn remove_member(
    State(state): State<AppState>,
    caller: AuthUser,
    Path((id, user_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let chat_id = parse_id(&id)?;
    let user_id = parse_id(&user_id)?;
    state
        .store
        .require_member(caller.id, chat_id)
        .await
        .map_err(chat_not_found)?;
    // Under the chat's send lock: the gateways drop the member before the chat's next event.
    let removed = state
        .store
        .in_send_order(chat_id, || async {
            state
                .store
                .remove_member(caller.id, chat_id, user_id)
                .await?;
            state.announce_member_removed(chat_id, user_id).await;
            Ok::<_, StoreError>(())
        })
        .await
        .map_err(ApiError::from)?;
    removed.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found("member"),
        other => other.into(),
    })?;
    Ok(StatusCode::NO_CONTENT)
}
