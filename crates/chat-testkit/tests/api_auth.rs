//! chat-api: register, login, logout, tokens, `/v1/users/me`, errors common to every route.

use chat_testkit::{
    ApiClient, Stack, StackOptions, assert_error, assert_has_keys, assert_status, assert_time,
    expired_token, forged_token, id_of, json, mint_token, service_token, unique_username,
};
use reqwest::Method;

async fn stack() -> Stack {
    Stack::start(StackOptions::gateways(0)).await
}

#[tokio::test]
async fn register_returns_user_token_and_expiry() {
    let stack = stack().await;
    let api = stack.api();
    let name = unique_username("reg");
    let resp = api
        .post(
            "/v1/auth/register",
            &json!({"username": name, "password": "password1"}),
        )
        .await;
    assert_status(&resp, 201, "register");
    assert_has_keys(&resp.1, &["user", "token", "expires_at"], "register body");
    assert_has_keys(&resp.1["user"], &["id", "username"], "register user");
    assert_eq!(resp.1["user"]["username"], json!(name));
    let id = id_of(&resp.1["user"], "id");
    assert!(id > 0);
    assert_time(&resp.1["expires_at"], "expires_at");
    let token = resp.1["token"].as_str().expect("token is a string");

    let me = api.with_token(token).get("/v1/users/me").await;
    assert_status(&me, 200, "me");
    assert_has_keys(&me.1, &["id", "username", "email", "created_at"], "me");
    assert_eq!(me.1["id"], json!(id));
    assert_eq!(me.1["username"], json!(name));
    assert_eq!(me.1["email"], json!(null));
    assert_time(&me.1["created_at"], "me.created_at");
}

#[tokio::test]
async fn content_type_is_not_required() {
    let stack = stack().await;
    let api = stack.api();
    let body = json!({"username": unique_username("ct"), "password": "password1"}).to_string();
    let resp = api.post_raw("/v1/auth/register", &body).await;
    assert_status(&resp, 201, "register without Content-Type");
    let body = json!({"username": unique_username("ct"), "password": "password1"}).to_string();
    let resp = api
        .request_raw(
            Method::POST,
            "/v1/auth/register",
            Some(body.into_bytes()),
            Some(("content-type", "text/plain")),
        )
        .await;
    assert_status(&resp, 201, "register with Content-Type text/plain");
}

#[tokio::test]
async fn register_with_email_shows_it_in_me() {
    let stack = stack().await;
    let api = stack.api();
    let name = unique_username("mail");
    let resp = api
        .post(
            "/v1/auth/register",
            &json!({"username": name, "password": "password1", "email": "a@example.com"}),
        )
        .await;
    assert_status(&resp, 201, "register with email");
    let token = resp.1["token"].as_str().expect("token");
    let me = api.with_token(token).get("/v1/users/me").await;
    assert_status(&me, 200, "me");
    assert_eq!(me.1["email"], json!("a@example.com"));
}

#[tokio::test]
async fn register_validation() {
    let stack = stack().await;
    let api = stack.api();
    let ok_name = unique_username("v");
    let cases = [
        (
            json!({"username": "ab", "password": "password1"}),
            "2-char username",
        ),
        (
            json!({"username": "a".repeat(33), "password": "password1"}),
            "33-char username",
        ),
        (
            json!({"username": "Alice_upper", "password": "password1"}),
            "uppercase",
        ),
        (
            json!({"username": "al ice", "password": "password1"}),
            "space",
        ),
        (
            json!({"username": "al@ice", "password": "password1"}),
            "@ in username",
        ),
        (
            json!({"username": "ålice", "password": "password1"}),
            "non-ASCII username",
        ),
        (
            json!({"username": ok_name, "password": "short7!"}),
            "7-char password",
        ),
        (
            json!({"username": ok_name, "password": "p".repeat(129)}),
            "129-char password",
        ),
        (json!({"username": ok_name}), "missing password"),
        (json!({"password": "password1"}), "missing username"),
        (
            json!({"username": 12345, "password": "password1"}),
            "numeric username",
        ),
        (
            json!({"username": ok_name, "password": "password1", "email": "no-at-sign"}),
            "email without @",
        ),
        (
            json!({"username": ok_name, "password": "password1",
                   "email": format!("{}@example.com", "e".repeat(243))}),
            "255-char email",
        ),
        (json!([1, 2]), "array body"),
    ];
    for (body, what) in cases {
        let resp = api.post("/v1/auth/register", &body).await;
        assert_error(&resp, 400, "invalid_input", what);
    }
    let resp = api.post_raw("/v1/auth/register", "{\"username\": ").await;
    assert_error(&resp, 400, "invalid_input", "malformed JSON");
    let resp = api.post_raw("/v1/auth/register", "").await;
    assert_error(&resp, 400, "invalid_input", "empty body");

    // None of the rejected attempts created the user.
    let resp = api
        .post(
            "/v1/auth/login",
            &json!({"username": ok_name, "password": "password1"}),
        )
        .await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "login after rejected registrations",
    );

    // The bounds themselves are accepted (3 and 32 characters, password 8 and 128).
    let three: String = (0..3).map(|_| rand_char()).collect();
    let resp = api
        .post(
            "/v1/auth/register",
            &json!({"username": three, "password": "p".repeat(8)}),
        )
        .await;
    // The database is fresh per stack, so a random 3-character name cannot be taken.
    assert_status(&resp, 201, "3-char username, 8-char password");
    let long = format!("{:_<32}", unique_username("y.z-"));
    assert_eq!(long.len(), 32);
    let resp = api
        .post(
            "/v1/auth/register",
            &json!({"username": long, "password": "p".repeat(128),
                    "email": format!("{}@example.com", "e".repeat(242))}),
        )
        .await;
    assert_status(
        &resp,
        201,
        "32-char username, 128-char password, 254-char email",
    );
}

