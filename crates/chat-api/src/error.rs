//! The API's error type: every failure becomes a status and `{"error":{"code","message"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chat_proto::{ErrorBody, ErrorCode};
use chat_store::StoreError;

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidInput, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(ErrorBody::new(self.code, self.message))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::not_found("resource"),
            StoreError::Conflict(msg) => Self::new(ErrorCode::Conflict, msg),
            StoreError::Invalid(msg) => Self::invalid(msg),
            StoreError::Forbidden(msg) => Self::new(ErrorCode::Forbidden, msg),
            StoreError::Busy(msg) => Self::unavailable(msg),
            StoreError::Unavailable(e) | StoreError::CommitUnknown(e) => {
                tracing::warn!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable, retry later")
            }
            StoreError::Migration(_) | StoreError::Database(_) => {
                tracing::error!(error = %err, "database error");
                Self::internal()
            }
        }
    }
}

impl From<chat_bus::BusError> for ApiError {
    fn from(err: chat_bus::BusError) -> Self {
        tracing::warn!(error = %err, "redis unavailable");
        Self::unavailable("redis is unavailable, retry later")
    }
}
