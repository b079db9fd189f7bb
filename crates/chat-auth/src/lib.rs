//! Access tokens: JWTs with `sub`, `exp`, `iat`, `jti`, `iss` and `aud`, signed by chat-api and
//! verified by chat-api and every gateway.
//!
//! The algorithm is pinned by configuration (HS256 with a shared secret, or RS256/ES256 where
//! gateways hold only the public key); a token whose header names another algorithm is refused
//! before any signature check. Keys carry an optional `kid`: during a rotation the previous key
//! stays valid for verification while new tokens are signed with the current one.
//!
//! Service tokens (`scope: "internal"`) are the legacy credential of the gateway → chat-api
//! presence call; they are never accepted as user tokens. The preferred credential for that call
//! is the separate internal key (`CHAT_INTERNAL_KEY`), which works with asymmetric keys too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

pub const INTERNAL_SCOPE: &str = "internal";
/// The header that carries the internal key on gateway → chat-api calls.
pub const INTERNAL_KEY_HEADER: &str = "x-chat-internal-key";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id as a decimal string (JWT convention), or the node id for service tokens.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// The signing algorithms a deployment may pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JwtAlg {
    #[value(name = "HS256")]
    Hs256,
    #[value(name = "RS256")]
    Rs256,
    #[value(name = "ES256")]
    Es256,
}

impl JwtAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::Es256 => Algorithm::ES256,
        }
    }
}

/// The token flags shared by chat-api and chat-gateway (flatten into a clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct SecretArgs {
    /// HS256 secret for access tokens, the same on chat-api and every gateway. Required with
    /// HS256 unless --dev.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Token algorithm, pinned: HS256 (shared secret), RS256 or ES256 (chat-api signs with a
    /// private key, gateways verify with the public key only).
    #[arg(long, env = "CHAT_JWT_ALG", value_enum, default_value = "HS256")]
    pub jwt_alg: JwtAlg,

    /// PEM private key (PKCS#8 for ES256) that chat-api signs with, for RS256/ES256.
    #[arg(long, env = "CHAT_JWT_PRIVATE_KEY_FILE")]
    pub jwt_private_key_file: Option<PathBuf>,

    /// PEM public key that tokens are verified with, for RS256/ES256.
    #[arg(long, env = "CHAT_JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// Key id of the current key, written into the header of new tokens.
    #[arg(long, env = "CHAT_JWT_KID")]
    pub jwt_kid: Option<String>,

    /// During a rotation: the previous HS256 secret, still accepted for verification.
    #[arg(long, env = "CHAT_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,

    /// During a rotation: the previous PEM public key (RS256/ES256), still accepted.
    #[arg(long, env = "CHAT_JWT_PREVIOUS_PUBLIC_KEY_FILE")]
    pub jwt_previous_public_key_file: Option<PathBuf>,

    /// Key id of the previous key (tokens without a kid match a key without a kid).
    #[arg(long, env = "CHAT_JWT_PREVIOUS_KID")]
    pub jwt_previous_kid: Option<String>,

    /// Algorithm of the previous key (default: the current algorithm).
    #[arg(long, env = "CHAT_JWT_PREVIOUS_ALG", value_enum)]
    pub jwt_previous_alg: Option<JwtAlg>,

    /// `iss` written into and required of every token.
    #[arg(long, env = "CHAT_JWT_ISSUER", default_value = "chat")]
    pub jwt_issuer: String,

    /// `aud` written into and required of every token.
    #[arg(long, env = "CHAT_JWT_AUDIENCE", default_value = "chat")]
    pub jwt_audience: String,

    /// Clock skew tolerated on exp, nbf and iat, in seconds.
    #[arg(long, env = "CHAT_JWT_LEEWAY_SECS", default_value_t = 5)]
    pub jwt_leeway_secs: u64,

    /// Shared key that gateways present to chat-api's internal endpoints (header
    /// x-chat-internal-key). Required on gateways with RS256/ES256; without it, gateways fall back
    /// to HS256 service tokens.
    #[arg(long, env = "CHAT_INTERNAL_KEY", hide_env_values = true)]
    pub internal_key: Option<String>,

    /// Development mode: start without CHAT_JWT_SECRET (a random one is used, so tokens are valid
    /// only on this process).
    #[arg(long, env = "CHAT_DEV", default_value_t = false)]
    pub dev: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    #[error("CHAT_JWT_SECRET is required (or pass --dev for a throwaway secret)")]
    MissingSecret,
    #[error("{0} is required with CHAT_JWT_ALG={1:?}")]
    Missing(&'static str, JwtAlg),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable PEM key: {source}")]
    Pem {
        path: PathBuf,
        source: jsonwebtoken::errors::Error,
    },
}

