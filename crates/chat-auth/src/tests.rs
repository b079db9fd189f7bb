//! Unit tests of token issue and verification: algorithms, claims, key rotation.

use super::*;

const RSA1_KEY: &[u8] = include_bytes!("../testdata/rsa1.key.pem");
const RSA1_PUB: &[u8] = include_bytes!("../testdata/rsa1.pub.pem");
const RSA2_PUB: &[u8] = include_bytes!("../testdata/rsa2.pub.pem");
const EC1_KEY: &[u8] = include_bytes!("../testdata/ec1.key.pem");
const EC1_PUB: &[u8] = include_bytes!("../testdata/ec1.pub.pem");

fn now() -> i64 {
    Utc::now().timestamp()
}

fn claims(exp_in: i64) -> Claims {
    Claims {
        sub: "1".into(),
        exp: now() + exp_in,
        iat: now() - 1,
        jti: "j".into(),
        nbf: None,
        iss: Some(DEFAULT_ISSUER.into()),
        aud: Some(DEFAULT_AUDIENCE.into()),
        scope: None,
    }
}

fn rs256(kid: Option<&str>, private: bool) -> TokenKeys {
    let decoding = DecodingKey::from_rsa_pem(RSA1_PUB).expect("public key");
    let encoding = private.then(|| EncodingKey::from_rsa_pem(RSA1_KEY).expect("private key"));
    TokenKeys::from_pair(
        KeyPair {
            alg: Algorithm::RS256,
            encoding,
            decoding,
        },
        kid.map(String::from),
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
        5,
    )
}

#[test]
fn user_token_round_trip() {
    let keys = TokenKeys::hs256(b"secret");
    let (token, info) = keys
        .issue_user_token(42, Duration::from_secs(60))
        .expect("sign");
    let verified = keys.verify_user_token(&token).expect("valid");
    assert_eq!(verified, info);
    assert_eq!(verified.user_id, 42);
}

#[test]
fn wrong_secret_and_garbage_are_invalid() {
    let (token, _) = TokenKeys::hs256(b"a")
        .issue_user_token(1, Duration::from_secs(60))
        .expect("sign");
    let other = TokenKeys::hs256(b"b");
    assert_eq!(other.verify_user_token(&token), Err(TokenError::Invalid));
    assert_eq!(other.verify_user_token("x.y.z"), Err(TokenError::Invalid));
    assert_eq!(other.verify_user_token(""), Err(TokenError::Invalid));
}

#[test]
fn expired_token_is_refused() {
    let keys = TokenKeys::hs256(b"s");
    let token = keys.sign(&claims(-60)).expect("sign");
    assert_eq!(keys.verify_user_token(&token), Err(TokenError::Expired));
    // Within the leeway it still counts.
    let token = keys.sign(&claims(-2)).expect("sign");
    assert!(keys.verify_user_token(&token).is_ok());
}

#[test]
fn not_yet_valid_by_nbf_or_iat() {
    let keys = TokenKeys::hs256(b"s");
    let mut early = claims(600);
    early.nbf = Some(now() + 120);
    let token = keys.sign(&early).expect("sign");
    assert_eq!(keys.verify_user_token(&token), Err(TokenError::NotYetValid));
    let mut future = claims(600);
    future.iat = now() + 120;
    let token = keys.sign(&future).expect("sign");
    assert_eq!(keys.verify_user_token(&token), Err(TokenError::NotYetValid));
}

#[test]
fn issuer_and_audience_are_required_and_checked() {
    let keys = TokenKeys::hs256(b"s");
    for change in [
        |c: &mut Claims| c.iss = Some("evil".into()),
        |c: &mut Claims| c.aud = Some("other".into()),
        |c: &mut Claims| c.iss = None,
        |c: &mut Claims| c.aud = None,
    ] {
        let mut bad = claims(600);
        change(&mut bad);
        let token = keys.sign(&bad).expect("sign");
        assert_eq!(keys.verify_user_token(&token), Err(TokenError::Invalid));
    }
}

#[test]
fn alg_none_is_refused() {
    // header {"alg":"none","typ":"JWT"}, payload {"sub":"1","exp":9999999999,"iat":0,"jti":"j"}
    let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiIxIiwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjAsImp0aSI6ImoifQ.";
    let keys = TokenKeys::hs256(b"s");
    assert_eq!(keys.verify_user_token(token), Err(TokenError::Invalid));
    assert_eq!(
        rs256(None, false).verify_user_token(token),
        Err(TokenError::Invalid)
    );
}

