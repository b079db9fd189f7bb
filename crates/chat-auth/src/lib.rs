//! Access tokens: HS256 JWTs with `sub`, `exp`, `iat` and `jti`, signed by chat-api and verified by
//! chat-api and every gateway with the shared secret. Service tokens (`scope: "internal"`) let a
//! gateway call chat-api's internal endpoints; they are never accepted as user tokens.

use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const INTERNAL_SCOPE: &str = "internal";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id as a decimal string (JWT convention), or the node id for service tokens.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The token-secret flags shared by chat-api and chat-gateway (flatten into a clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// HS256 secret for access tokens, the same on chat-api and every gateway. Required unless --dev.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Development mode: start without CHAT_JWT_SECRET (a random one is used, so tokens are valid
    /// only on this process).
    #[arg(long, env = "CHAT_DEV", default_value_t = false)]
    pub dev: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("CHAT_JWT_SECRET is required (or pass --dev for a throwaway secret)")]
pub struct MissingSecret;

impl SecretArgs {
    /// The signing keys: from the configured secret, or a random one in `--dev` mode.
    pub fn keys(&self) -> Result<TokenKeys, MissingSecret> {
        match (self.jwt_secret.as_deref(), self.dev) {
            (Some(secret), _) if !secret.is_empty() => Ok(TokenKeys::hs256(secret.as_bytes())),
            (_, true) => {
                tracing::warn!("--dev: no CHAT_JWT_SECRET given, using a random one");
                Ok(TokenKeys::hs256(TokenKeys::random_dev_secret().as_bytes()))
            }
            _ => Err(MissingSecret),
        }
    }
}

/// A verified user token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserToken {
    pub user_id: u64,
    pub jti: String,
    pub expires_at: DateTime<Utc>,
}

impl UserToken {
    /// How long the token would still be valid: the lifetime of its revocation record.
    pub fn remaining(&self) -> Duration {
        (self.expires_at - Utc::now()).to_std().unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token has expired")]
    Expired,
    #[error("token is invalid")]
    Invalid,
    #[error("a service token is not a user token")]
    WrongScope,
}

#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKeys(HS256, ***)")
    }
}

impl TokenKeys {
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A random secret for `--dev` runs that did not set one: tokens die with the process.
    pub fn random_dev_secret() -> String {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn issue_user_token(&self, user_id: u64, lifetime: Duration) -> (String, UserToken) {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
        let claims = Claims {
            sub: user_id.to_string(),
            exp: expires_at.timestamp(),
            iat: now.timestamp(),
            jti: new_jti(),
            scope: None,
        };
        let token = self.sign(&claims);
        let info = UserToken {
            user_id,
            jti: claims.jti,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at),
        };
        (token, info)
    }

    pub fn issue_service_token(&self, node_id: &str, lifetime: Duration) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: node_id.to_string(),
            exp: now + lifetime.as_secs() as i64,
            iat: now,
            jti: new_jti(),
            scope: Some(INTERNAL_SCOPE.to_string()),
        };
        self.sign(&claims)
    }

    /// Verifies signature, algorithm and expiry of a user token.
    pub fn verify_user_token(&self, token: &str) -> Result<UserToken, TokenError> {
        let claims = self.verify(token)?;
        if claims.scope.is_some() {
            return Err(TokenError::WrongScope);
        }
        let user_id = claims.sub.parse().map_err(|_| TokenError::Invalid)?;
        let expires_at = DateTime::from_timestamp(claims.exp, 0).ok_or(TokenError::Invalid)?;
        Ok(UserToken {
            user_id,
            jti: claims.jti,
            expires_at,
        })
    }

    /// Verifies a service token and returns the calling node's id.
    pub fn verify_service_token(&self, token: &str) -> Result<String, TokenError> {
        let claims = self.verify(token)?;
        if claims.scope.as_deref() != Some(INTERNAL_SCOPE) {
            return Err(TokenError::WrongScope);
        }
        Ok(claims.sub)
    }

    fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }

    fn sign(&self, claims: &Claims) -> String {
        // HS256 signing of a serializable struct has no failure mode short of allocation failure.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .unwrap_or_default()
    }
}

fn new_jti() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Pulls the token out of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_token_round_trip() {
        let keys = TokenKeys::hs256(b"secret");
        let (token, info) = keys.issue_user_token(42, Duration::from_secs(60));
        let verified = keys.verify_user_token(&token).expect("valid");
        assert_eq!(verified, info);
        assert_eq!(verified.user_id, 42);
    }

    #[test]
    fn wrong_secret_and_garbage_are_invalid() {
        let (token, _) = TokenKeys::hs256(b"a").issue_user_token(1, Duration::from_secs(60));
        let other = TokenKeys::hs256(b"b");
        assert_eq!(other.verify_user_token(&token), Err(TokenError::Invalid));
        assert_eq!(other.verify_user_token("x.y.z"), Err(TokenError::Invalid));
        assert_eq!(other.verify_user_token(""), Err(TokenError::Invalid));
    }

    #[test]
    fn expired_token_is_refused() {
        let keys = TokenKeys::hs256(b"s");
        let claims = Claims {
            sub: "1".into(),
            exp: Utc::now().timestamp() - 60,
            iat: Utc::now().timestamp() - 120,
            jti: "j".into(),
            scope: None,
        };
        let token = keys.sign(&claims);
        assert_eq!(keys.verify_user_token(&token), Err(TokenError::Expired));
    }

    #[test]
    fn alg_none_is_refused() {
        // header {"alg":"none","typ":"JWT"}, payload {"sub":"1","exp":9999999999,"iat":0,"jti":"j"}
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjAsImp0aSI6ImoifQ.";
        let keys = TokenKeys::hs256(b"s");
        assert_eq!(keys.verify_user_token(token), Err(TokenError::Invalid));
    }

    #[test]
    fn scopes_do_not_mix() {
        let keys = TokenKeys::hs256(b"s");
        let service = keys.issue_service_token("gw1", Duration::from_secs(60));
        assert_eq!(
            keys.verify_user_token(&service),
            Err(TokenError::WrongScope)
        );
        assert_eq!(keys.verify_service_token(&service).as_deref(), Ok("gw1"));
        let (user, _) = keys.issue_user_token(1, Duration::from_secs(60));
        assert_eq!(
            keys.verify_service_token(&user),
            Err(TokenError::WrongScope)
        );
    }

    #[test]
    fn bearer_header_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
