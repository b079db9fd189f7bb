//! Device push tokens of the caller (ext): register one with `PUT /v1/me/push-token`, remove it
//! with `DELETE /v1/me/push-token`.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, JsonBody};
use crate::state::AppState;

const MAX_TOKEN_CHARS: usize = 512;
const MAX_PLATFORM_CHARS: usize = 16;

#[derive(Deserialize)]
pub struct TokenRequest {
    token: String,
    #[serde(default)]
    platform: Option<String>,
}

fn valid_token(token: &str) -> ApiResult<&str> {
    let token = token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_CHARS || token.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "token must be 1-{MAX_TOKEN_CHARS} bytes without control characters"
        )));
    }
    Ok(token)
}

pub async fn put(
    State(state): State<AppState>,
    caller: AuthUser,
    JsonBody(req): JsonBody<TokenRequest>,
) -> ApiResult<StatusCode> {
    let token = valid_token(&req.token)?;
    let platform = req.platform.as_deref().map(str::trim);
    if platform.is_some_and(|p| p.is_empty() || p.chars().count() > MAX_PLATFORM_CHARS) {
        return Err(ApiError::invalid(format!(
            "platform must be 1-{MAX_PLATFORM_CHARS} characters"
        )));
    }
    state
        .store
        .put_push_token(caller.id, token, platform)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete(
    State(state): State<AppState>,
    caller: AuthUser,
    JsonBody(req): JsonBody<TokenRequest>,
) -> ApiResult<StatusCode> {
    let token = valid_token(&req.token)?;
    state.store.delete_push_token(caller.id, token).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::valid_token;

    #[test]
    fn tokens_are_trimmed_and_bounded() {
        assert_eq!(valid_token("  abc ").ok(), Some("abc"));
        assert!(valid_token("   ").is_err());
        assert!(valid_token(&"a".repeat(513)).is_err());
        assert!(valid_token("a\nb").is_err());
    }
}