#[test]
fn rs256_gateway_verifies_with_the_public_key_only() {
    let api = rs256(Some("k1"), true);
    let gateway = rs256(Some("k1"), false);
    assert!(!gateway.can_sign());
    assert_eq!(
        gateway.issue_user_token(1, Duration::from_secs(60)).err(),
        Some(TokenError::CannotSign)
    );
    let (token, info) = api
        .issue_user_token(7, Duration::from_secs(60))
        .expect("sign");
    assert_eq!(gateway.verify_user_token(&token), Ok(info));
}

#[test]
fn hs256_token_made_with_the_public_key_is_refused() {
    // The classic confusion attack: sign HS256 with the RSA public key as the secret.
    let forged = TokenKeys::hs256(RSA1_PUB)
        .issue_user_token(1, Duration::from_secs(60))
        .expect("sign")
        .0;
    assert_eq!(
        rs256(None, false).verify_user_token(&forged),
        Err(TokenError::Invalid)
    );
}

#[test]
fn es256_round_trip_and_wrong_key() {
    let keys = TokenKeys::from_pair(
        KeyPair {
            alg: Algorithm::ES256,
            encoding: Some(EncodingKey::from_ec_pem(EC1_KEY).expect("key")),
            decoding: DecodingKey::from_ec_pem(EC1_PUB).expect("pub"),
        },
        None,
        DEFAULT_ISSUER,
        DEFAULT_AUDIENCE,
        5,
    );
    let (token, _) = keys
        .issue_user_token(3, Duration::from_secs(60))
        .expect("sign");
    assert_eq!(keys.verify_user_token(&token).map(|t| t.user_id), Ok(3));
    assert_eq!(
        rs256(None, false).verify_user_token(&token),
        Err(TokenError::Invalid)
    );
}

#[test]
fn rotation_accepts_current_and_previous_kid_only() {
    let old = rs256(Some("k1"), true);
    let (old_token, _) = old
        .issue_user_token(1, Duration::from_secs(60))
        .expect("sign");
    // The new ring signs with k2 (here another key id on the same PEM for brevity, and a
    // different public key under k3 to show a kid/key mismatch is refused).
    let mut ring = rs256(Some("k2"), true);
    ring.add_verification_key(
        Algorithm::RS256,
        Some("k1".into()),
        DecodingKey::from_rsa_pem(RSA1_PUB).expect("pub"),
    );
    assert!(ring.verify_user_token(&old_token).is_ok());
    let (new_token, _) = ring
        .issue_user_token(2, Duration::from_secs(60))
        .expect("sign");
    assert_eq!(
        jsonwebtoken::decode_header(&new_token)
            .expect("header")
            .kid
            .as_deref(),
        Some("k2")
    );
    assert!(ring.verify_user_token(&new_token).is_ok());
    // Once the rotation is over, k1 tokens are refused.
    assert_eq!(
        rs256(Some("k2"), false).verify_user_token(&old_token),
        Err(TokenError::Invalid)
    );
    let mut wrong = rs256(Some("k9"), false);
    wrong.add_verification_key(
        Algorithm::RS256,
        Some("k1".into()),
        DecodingKey::from_rsa_pem(RSA2_PUB).expect("pub"),
    );
    assert_eq!(
        wrong.verify_user_token(&old_token),
        Err(TokenError::Invalid)
    );
}

#[test]
fn hs256_rotation_without_kids_tries_both_secrets() {
    let (old_token, _) = TokenKeys::hs256(b"old")
        .issue_user_token(1, Duration::from_secs(60))
        .expect("sign");
    let mut ring = TokenKeys::hs256(b"new");
    ring.add_verification_key(Algorithm::HS256, None, DecodingKey::from_secret(b"old"));
    assert!(ring.verify_user_token(&old_token).is_ok());
    assert_eq!(
        TokenKeys::hs256(b"new").verify_user_token(&old_token),
        Err(TokenError::Invalid)
    );
}

#[test]
fn scopes_do_not_mix() {
    let keys = TokenKeys::hs256(b"s");
    let service = keys
        .issue_service_token("gw1", Duration::from_secs(60))
        .expect("sign");
    assert_eq!(
        keys.verify_user_token(&service),
        Err(TokenError::WrongScope)
    );
    assert_eq!(keys.verify_service_token(&service).as_deref(), Ok("gw1"));
    let (user, _) = keys
        .issue_user_token(1, Duration::from_secs(60))
        .expect("sign");
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

#[test]
fn constant_time_comparison() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abd", b"abc"));
    assert!(!constant_time_eq(b"ab", b"abc"));
}
