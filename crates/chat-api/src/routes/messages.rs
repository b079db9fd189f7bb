//! Messages: send (idempotent by client_msg_id), history, read watermark, typing.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use chat_proto::{
    Attachment, Cursor, ErrorCode, Message, MessageBody, MessageKind, SendMessageRequest,
    ServerEvent,
};
use chat_store::{NewMessage, StoreError};
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, QueryParams, SignedUser, parse_id};
use crate::routes::RequestStarted;
use crate::routes::chats::chat_not_found;
use crate::state::AppState;

const MAX_TEXT_CHARS: usize = 5000;
const MAX_CLIENT_MSG_ID_CHARS: usize = 64;
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 100;

pub async fn send(
    State(state): State<AppState>,
    started: Option<Extension<RequestStarted>>,
    caller: SignedUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<SendMessageRequest>,
) -> ApiResult<(StatusCode, Json<MessageBody>)> {
    let chat_id = parse_id(&id)?;
    let kind = req.kind.unwrap_or(MessageKind::Text);
    let client_msg_id_len = req.client_msg_id.chars().count();
    if client_msg_id_len == 0 || client_msg_id_len > MAX_CLIENT_MSG_ID_CHARS {
        return Err(ApiError::invalid("client_msg_id must be 1-64 characters"));
    }
    let (text, attachment) = match kind {
        MessageKind::Text => {
            if req.attachment_id.is_some() {
                return Err(ApiError::invalid(
                    "attachment_id belongs to image and file messages",
                ));
            }
            (Some(valid_text(req.text.as_deref())?), None)
        }
        MessageKind::Image | MessageKind::File => {
            let attachment = valid_attachment(&state, caller.id, kind, req.attachment_id).await?;
            (valid_caption(req.text.as_deref())?, Some(attachment))
        }
    };
    // The token's revocation check, the cluster-wide per-user bucket and the send's pending
    // mark go out together, one round trip on the shared Redis connection: each on its own
    // was a hand-off between processes on a send's path. Redis trouble lets the message
    // through the limit (it protects the service, it must not take it down), not past the
    // revocation check. The pending mark lets another replica announce the message should
    // this one die between its commit and its publish (`crate::announce`).
    let (revoked, verdict, ()) = tokio::join!(
        state.bus.is_revoked(&caller.token.jti),
        state
            .bus
            .take_message_token(caller.id, state.limits.messages),
        crate::announce::mark_pending(&state, chat_id)
    );
    if let Err(e) = revoked
        .map_err(ApiError::from)
        .and_then(|r| caller.check(r))
    {
        crate::announce::clear_pending(&state, chat_id);
        return Err(e);
    }
    match verdict {
        Ok(chat_bus::Verdict::Allowed) => {}
        Ok(chat_bus::Verdict::Limited { retry_after }) => {
            crate::announce::clear_pending(&state, chat_id);
            metrics::counter!("chat_api_rate_limited_total", "limit" => "messages").increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many messages; retry in {} ms",
                    retry_after.as_millis().max(1)
                ),
            ));
        }
        Err(e) => tracing::warn!(error = %e, "message rate check failed; allowing"),
    }
    let new = OwnedMessage {
        chat_id,
        sender_id: caller.id,
        kind,
        text: text.map(str::to_string),
        attachment,
        reply_to_id: req.reply_to_id,
        client_msg_id: req.client_msg_id,
    };
    if let Some(Extension(RequestStarted(at))) = started {
        metrics::histogram!("chat_api_send_checked_seconds").record(at.elapsed());
    }
    // A task of its own: a client that hangs up must not cancel a send between its commit
    // and its publish (the chat stays locked for that span).
    let outcome = tokio::spawn(crate::announce::watched(
        state.clone(),
        store_and_publish(state, new),
    ))
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(chat_not_found)?;
    if !outcome.created {
        return Ok((
            StatusCode::OK,
            Json(MessageBody {
                message: outcome.message,
            }),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(MessageBody {
            message: outcome.message,
        }),
    ))
}

/// A validated message owned by the task that stores it.
struct OwnedMessage {
    chat_id: u64,
    sender_id: u64,
    kind: MessageKind,
    text: Option<String>,
    attachment: Option<Attachment>,
    reply_to_id: Option<u64>,
    client_msg_id: String,
}

