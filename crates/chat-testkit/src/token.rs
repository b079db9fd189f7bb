//! Minting tokens the way chat-api does (HS256 with `sub`, `exp`, `iat`, `jti`), to test expired,
//! forged and service tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    exp: i64,
    iat: i64,
    jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

fn sign(secret: &str, claims: &Claims<'_>) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("HS256 signing failed: {e}"))
}

fn jti() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// A user token for `user_id` signed with `secret`, expiring `exp_in_secs` from now (negative:
/// already expired).
pub fn mint_token(secret: &str, user_id: u64, exp_in_secs: i64) -> String {
    let now = now();
    sign(
        secret,
        &Claims {
            sub: user_id.to_string(),
            exp: now + exp_in_secs,
            iat: now.min(now + exp_in_secs) - 60,
            jti: jti(),
            scope: None,
        },
    )
}

/// A token for `user_id` with a valid signature that expired ten minutes ago (well past any
/// leeway).
pub fn expired_token(secret: &str, user_id: u64) -> String {
    mint_token(secret, user_id, -600)
}

/// A well-formed, unexpired token for `user_id` signed with a secret the stack does not know.
pub fn forged_token(user_id: u64) -> String {
    mint_token(&format!("not-the-secret-{}", jti()), user_id, 3600)
}

/// A gateway service token (`scope: "internal"`) for the internal endpoints.
pub fn service_token(secret: &str, node_id: &str) -> String {
    let now = now();
    sign(
        secret,
        &Claims {
            sub: node_id.to_string(),
            exp: now + 3600,
            iat: now,
            jti: jti(),
            scope: Some("internal"),
        },
    )
}
