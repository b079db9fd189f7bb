//! Register, login and logout.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chat_proto::codec::BusBody;
use chat_proto::{ErrorCode, UserRef};
use chat_store::StoreError;
use serde::{Deserialize, Serialize};

use crate::error::{ApiError, ApiResult};
use crate::extract::{AuthUser, ClientIp, JsonBody};
use crate::state::AppState;

#[derive(Deserialize)]
pub struct RegisterRequest {
    username: String,
    password: String,
    #[serde(default)]
    email: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
}

#[derive(Serialize)]
pub struct Session {
    user: UserRef,
    token: String,
    expires_at: String,
}

pub async fn register(
    State(state): State<AppState>,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<Session>)> {
    validate_username(&req.username)?;
    validate_password(&req.password)?;
    let email = req
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    if email.is_some_and(|e| e.chars().count() > 254 || !e.contains('@')) {
        return Err(ApiError::invalid(
            "email must contain @ and have at most 254 characters",
        ));
    }
    let hash = hash_password(req.password).await?;
    let user = match state.store.create_user(&req.username, email, &hash).await {
        Err(StoreError::Conflict(_)) => {
            return Err(ApiError::new(ErrorCode::UsernameTaken, "username is taken"));
        }
        other => other?,
    };
    tracing::info!(user_id = user.id, "user registered");
    Ok((StatusCode::CREATED, Json(issue_session(&state, user)?)))
}

pub async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    JsonBody(req): JsonBody<LoginRequest>,
) -> ApiResult<Json<Session>> {
    // Brute force: after too many failures for this account from this address, refuse before
    // looking at the password. Redis trouble does not block logins.
    let limits = state.limits;
    match state
        .bus
        .login_blocked(&req.username, &ip, limits.login_max_failures)
        .await
    {
        Ok(Some(retry_after)) => {
            metrics::counter!("chat_api_rate_limited_total", "limit" => "login").increment(1);
            return Err(ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many failed logins; retry in {} s",
                    retry_after.as_secs().max(1)
                ),
            ));
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "login throttle check failed; allowing"),
    }
    let credentials = state.store.credentials(&req.username).await?;
    // Verify against a fixed hash for unknown users too, so timing does not reveal which
    // usernames exist.
    let (stored_hash, user) = match credentials {
        Some(c) => (c.password_hash, Some(c.user)),
        None => (DUMMY_HASH.to_string(), None),
    };
    let matches = verify_password(req.password, stored_hash).await?;
    match (matches, user) {
        (true, Some(user)) => {
            if limits.login_max_failures > 0
                && let Err(e) = state.bus.clear_login_failures(&req.username, &ip).await
            {
                tracing::warn!(error = %e, "clearing login failures failed");
            }
            Ok(Json(issue_session(&state, user)?))
        }
        _ => {
            if limits.login_max_failures > 0
                && let Err(e) = state
                    .bus
                    .note_login_failure(&req.username, &ip, limits.login_window)
                    .await
            {
                tracing::warn!(error = %e, "recording a login failure failed");
            }
            Err(ApiError::unauthorized("wrong username or password"))
        }
    }
}

/// Revokes the presented token everywhere: the api refuses it from now on, and gateways close
/// the sockets opened with it.
pub async fn logout(State(state): State<AppState>, caller: AuthUser) -> ApiResult<StatusCode> {
    state
        .bus
        .revoke(&caller.token.jti, caller.token.remaining())
        .await?;
    state
        .publish(
            &[caller.id],
            BusBody::SessionRevoked {
                jti: caller.token.jti.clone(),
            },
        )
        .await;
    Ok(StatusCode::NO_CONTENT)
}

fn issue_session(state: &AppState, user: UserRef) -> ApiResult<Session> {
    let (token, info) = state
        .keys
        .issue_user_token(user.id, state.token_ttl)
        .map_err(|_| ApiError::internal())?;
    Ok(Session {
        user,
        token,
        expires_at: chat_proto::time::format(&info.expires_at),
    })
}

fn validate_username(username: &str) -> ApiResult<()> {
    let ok_len = (3..=32).contains(&username.len());
    let ok_chars = username
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-'));
    if ok_len && ok_chars {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "username must be 3-32 characters of a-z, 0-9, _ . -",
        ))
    }
}

fn validate_password(password: &str) -> ApiResult<()> {
    if (8..=128).contains(&password.chars().count()) {
        Ok(())
    } else {
        Err(ApiError::invalid("password must be 8-128 characters"))
    }
}

/// argon2id with the crate's default (OWASP) parameters, off the async threads.
async fn hash_password(password: String) -> ApiResult<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await
    .map_err(|_| ApiError::internal())?
    .map_err(|e| {
        tracing::error!(error = %e, "password hashing failed");
        ApiError::internal()
    })
}

async fn verify_password(password: String, hash: String) -> ApiResult<bool> {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .map_err(|_| ApiError::internal())
}

/// The argon2id hash of a random password nobody knows, used for unknown usernames.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Q3bEhVqRsXGXHfFvJGQSIcWy2Jd0Df2n1Sg0o8sQeA";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("ab").is_err());
        assert!(validate_username("abc").is_ok());
        assert!(validate_username("a.b-c_d9").is_ok());
        assert!(validate_username("Abc").is_err());
        assert!(validate_username("héllo").is_err());
        assert!(validate_username(&"a".repeat(33)).is_err());
    }

    #[test]
    fn passwords() {
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(129)).is_err());
    }

    #[test]
    fn dummy_hash_parses() {
        assert!(PasswordHash::new(DUMMY_HASH).is_ok());
    }
}
