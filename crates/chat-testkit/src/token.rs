//! Minting tokens the way chat-api does (HS256 with `sub`, `exp`, `iat`, `jti`, `iss`, `aud`), to
//! test expired, forged, not-yet-valid, wrong-issuer and service tokens.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: String,
    exp: i64,
    iat: i64,
    jti: String,
    iss: &'a str,
    aud: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

/// The stack's default `iss` and `aud`.
pub const ISSUER: &str = "chat";
pub const AUDIENCE: &str = "chat";

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
            iss: ISSUER,
            aud: AUDIENCE,
            nbf: None,
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
            iss: ISSUER,
            aud: AUDIENCE,
            nbf: None,
            scope: Some("internal"),
        },
    )
}

/// What [`custom_token`] puts in a token; start from [`TokenSpec::valid`].
#[derive(Debug, Clone)]
pub struct TokenSpec {
    pub user_id: u64,
    pub exp_in_secs: i64,
    pub iat_offset_secs: i64,
    pub nbf_in_secs: Option<i64>,
    pub iss: String,
    pub aud: String,
    pub kid: Option<String>,
}

impl TokenSpec {
    /// An unexpired token for `user_id` with the stack's issuer and audience.
    pub fn valid(user_id: u64) -> TokenSpec {
        TokenSpec {
            user_id,
            exp_in_secs: 3600,
            iat_offset_secs: 0,
            nbf_in_secs: None,
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            kid: None,
        }
    }
}

fn claims_of(spec: &TokenSpec) -> Claims<'_> {
    let now = now();
    Claims {
        sub: spec.user_id.to_string(),
        exp: now + spec.exp_in_secs,
        iat: now + spec.iat_offset_secs,
        jti: jti(),
        iss: &spec.iss,
        aud: &spec.aud,
        nbf: spec.nbf_in_secs.map(|n| now + n),
        scope: None,
    }
}

/// An HS256 token made from `spec` with `secret`.
pub fn custom_token(secret: &str, spec: &TokenSpec) -> String {
    let mut header = Header::new(Algorithm::HS256);
    header.kid = spec.kid.clone();
    jsonwebtoken::encode(
        &header,
        &claims_of(spec),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("HS256 signing failed: {e}"))
}

/// An RS256 token made from `spec` with a PEM private key.
pub fn rs256_token(private_pem: &[u8], spec: &TokenSpec) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = spec.kid.clone();
    let key = EncodingKey::from_rsa_pem(private_pem)
        .unwrap_or_else(|e| panic!("not an RSA private key: {e}"));
    jsonwebtoken::encode(&header, &claims_of(spec), &key)
        .unwrap_or_else(|e| panic!("RS256 signing failed: {e}"))
}

/// A token with header `{"alg":"none"}` and no signature, for `user_id`.
pub fn alg_none_token(user_id: u64) -> String {
    use base64_url as b64;
    let header = b64::encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = format!(
        r#"{{"sub":"{user_id}","exp":{},"iat":{},"jti":"{}","iss":"{ISSUER}","aud":"{AUDIENCE}"}}"#,
        now() + 3600,
        now(),
        jti()
    );
    format!("{header}.{}.", b64::encode(payload.as_bytes()))
}

/// Unpadded base64url, enough to build a token by hand.
mod base64_url {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len() * 4 / 3 + 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }
}
