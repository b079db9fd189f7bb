//! Delivered receipts, edits and deletions (client contract 1.1): `POST /v1/chats/{id}/delivered`,
//! `PATCH`/`DELETE /v1/chats/{id}/messages/{message_id}`, and the gateways' coalesced
//! `POST /internal/v1/delivered/batch`.
//!
//! Each change is stored, then published to every member, in a task of its own: a client that
//! hangs up must not cancel the publish between the commit and the event (sync would still have
//! it, but live sockets would not). A change whose write got no answer is announced once the
//! database shows it (`crate::announce::changes`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chat_bus::PendingChange;
use chat_proto::{
    Cursor, DeliveredBatch, DeliveredResult, DeliveredResults, EditMessageRequest, ErrorBody,
    MessageBody, ServerEvent, WatermarkRequest,
};
use chat_store::{ReadOutcome, StoreError, UpdateOutcome};

use crate::announce::changes::{self, ChangeMark, after_failed_change};
use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody, ServiceCaller, parse_id};
use crate::routes::messages::valid_text;
use crate::state::AppState;

pub async fn delivered(
    State(state): State<AppState>,
    caller: AuthUser,
    Path(id): Path<String>,
    JsonBody(req): JsonBody<WatermarkRequest>,
) -> ApiResult<StatusCode> {
    let chat_id = parse_id(&id)?;
    let batch = DeliveredBatch {
        moves: vec![chat_proto::DeliveredMove {
            user_id: caller.id,
            chat_id,
            up_to_seq: req.up_to_seq,
        }],
    };
    let mut answers = spawned(state.clone(), store_and_publish_delivered(state, batch)).await??;
    match answers.pop() {
        Some(Ok(_)) => Ok(StatusCode::NO_CONTENT),
        Some(Err(StoreError::NotFound)) | None => Err(ApiError::not_found("chat")),
        Some(Err(e)) => Err(e.into()),
    }
}

/// What the gateways' delivered lanes send: the moves their sockets' `delivered` frames asked
/// for, at most one per user and chat. Answered move by move.
pub async fn delivered_batch(
    State(state): State<AppState>,
    _caller: ServiceCaller,
    JsonBody(batch): JsonBody<DeliveredBatch>,
) -> ApiResult<Json<DeliveredResults>> {
    if batch.moves.len() > DeliveredBatch::MAX_MOVES {
        return Err(ApiError::invalid(format!(
            "a delivered batch holds at most {} moves, this one {}",
            DeliveredBatch::MAX_MOVES,
            batch.moves.len()
        )));
    }
    let answers = spawned(state.clone(), store_and_publish_delivered(state, batch)).await??;
    let results = answers
        .into_iter()
        .map(|answer| DeliveredResult {
            error: answer.err().map(|e| {
                let error = match e {
                    StoreError::NotFound => ApiError::not_found("chat"),
                    other => other.into(),
                };
                ErrorBody::new(error.code, error.message).error
            }),
        })
        .collect();
    Ok(Json(DeliveredResults { results }))
}

/// Stores the moves, then publishes `message_delivered` for each watermark that moved.
async fn store_and_publish_delivered(
    state: AppState,
    batch: DeliveredBatch,
) -> ApiResult<Vec<Result<ReadOutcome, StoreError>>> {
    metrics::counter!("chat_api_delivered_batches_total").increment(1);
    metrics::counter!("chat_api_delivered_moves_total").increment(batch.moves.len() as u64);
    let answers = state.store.mark_delivered_batch(&batch.moves).await?;
    for (one, answer) in batch.moves.iter().zip(&answers) {
        if let Ok(ReadOutcome {
            moved_to: Some(up_to_seq),
            read_at,
            member_ids,
        }) = answer
        {
            let event = ServerEvent::MessageDelivered {
                chat_id: one.chat_id,
                user_id: one.user_id,
                up_to_seq: *up_to_seq,
                cursor: Cursor::after_event(read_at.timestamp_millis()).to_string(),
            };
            state
                .publish_chat_event(one.chat_id, member_ids, event, None)
                .await;
        }
    }
    Ok(answers)
}

pub async fn edit(
    State(state): State<AppState>,
    caller: AuthUser,
    Path((id, message_id)): Path<(String, String)>,
    JsonBody(req): JsonBody<EditMessageRequest>,
) -> ApiResult<Json<MessageBody>> {
    let change = PendingChange {
        chat_id: parse_id(&id)?,
        message_id: parse_id(&message_id)?,
        edit: Some(valid_text(Some(&req.text))?.to_string()),
    };
    let outcome = spawned(state.clone(), store_and_announce(state, caller.id, change)).await??;
    Ok(Json(MessageBody {
        message: outcome.message,
    }))
}

pub async fn delete(
    State(state): State<AppState>,
    caller: AuthUser,
    Path((id, message_id)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let change = PendingChange {
        chat_id: parse_id(&id)?,
        message_id: parse_id(&message_id)?,
        edit: None,
    };
    spawned(state.clone(), store_and_announce(state, caller.id, change)).await??;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores the caller's edit or deletion and publishes `message_updated` when something changed,
/// the change marked pending from before its write until after its publish
/// (`crate::announce::changes`).
async fn store_and_announce(
    state: AppState,
    me: u64,
    change: PendingChange,
) -> ApiResult<UpdateOutcome> {
    let mark = ChangeMark::register(&state, &change).await;
    let (chat_id, message_id) = (change.chat_id, change.message_id);
    let store = &state.store;
    let stored = match &change.edit {
        Some(text) => store.edit_message(me, chat_id, message_id, text).await,
        None => store.delete_message(me, chat_id, message_id).await,
    };
    let outcome = match stored {
        Ok(outcome) => outcome,
        Err(e) => {
            after_failed_change(&state, change, mark, &e);
            return Err(message_not_found(e));
        }
    };
    if outcome.changed {
        changes::publish_update(&state, &outcome.message, &outcome.member_ids).await;
    }
    drop(mark);
    Ok(outcome)
}

/// Runs the work in a task the client cannot cancel by hanging up, its publish watched for
/// lateness (`crate::announce::watched`).
async fn spawned<T: Send + 'static>(
    state: AppState,
    work: impl std::future::Future<Output = T> + Send + 'static,
) -> ApiResult<T> {
    tokio::spawn(crate::announce::watched(state, work))
        .await
        .map_err(|_| ApiError::internal())
}

fn message_not_found(err: StoreError) -> ApiError {
    match err {
        StoreError::NotFound => ApiError::not_found("message"),
        other => other.into(),
    }
}