/// Kept for callers that matched on the old error type.
pub type MissingSecret = KeyConfigError;

impl SecretArgs {
    /// The key ring: from the configured secret or key files, or a random secret in `--dev` mode.
    pub fn keys(&self) -> Result<TokenKeys, KeyConfigError> {
        let secret = self.jwt_secret.as_deref().filter(|s| !s.is_empty());
        let current = match self.jwt_alg {
            JwtAlg::Hs256 => match (secret, self.dev) {
                (Some(secret), _) => KeyPair::hs256(secret.as_bytes()),
                (None, true) => {
                    tracing::warn!("--dev: no CHAT_JWT_SECRET given, using a random one");
                    KeyPair::hs256(TokenKeys::random_dev_secret().as_bytes())
                }
                (None, false) => return Err(KeyConfigError::MissingSecret),
            },
            alg => {
                let public = self
                    .jwt_public_key_file
                    .as_deref()
                    .ok_or(KeyConfigError::Missing("CHAT_JWT_PUBLIC_KEY_FILE", alg))?;
                let decoding = decoding_from_pem(alg, public)?;
                let encoding = match self.jwt_private_key_file.as_deref() {
                    Some(path) => Some(encoding_from_pem(alg, path)?),
                    None => None,
                };
                KeyPair {
                    alg: alg.algorithm(),
                    encoding,
                    decoding,
                }
            }
        };
        let mut keys = TokenKeys::from_pair(
            current,
            non_empty(&self.jwt_kid),
            &self.jwt_issuer,
            &self.jwt_audience,
            self.jwt_leeway_secs,
        );
        let previous_alg = self.jwt_previous_alg.unwrap_or(self.jwt_alg);
        let previous = match previous_alg {
            JwtAlg::Hs256 => {
                non_empty(&self.jwt_previous_secret).map(|s| DecodingKey::from_secret(s.as_bytes()))
            }
            alg => match self.jwt_previous_public_key_file.as_deref() {
                Some(path) => Some(decoding_from_pem(alg, path)?),
                None => None,
            },
        };
        if let Some(decoding) = previous {
            keys.add_verification_key(
                previous_alg.algorithm(),
                non_empty(&self.jwt_previous_kid),
                decoding,
            );
        }
        Ok(keys)
    }

    /// The internal key, if configured (empty counts as unset).
    pub fn internal_key(&self) -> Option<String> {
        non_empty(&self.internal_key)
    }
}

fn non_empty(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.is_empty()).cloned()
}

fn read_pem(path: &Path) -> Result<Vec<u8>, KeyConfigError> {
    std::fs::read(path).map_err(|source| KeyConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn decoding_from_pem(alg: JwtAlg, path: &Path) -> Result<DecodingKey, KeyConfigError> {
    let pem = read_pem(path)?;
    let key = match alg {
        JwtAlg::Rs256 => DecodingKey::from_rsa_pem(&pem),
        JwtAlg::Es256 => DecodingKey::from_ec_pem(&pem),
        JwtAlg::Hs256 => Ok(DecodingKey::from_secret(&pem)),
    };
    key.map_err(|source| KeyConfigError::Pem {
        path: path.to_path_buf(),
        source,
    })
}

fn encoding_from_pem(alg: JwtAlg, path: &Path) -> Result<EncodingKey, KeyConfigError> {
    let pem = read_pem(path)?;
    let key = match alg {
        JwtAlg::Rs256 => EncodingKey::from_rsa_pem(&pem),
        JwtAlg::Es256 => EncodingKey::from_ec_pem(&pem),
        JwtAlg::Hs256 => Ok(EncodingKey::from_secret(&pem)),
    };
    key.map_err(|source| KeyConfigError::Pem {
        path: path.to_path_buf(),
        source,
    })
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
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token is invalid")]
    Invalid,
    #[error("a service token is not a user token")]
    WrongScope,
    #[error("this node holds no signing key")]
    CannotSign,
}

struct KeyPair {
    alg: Algorithm,
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
}

impl KeyPair {
    fn hs256(secret: &[u8]) -> Self {
        Self {
            alg: Algorithm::HS256,
            encoding: Some(EncodingKey::from_secret(secret)),
            decoding: DecodingKey::from_secret(secret),
        }
    }
}

/// One key tokens may be verified with; its algorithm is the only one accepted for it.
#[derive(Clone)]
struct VerificationKey {
    kid: Option<String>,
    decoding: DecodingKey,
    validation: Validation,
}

#[derive(Clone)]
pub struct TokenKeys {
    /// The current key's signing half (absent on gateways with asymmetric keys) and header.
    signing: Option<(EncodingKey, Header)>,
    /// The current key first, then the previous one during a rotation.
    verifying: Vec<VerificationKey>,
    issuer: String,
    audience: String,
    leeway: i64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TokenKeys({} verification key(s), signing: {}, ***)",
            self.verifying.len(),
            self.signing.is_some()
        )
    }
}