/// Stores the message and, still under the chat's lock, publishes it to every member, so a
/// chat's events leave in seq order (see `crate::announce`).
async fn store_and_publish(
    state: AppState,
    new: OwnedMessage,
) -> Result<chat_store::SendOutcome, chat_store::StoreError> {
    let message = NewMessage {
        chat_id: new.chat_id,
        sender_id: new.sender_id,
        kind: new.kind,
        text: new.text.as_deref(),
        attachment: new.attachment.as_ref(),
        reply_to_id: new.reply_to_id,
        client_msg_id: &new.client_msg_id,
    };
    let announcer = state.clone();
    let outcome = state
        .store
        .send_message(message, |outcome| {
            let outcome = outcome.clone();
            async move { crate::announce::announce(&announcer, &outcome).await }
        })
        .await;
    if let Err(StoreError::CommitUnknown(_)) = &outcome {
        let send = crate::announce::KnownSend {
            sender_id: new.sender_id,
            client_msg_id: new.client_msg_id.clone(),
        };
        crate::announce::record_unknown_commit(&state, new.chat_id, send);
    } else {
        crate::announce::clear_pending(&state, new.chat_id);
    }
    // Outside the chat's lock and off the answer's path: push jobs need no order among senders,
    // and the sender should not wait for the presence lookup.
    if let Ok(outcome) = &outcome
        && outcome.created
    {
        state.push.enqueue_for_offline(outcome.clone());
    }
    outcome
}

/// The attachment of an image or file message: one the sender uploaded; an image message needs
/// an image.
async fn valid_attachment(
    state: &AppState,
    sender: u64,
    kind: MessageKind,
    attachment_id: Option<u64>,
) -> ApiResult<Attachment> {
    let id = attachment_id
        .ok_or_else(|| ApiError::invalid("image and file messages need an attachment_id"))?;
    let record = state
        .store
        .own_attachment(sender, id)
        .await?
        .ok_or_else(|| ApiError::invalid("attachment_id must name an attachment you uploaded"))?;
    if kind == MessageKind::Image && !record.content_type.starts_with("image/") {
        return Err(ApiError::invalid(format!(
            "an image message needs an image attachment, not {}",
            record.content_type
        )));
    }
    Ok(record.public())
}

/// The optional caption of an image or file message: absent or blank → none; otherwise the
/// text rules.
fn valid_caption(text: Option<&str>) -> ApiResult<Option<&str>> {
    match text {
        Some(text) if !text.trim().is_empty() => valid_text(Some(text)).map(Some),
        _ => Ok(None),
    }
}

/// 1–5000 characters after trimming; returns the trimmed text.
pub(crate) fn valid_text(text: Option<&str>) -> ApiResult<&str> {
    let text = text.map(str::trim).unwrap_or_default();
    let chars = text.chars().count();
    if chars == 0 || chars > MAX_TEXT_CHARS {
        return Err(ApiError::invalid(format!(
            "text must be 1-{MAX_TEXT_CHARS} characters after trimming"
        )));
    }
    Ok(text)
}

#[derive(Deserialize)]
pub struct PageQuery {
    #[serde(default)]
    before_seq: Option<u64>,
    #[serde(default)]
    after_seq: Option<u64>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Serialize)]
pub struct MessagePage {
    messages: Vec<Message>,
    has_more: bool,
}

pub async fn list(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    QueryParams(query): QueryParams<PageQuery>,
) -> ApiResult<Json<MessagePage>> {
    let chat_id = parse_id(&id)?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(format!("limit must be 1-{MAX_PAGE}")));
    }
    let page = state
        .store
        .messages(caller.id, chat_id, query.before_seq, query.after_seq, limit)
        .await
        .map_err(chat_not_found)?;
    Ok(Json(MessagePage {
        messages: page.messages,
        has_more: page.has_more,
    }))
}

#[derive(Deserialize)]
pub struct ReadRequest {
    up_to_seq: u64,
}

pub async fn read(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<ReadRequest>,
) -> ApiResult<StatusCode> {
    let chat_id = parse_id(&id)?;
    let work = state.clone();
    crate::announce::watched(state, async move {
        let outcome = work
            .store
            .mark_read(caller.id, chat_id, req.up_to_seq)
            .await
            .map_err(chat_not_found)?;
        if let Some(up_to_seq) = outcome.moved_to {
            let event = ServerEvent::MessageRead {
                chat_id,
                user_id: caller.id,
                up_to_seq,
                cursor: Cursor::after_event(outcome.read_at.timestamp_millis()).to_string(),
            };
            work.publish_chat_event(chat_id, &outcome.member_ids, event, None)
                .await;
        }
        Ok::<_, ApiError>(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Relays a typing notice to the other members (the gateway's `typing` frame lands here).
pub async fn typing(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let chat_id = parse_id(&id)?;
    let members = state.store.member_ids(chat_id).await?;
    if !members.contains(&caller.id) {
        return Err(ApiError::not_found("chat"));
    }
    let event = ServerEvent::Typing {
        chat_id,
        user_id: caller.id,
    };
    state
        .publish_chat_event(chat_id, &members, event, Some(caller.id))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::valid_text;

    #[test]
    fn text_limits_count_characters_after_trimming() {
        assert!(valid_text(None).is_err());
        assert!(valid_text(Some("   ")).is_err());
        assert_eq!(valid_text(Some("  hi  ")).ok(), Some("hi"));
        assert!(valid_text(Some(&"é".repeat(5000))).is_ok());
        assert!(valid_text(Some(&"é".repeat(5001))).is_err());
    }
}