fn rand_char() -> String {
    let n: u8 = rand::random_range(0..26);
    char::from(b'a' + n).to_string()
}

#[tokio::test]
async fn duplicate_username_is_409() {
    let stack = stack().await;
    let api = stack.api();
    let name = unique_username("dup");
    api.register(&name, "password1").await;
    let resp = api
        .post(
            "/v1/auth/register",
            &json!({"username": name, "password": "password2"}),
        )
        .await;
    assert_error(&resp, 409, "username_taken", "second registration");
}

#[tokio::test]
async fn login_and_bad_credentials() {
    let stack = stack().await;
    let api = stack.api();
    let name = unique_username("login");
    let (id, _) = api.register(&name, "password1").await;

    let resp = api
        .post(
            "/v1/auth/login",
            &json!({"username": name, "password": "password1"}),
        )
        .await;
    assert_status(&resp, 200, "login");
    assert_has_keys(&resp.1, &["user", "token", "expires_at"], "login body");
    assert_eq!(resp.1["user"]["id"], json!(id));
    assert_eq!(resp.1["user"]["username"], json!(name));
    assert_time(&resp.1["expires_at"], "expires_at");
    let token = resp.1["token"].as_str().expect("token");
    assert_status(
        &api.with_token(token).get("/v1/users/me").await,
        200,
        "me with the login token",
    );

    let wrong_password = api
        .post(
            "/v1/auth/login",
            &json!({"username": name, "password": "password2"}),
        )
        .await;
    assert_error(&wrong_password, 401, "unauthorized", "wrong password");
    let unknown_user = api
        .post(
            "/v1/auth/login",
            &json!({"username": unique_username("ghost"), "password": "password1"}),
        )
        .await;
    assert_error(&unknown_user, 401, "unauthorized", "unknown user");
    assert_eq!(
        wrong_password.1["error"]["message"], unknown_user.1["error"]["message"],
        "wrong password and unknown user must give the same message"
    );
    let resp = api.post_raw("/v1/auth/login", "{nope").await;
    assert_error(&resp, 400, "invalid_input", "malformed login JSON");
    let resp = api.post("/v1/auth/login", &json!({"username": name})).await;
    assert_error(&resp, 400, "invalid_input", "login without password");
}

#[tokio::test]
async fn requests_without_a_valid_token_are_401() {
    let stack = stack().await;
    let api = stack.api();
    let (id, _) = api.register(&unique_username("tok"), "password1").await;
    let secret = stack.jwt_secret().to_string();

    let routes: [(Method, &str); 6] = [
        (Method::GET, "/v1/users/me"),
        (Method::GET, "/v1/users?q=a"),
        (Method::GET, "/v1/contacts"),
        (Method::GET, "/v1/chats"),
        (Method::GET, "/v1/chats/1/messages"),
        (Method::POST, "/v1/auth/logout"),
    ];
    let garbage = "not.a.jwt".to_string();
    let expired = expired_token(&secret, id);
    let forged = forged_token(id);
    let service = service_token(&secret, "gw1");
    // alg "none", no signature: {"sub":"<id>","exp":9999999999,"iat":0,"jti":"j"}.
    let unsigned = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        base64url(&format!(
            r#"{{"sub":"{id}","exp":9999999999,"iat":0,"jti":"j"}}"#
        ))
    );
    for (method, path) in routes {
        let resp = api.request(method.clone(), path, None).await;
        assert_error(
            &resp,
            401,
            "unauthorized",
            &format!("{method} {path} without a token"),
        );
        for (token, what) in [
            (&garbage, "garbage"),
            (&expired, "expired"),
            (&forged, "forged (wrong secret)"),
            (&service, "service token as a user token"),
            (&unsigned, "unsigned (alg none)"),
        ] {
            let resp = api
                .with_token(token)
                .request(method.clone(), path, None)
                .await;
            assert_error(
                &resp,
                401,
                "unauthorized",
                &format!("{method} {path} with a {what} token"),
            );
        }
    }
    let resp = api
        .request_raw(
            Method::GET,
            "/v1/users/me",
            None,
            Some(("authorization", "Basic dTpw")),
        )
        .await;
    assert_error(&resp, 401, "unauthorized", "Basic auth header");

    // A token minted with the right secret and a future expiry works: the kit mints like the api.
    let minted = mint_token(&secret, id, 600);
    let resp = api.with_token(&minted).get("/v1/users/me").await;
    assert_status(&resp, 200, "self-minted valid token");
    assert_eq!(resp.1["id"], json!(id));
}