pub const DEFAULT_ISSUER: &str = "chat";
pub const DEFAULT_AUDIENCE: &str = "chat";

impl TokenKeys {
    /// HS256 with the default issuer, audience and leeway, no kid.
    pub fn hs256(secret: &[u8]) -> Self {
        Self::from_pair(
            KeyPair::hs256(secret),
            None,
            DEFAULT_ISSUER,
            DEFAULT_AUDIENCE,
            5,
        )
    }

    fn from_pair(
        pair: KeyPair,
        kid: Option<String>,
        issuer: &str,
        audience: &str,
        leeway: u64,
    ) -> Self {
        let mut keys = Self {
            signing: None,
            verifying: Vec::new(),
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            leeway: leeway.min(3600) as i64,
        };
        if let Some(encoding) = pair.encoding {
            let mut header = Header::new(pair.alg);
            header.kid = kid.clone();
            keys.signing = Some((encoding, header));
        }
        keys.add_verification_key(pair.alg, kid, pair.decoding);
        keys
    }

    fn add_verification_key(&mut self, alg: Algorithm, kid: Option<String>, decoding: DecodingKey) {
        let mut validation = Validation::new(alg);
        validation.algorithms = vec![alg];
        validation.leeway = self.leeway as u64;
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        self.verifying.push(VerificationKey {
            kid,
            decoding,
            validation,
        });
    }

    /// Whether this node can issue tokens (chat-api must; gateways with RS256/ES256 cannot).
    pub fn can_sign(&self) -> bool {
        self.signing.is_some()
    }

    /// A random secret for `--dev` runs that did not set one: tokens die with the process.
    pub fn random_dev_secret() -> String {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    pub fn issue_user_token(
        &self,
        user_id: u64,
        lifetime: Duration,
    ) -> Result<(String, UserToken), TokenError> {
        let now = Utc::now();
        let expires_at = now + chrono::Duration::from_std(lifetime).unwrap_or_default();
        let claims = self.claims(user_id.to_string(), now.timestamp(), expires_at.timestamp());
        let token = self.sign(&claims)?;
        let info = UserToken {
            user_id,
            jti: claims.jti,
            expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or(expires_at),
        };
        Ok((token, info))
    }

    pub fn issue_service_token(
        &self,
        node_id: &str,
        lifetime: Duration,
    ) -> Result<String, TokenError> {
        let now = Utc::now().timestamp();
        let mut claims = self.claims(node_id.to_string(), now, now + lifetime.as_secs() as i64);
        claims.scope = Some(INTERNAL_SCOPE.to_string());
        self.sign(&claims)
    }

    fn claims(&self, sub: String, iat: i64, exp: i64) -> Claims {
        Claims {
            sub,
            exp,
            iat,
            jti: new_jti(),
            nbf: None,
            iss: Some(self.issuer.clone()),
            aud: Some(self.audience.clone()),
            scope: None,
        }
    }

    /// Verifies algorithm, key, signature, exp, nbf, iat, iss and aud of a user token.
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
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        // The key is chosen by kid (a token without one matches a key without one); its pinned
        // algorithm must be the one the header names, so `none` or an HS256 token made with a
        // public key never reaches a signature check.
        let mut claims = None;
        for key in self
            .verifying
            .iter()
            .filter(|k| k.kid == header.kid && k.validation.algorithms == [header.alg])
        {
            match jsonwebtoken::decode::<Claims>(token, &key.decoding, &key.validation) {
                Ok(data) => {
                    claims = Some(data.claims);
                    break;
                }
                // Two keys without a kid during a rotation: try the next one.
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                Err(e) => {
                    return Err(match e.kind() {
                        jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                        jsonwebtoken::errors::ErrorKind::ImmatureSignature => {
                            TokenError::NotYetValid
                        }
                        _ => TokenError::Invalid,
                    });
                }
            }
        }
        let claims = claims.ok_or(TokenError::Invalid)?;
        // jsonwebtoken does not look at iat: a token issued in the future is not valid yet.
        if claims.iat > Utc::now().timestamp() + self.leeway {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    fn sign(&self, claims: &Claims) -> Result<String, TokenError> {
        let (encoding, header) = self.signing.as_ref().ok_or(TokenError::CannotSign)?;
        jsonwebtoken::encode(header, claims, encoding).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            TokenError::CannotSign
        })
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

/// Compares a presented secret with the expected one in time independent of where they differ.
pub fn constant_time_eq(presented: &[u8], expected: &[u8]) -> bool {
    if presented.len() != expected.len() {
        return false;
    }
    presented
        .iter()
        .zip(expected)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests;
