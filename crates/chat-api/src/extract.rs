//! Request extractors that turn every rejection into the contract's JSON error: a lenient JSON
//! body (no Content-Type needed), query strings, numeric path ids, and the authenticated user.

use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use bytes::Bytes;
use chat_auth::{TokenError, UserToken, bearer_token};
use chat_proto::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;
use crate::state::AppState;

/// A JSON request body.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        let max_depth = state.limits.max_json_depth;
        if chat_proto::json_depth_exceeds(&bytes, max_depth) {
            return Err(ApiError::invalid(format!(
                "JSON body is nested deeper than {max_depth} levels"
            )));
        }
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }
}

fn body_error(rejection: BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::TooLarge,
            "request body is too large (limit 1 MiB)",
        )
    } else {
        ApiError::invalid(rejection.body_text())
    }
}

/// The client's address: with a trusted proxy in front, the last `X-Forwarded-For` entry (the
/// address the proxy saw; earlier entries are whatever the client sent), else the TCP peer.
pub struct ClientIp(pub String);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.limits.trust_forwarded_for
            && let Some(first) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        {
            return Ok(ClientIp(first.to_string()));
        }
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientIp(peer))
    }
}

/// Query-string parameters.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| QueryParams(v))
            .map_err(|e| ApiError::invalid(e.body_text()))
    }
}

/// Parses an id taken from the path; a non-numeric id names nothing, hence 404.
pub fn parse_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found("resource"))
}

/// The caller, authenticated by a bearer token that is valid and not revoked.
pub struct AuthUser {
    pub id: u64,
    pub token: UserToken,
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let SignedUser { id, token } = SignedUser::from_request_parts(parts, state).await?;
        if state.bus.is_revoked(&token.jti).await? {
            return Err(revoked_token());
        }
        Ok(Self { id, token })
    }
}

/// The caller, by a bearer token whose signature and lifetime are valid, not yet checked against
/// the revocation list: for a handler that checks it in a Redis round trip it makes anyway
/// (a send, with its rate limit), one round trip fewer on its path than [`AuthUser`].
pub struct SignedUser {
    pub id: u64,
    pub token: UserToken,
}

impl SignedUser {
    /// A 401 for a token the revocation list holds (`revoked`: its answer), else `Ok`.
    pub fn check(&self, revoked: bool) -> Result<(), ApiError> {
        if revoked {
            Err(revoked_token())
        } else {
            Ok(())
        }
    }
}

fn revoked_token() -> ApiError {
    ApiError::unauthorized("token has been revoked")
}

impl FromRequestParts<AppState> for SignedUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let raw =
            bearer_token(header).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let token = state.keys.verify_user_token(raw).map_err(|e| match e {
            TokenError::Expired => ApiError::unauthorized("token has expired"),
            TokenError::NotYetValid => ApiError::unauthorized("token is not valid yet"),
            TokenError::Invalid | TokenError::WrongScope | TokenError::CannotSign => {
                ApiError::unauthorized("invalid token")
            }
        })?;
        Ok(Self {
            id: token.user_id,
            token,
        })
    }
}

/// A gateway calling an internal endpoint: with the internal key (`x-chat-internal-key`, when
/// `CHAT_INTERNAL_KEY` is set) or, as before, a service token; holds the node id if known.
pub struct ServiceCaller(#[allow(dead_code)] pub String);

impl FromRequestParts<AppState> for ServiceCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(presented) = parts.headers.get(chat_auth::INTERNAL_KEY_HEADER) {
            let expected = state.internal_key.as_deref().unwrap_or_default();
            return if !expected.is_empty()
                && chat_auth::constant_time_eq(presented.as_bytes(), expected.as_bytes())
            {
                Ok(ServiceCaller("internal-key".into()))
            } else {
                Err(ApiError::unauthorized("invalid internal key"))
            };
        }
        let raw = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token)
            .ok_or_else(|| ApiError::unauthorized("missing service token"))?;
        state
            .keys
            .verify_service_token(raw)
            .map(ServiceCaller)
            .map_err(|_| ApiError::unauthorized("invalid service token"))
    }
}