#[tokio::test]
async fn logout_revokes_only_that_token() {
    let stack = stack().await;
    let api = stack.api();
    let name = unique_username("out");
    let (_, first) = api.register(&name, "password1").await;
    let (_, second) = api.login(&name, "password1").await;

    let resp = api.with_token(&first).post_empty("/v1/auth/logout").await;
    assert_status(&resp, 204, "logout");
    let resp = api.with_token(&first).get("/v1/users/me").await;
    assert_error(&resp, 401, "unauthorized", "me with a revoked token");
    let resp = api.with_token(&first).post_empty("/v1/auth/logout").await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "logout again with the revoked token",
    );
    let resp = api.with_token(&second).get("/v1/users/me").await;
    assert_status(&resp, 200, "the other session's token still works");
}

#[tokio::test]
async fn unknown_routes_methods_and_large_bodies() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("routes").await;
    let authed = api.as_user(&user);

    let resp = authed.get("/v1/nope").await;
    assert_error(&resp, 404, "not_found", "unknown route");
    let resp = api.get("/nope").await;
    assert_error(&resp, 404, "not_found", "unknown route outside /v1");
    let resp = api.get("/v1/auth/login").await;
    assert_error(&resp, 405, "method_not_allowed", "GET on the login route");
    let resp = authed.delete("/v1/users/me").await;
    assert_error(&resp, 405, "method_not_allowed", "DELETE /v1/users/me");

    let big = format!(
        "{{\"username\":\"{}\",\"password\":\"{}\"}}",
        unique_username("big"),
        "p".repeat(1024 * 1024 + 16)
    );
    let resp = api.post_raw("/v1/auth/register", &big).await;
    assert_error(&resp, 413, "too_large", "body over 1 MiB");
}

#[tokio::test]
async fn health_ready_and_metrics() {
    let stack = stack().await;
    let api = ApiClient::new(&stack.api_url());
    let resp = api.get("/healthz").await;
    assert_status(&resp, 200, "healthz");
    let resp = api.get("/readyz").await;
    assert_status(&resp, 200, "readyz");
    let resp = api.get("/metrics").await;
    assert_status(&resp, 200, "metrics");
    assert!(resp.1.is_string(), "metrics is Prometheus text: {}", resp.1);
}

#[tokio::test]
async fn internal_presence_needs_a_service_token() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("int").await;
    let body = json!({"user_id": user.id, "status": "online"});
    let resp = api
        .as_user(&user)
        .post("/internal/v1/presence", &body)
        .await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "internal presence with a user token",
    );
    let resp = api.post("/internal/v1/presence", &body).await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "internal presence without a token",
    );
    let service = api.with_token(&service_token(stack.jwt_secret(), "gw-test"));
    let resp = service.post("/internal/v1/presence", &body).await;
    assert_status(&resp, 204, "internal presence with a service token");
    let resp = service
        .post(
            "/internal/v1/presence",
            &json!({"user_id": user.id, "status": "away"}),
        )
        .await;
    assert_error(&resp, 400, "invalid_input", "unknown presence status");
}

#[tokio::test]
async fn api_exits_cleanly_on_sigterm() {
    let mut stack = stack().await;
    let status = stack.terminate_api().await;
    assert!(
        status.success(),
        "chat-api exit status after SIGTERM: {status}"
    );
}

/// Base64url without padding (for hand-made JWTs).
fn base64url(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[test]
fn base64url_matches_known_values() {
    assert_eq!(
        base64url("{\"alg\":\"none\",\"typ\":\"JWT\"}"),
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"
    );
    assert_eq!(base64url("ab"), "YWI");
    assert_eq!(base64url("abcd"), "YWJjZA");
}
