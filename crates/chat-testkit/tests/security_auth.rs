//! Break-in tests for authentication: every endpoint without a token, tokens that must not
//! work (forged, `alg: none`, wrong key, expired, not yet valid, wrong iss/aud, unknown kid,
//! revoked), asymmetric keys with public-key-only gateways, key rotation by kid, the internal
//! key, logout reaching every gateway within a second, and chats of other users (404, no data).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chat_testkit::{
    ApiClient, Auth, Format, Stack, StackOptions, TokenSpec, WAIT, WsClient, alg_none_token,
    assert_error, assert_status, custom_token, env_vars, forged_token, id_of, json, rs256_token,
    service_token, unique_client_msg_id,
};
use reqwest::Method;

fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../chat-auth/testdata")
        .join(name)
}

fn key_path(name: &str) -> String {
    key_file(name).display().to_string()
}

fn read_key(name: &str) -> Vec<u8> {
    std::fs::read(key_file(name)).unwrap_or_else(|e| panic!("reading test key {name}: {e}"))
}

/// Every route of the contract, with a body where one is needed.
fn all_routes() -> Vec<(Method, &'static str)> {
    vec![
        (Method::GET, "/v1/users/me"),
        (Method::GET, "/v1/users?q=ab"),
        (Method::GET, "/v1/contacts"),
        (Method::PUT, "/v1/contacts/1"),
        (Method::DELETE, "/v1/contacts/1"),
        (Method::POST, "/v1/chats"),
        (Method::GET, "/v1/chats"),
        (Method::GET, "/v1/chats/1"),
        (Method::PATCH, "/v1/chats/1"),
        (Method::GET, "/v1/chats/1/members"),
        (Method::POST, "/v1/chats/1/members"),
        (Method::DELETE, "/v1/chats/1/members/2"),
        (Method::POST, "/v1/chats/1/messages"),
        (Method::GET, "/v1/chats/1/messages"),
        (Method::POST, "/v1/chats/1/read"),
        (Method::POST, "/v1/chats/1/typing"),
        (Method::GET, "/v1/sync"),
        (Method::POST, "/v1/auth/logout"),
    ]
}

async fn call(api: &ApiClient, method: &Method, path: &str) -> chat_testkit::Resp {
    let body = matches!(*method, Method::POST | Method::PATCH | Method::PUT).then(|| json!({}));
    api.request(method.clone(), path, body.as_ref()).await
}

/// The next frame must be an `unauthorized` error, then the close must be 4001.
async fn expect_ws_refused(url: &str, token: &str, what: &str) {
    let mut ws = WsClient::connect(url, Auth::Header(token), Format::Json)
        .await
        .unwrap_or_else(|e| panic!("{what}: upgrade must succeed even for bad auth: {e:#}"))
        .labeled(what);
    let frame = ws.recv_json(WAIT).await;
    assert_eq!(frame["type"], json!("error"), "{what}: {frame}");
    assert_eq!(frame["code"], json!("unauthorized"), "{what}: {frame}");
    ws.expect_close(4001, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_refuses_missing_and_bad_tokens() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let user = api.new_user("sa_all").await;
    let secret = stack.jwt_secret().to_string();
    let id = user.id;

    let spec = TokenSpec::valid(id);
    let bad_tokens: Vec<(String, &str)> = vec![
        ("not.a.jwt".into(), "garbage"),
        (forged_token(id), "forged signature"),
        (alg_none_token(id), "alg none"),
        (
            rs256_token(&read_key("rsa1.key.pem"), &spec),
            "RS256 with a key the stack does not use",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    exp_in_secs: -600,
                    iat_offset_secs: -1200,
                    ..spec.clone()
                },
            ),
            "expired",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    nbf_in_secs: Some(600),
                    ..spec.clone()
                },
            ),
            "not yet valid (nbf)",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    iat_offset_secs: 600,
                    ..spec.clone()
                },
            ),
            "issued in the future (iat)",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    iss: "someone-else".into(),
                    ..spec.clone()
                },
            ),
            "wrong issuer",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    aud: "another-service".into(),
                    ..spec.clone()
                },
            ),
            "wrong audience",
        ),
        (
            custom_token(
                &secret,
                &TokenSpec {
                    kid: Some("unknown-kid".into()),
                    ..spec.clone()
                },
            ),
            "unknown kid",
        ),
        (service_token(&secret, "gw1"), "service token as a user"),
    ];

    for (method, path) in all_routes() {
        let resp = call(&api.anonymous(), &method, path).await;
        assert_error(
            &resp,
            401,
            "unauthorized",
            &format!("{method} {path} without a token"),
        );
        for (token, what) in &bad_tokens {
            let resp = call(&api.with_token(token), &method, path).await;
            assert_error(
                &resp,
                401,
                "unauthorized",
                &format!("{method} {path} with a {what} token"),
            );
        }
    }
    // The internal endpoint needs a service credential: none, or a user's token, is 401.
    let body = json!({"user_id": id, "status": "online"});
    let resp = api.anonymous().post("/internal/v1/presence", &body).await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "internal presence without credential",
    );
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

    // The same tokens on the gateway: an error frame, then 4001.
    let url = stack.gateway_ws_url(0);
    for (token, what) in &bad_tokens {
        expect_ws_refused(&url, token, what).await;
    }
    // A valid one, minted like the api does, works on both.
    let good = custom_token(&secret, &spec);
    assert_status(
        &api.with_token(&good).get("/v1/users/me").await,
        200,
        "valid",
    );
    WsClient::connect_ok(&url, Auth::Header(&good), Format::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_gateways_verify_with_the_public_key_only() {
    let internal = "internal-key-for-this-test-0123456789";
    let api_env = env_vars(&[
        ("CHAT_JWT_ALG", "RS256"),
        ("CHAT_JWT_PRIVATE_KEY_FILE", &key_path("rsa1.key.pem")),
        ("CHAT_JWT_PUBLIC_KEY_FILE", &key_path("rsa1.pub.pem")),
        ("CHAT_JWT_KID", "r1"),
        ("CHAT_INTERNAL_KEY", internal),
    ]);
    // The gateway gets no secret and no private key.
    let gateway_env = env_vars(&[
        ("CHAT_JWT_SECRET", ""),
        ("CHAT_JWT_ALG", "RS256"),
        ("CHAT_JWT_PUBLIC_KEY_FILE", &key_path("rsa1.pub.pem")),
        ("CHAT_JWT_KID", "r1"),
        ("CHAT_INTERNAL_KEY", internal),
    ]);
    let stack = Stack::start(StackOptions {
        gateways: 2,
        api_env,
        gateway_env,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("rs_a").await;
    let bob = api.new_user("rs_b").await;
    let header = jsonwebtoken::decode_header(&alice.token).expect("a JWT header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::RS256, "{header:?}");
    assert_eq!(header.kid.as_deref(), Some("r1"), "{header:?}");

    // Sockets on both gateways; bob sees alice come online, which needs the internal call
    // from the gateway to chat-api (with the internal key, as the gateway cannot sign).
    api.as_user(&alice)
        .put(&format!("/v1/contacts/{}", bob.id), None)
        .await;
    let (mut b, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(1),
        Auth::Header(&bob.token),
        Format::Json,
    )
    .await;
    let (_a, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&alice.token),
        Format::Json,
    )
    .await;
    let presence = b
        .recv_matching(WAIT, "alice online", |f| {
            f["type"] == "presence" && f["user_id"] == json!(alice.id)
        })
        .await;
    assert_eq!(presence["status"], json!("online"), "{presence}");

    // HS256 tokens, even signed with the old shared secret or with the public key as an HMAC
    // secret (algorithm confusion), are refused.
    let spec = TokenSpec {
        kid: Some("r1".into()),
        ..TokenSpec::valid(alice.id)
    };
    let pem = String::from_utf8(read_key("rsa1.pub.pem")).unwrap_or_default();
    for (token, what) in [
        (
            custom_token(stack.jwt_secret(), &spec),
            "HS256 with the shared secret",
        ),
        (custom_token(&pem, &spec), "HS256 keyed with the public key"),
        (alg_none_token(alice.id), "alg none"),
        (
            rs256_token(&read_key("rsa2.key.pem"), &spec),
            "RS256 with another private key",
        ),
    ] {
        let resp = api.with_token(&token).get("/v1/users/me").await;
        assert_error(&resp, 401, "unauthorized", what);
        expect_ws_refused(&stack.gateway_ws_url(0), &token, what).await;
    }
    // The internal endpoint: the right key works, a wrong one does not.
    let body = json!({"user_id": alice.id, "status": "online"});
    let resp = api
        .anonymous()
        .request_raw(
            Method::POST,
            "/internal/v1/presence",
            Some(serde_json::to_vec(&body).unwrap_or_default()),
            Some(("x-chat-internal-key", "wrong")),
        )
        .await;
    assert_error(&resp, 401, "unauthorized", "wrong internal key");
    let resp = api
        .anonymous()
        .request_raw(
            Method::POST,
            "/internal/v1/presence",
            Some(serde_json::to_vec(&body).unwrap_or_default()),
            Some(("x-chat-internal-key", internal)),
        )
        .await;
    assert_status(&resp, 204, "right internal key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_by_kid_accepts_both_keys_then_only_the_new_one() {
    let rotating = env_vars(&[
        ("CHAT_JWT_KID", "k2"),
        (
            "CHAT_JWT_PREVIOUS_SECRET",
            "the-previous-secret-0123456789abcdef",
        ),
        ("CHAT_JWT_PREVIOUS_KID", "k1"),
    ]);
    let stack = Stack::start(StackOptions {
        api_env: rotating.clone(),
        gateway_env: rotating,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("rot").await;
    let url = stack.gateway_ws_url(0);

    let old = custom_token(
        "the-previous-secret-0123456789abcdef",
        &TokenSpec {
            kid: Some("k1".into()),
            ..TokenSpec::valid(user.id)
        },
    );
    assert_status(
        &api.with_token(&old).get("/v1/users/me").await,
        200,
        "k1 token",
    );
    WsClient::connect_ok(&url, Auth::Header(&old), Format::Json).await;
    // New tokens are signed with the current key under k2.
    assert_status(
        &api.as_user(&user).get("/v1/users/me").await,
        200,
        "k2 token",
    );
    WsClient::connect_ok(&url, Auth::Header(&user.token), Format::Json).await;
    // A kid must match its key: the old secret under k2, or the new one under k1, is refused.
    for (secret, kid, what) in [
        (
            "the-previous-secret-0123456789abcdef",
            "k2",
            "old secret under k2",
        ),
        (stack.jwt_secret(), "k1", "new secret under k1"),
    ] {
        let token = custom_token(
            secret,
            &TokenSpec {
                kid: Some(kid.into()),
                ..TokenSpec::valid(user.id)
            },
        );
        assert_error(
            &api.with_token(&token).get("/v1/users/me").await,
            401,
            "unauthorized",
            what,
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_that_session_on_every_gateway_within_a_second() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let user = api.new_user("sa_out").await;
    let (_, other_token) = api.login(&user.username, &user.password).await;
    let mut sockets = Vec::new();
    for gw in 0..2 {
        for n in 0..2 {
            let (ws, _) = WsClient::connect_ok(
                &stack.gateway_ws_url(gw),
                Auth::Header(&user.token),
                Format::Json,
            )
            .await;
            sockets.push(ws.labeled(&format!("gw{gw}-{n}")));
        }
    }
    let (mut survivor, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(1),
        Auth::Header(&other_token),
        Format::Json,
    )
    .await;

    let started = Instant::now();
    let resp = api.as_user(&user).post_empty("/v1/auth/logout").await;
    assert_status(&resp, 204, "logout");
    for ws in &mut sockets {
        let left = Duration::from_secs(1).saturating_sub(started.elapsed());
        ws.expect_close(4001, left.max(Duration::from_millis(1)))
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "every socket of the session closed within 1 s (took {:?})",
        started.elapsed()
    );
    // The other session of the same user is untouched.
    let pong = survivor
        .request(&json!({"type": "ping", "id": "p"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");
    // The revoked token is refused everywhere from now on.
    for gw in 0..2 {
        expect_ws_refused(&stack.gateway_ws_url(gw), &user.token, "revoked").await;
    }
    assert_error(
        &api.as_user(&user).get("/v1/users/me").await,
        401,
        "unauthorized",
        "revoked token on REST",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_chat_is_404_and_never_the_data() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("own_a").await;
    let bob = api.new_user("own_b").await;
    let mallory = api.new_user("own_m").await;
    let chat = api
        .as_user(&alice)
        .group_chat("secret plans", &[bob.id])
        .await;
    let chat_id = id_of(&chat, "id");
    let secret_text = "the vault code is 4711";
    api.as_user(&alice)
        .send_text(chat_id, &unique_client_msg_id("sa"), secret_text)
        .await;

    let as_m = api.as_user(&mallory);
    let probes: Vec<(Method, String, Option<serde_json::Value>)> = vec![
        (Method::GET, format!("/v1/chats/{chat_id}"), None),
        (Method::GET, format!("/v1/chats/{chat_id}/messages"), None),
        (Method::GET, format!("/v1/chats/{chat_id}/members"), None),
        (
            Method::POST,
            format!("/v1/chats/{chat_id}/messages"),
            Some(json!({"client_msg_id": "m1", "text": "hi"})),
        ),
        (
            Method::POST,
            format!("/v1/chats/{chat_id}/read"),
            Some(json!({"up_to_seq": 1})),
        ),
        (Method::POST, format!("/v1/chats/{chat_id}/typing"), None),
        (
            Method::PATCH,
            format!("/v1/chats/{chat_id}"),
            Some(json!({"title": "owned"})),
        ),
        (
            Method::POST,
            format!("/v1/chats/{chat_id}/members"),
            Some(json!({"user_id": mallory.id})),
        ),
        (
            Method::DELETE,
            format!("/v1/chats/{chat_id}/members/{}", bob.id),
            None,
        ),
    ];
    for (method, path, body) in probes {
        let resp = as_m.request(method.clone(), &path, body.as_ref()).await;
        assert_error(
            &resp,
            404,
            "not_found",
            &format!("{method} {path} by a stranger"),
        );
        let text = resp.1.to_string();
        assert!(
            !text.contains(secret_text) && !text.contains("secret plans"),
            "{method} {path} leaked data: {text}"
        );
    }
    // Nothing changed, and the chat is not in mallory's list or sync.
    let list = as_m.get("/v1/chats").await;
    assert!(!list.1.to_string().contains("secret plans"), "{}", list.1);
    let sync = as_m.get("/v1/sync").await;
    assert!(!sync.1.to_string().contains(secret_text), "{}", sync.1);
    let messages = api.as_user(&alice).all_messages(chat_id).await;
    assert_eq!(messages.len(), 1, "stranger's send must not land");

    // Over the socket: the same answer, no event of that chat reaches the stranger.
    let (mut ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&mallory.token),
        Format::Json,
    )
    .await;
    let reply = ws
        .request(
            &json!({"type": "send", "id": "s1", "chat_id": chat_id,
                    "client_msg_id": unique_client_msg_id("sa"), "text": "let me in"}),
            WAIT,
        )
        .await;
    assert_eq!(reply["type"], json!("error"), "{reply}");
    assert_eq!(reply["code"], json!("not_found"), "{reply}");
    api.as_user(&alice)
        .send_text(chat_id, &unique_client_msg_id("sa"), "more secrets")
        .await;
    ws.expect_no_frame_of_type("new_message", Duration::from_millis(500))
        .await;
}

/// The token id (`jti`) of a token, read without verifying it.
fn jti_of(token: &str) -> String {
    let mut validation = jsonwebtoken::Validation::default();
    validation.insecure_disable_signature_validation();
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b""),
        &validation,
    )
    .expect("readable claims");
    data.claims["jti"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_missed_while_the_subscription_was_down_is_caught_up() {
    // A private Redis, so dropping its pub/sub connections touches no one else's test.
    let redis = chat_testkit::chaos::PrivateRedis::start()
        .await
        .expect("private redis-server");
    let stack = Stack::start(StackOptions {
        redis: Some(redis.target()),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("missed").await;
    let (_, other_token) = api.login(&user.username, &user.password).await;
    let url = stack.gateway_ws_url(0);
    let (mut revoked_ws, _) =
        WsClient::connect_ok(&url, Auth::Header(&user.token), Format::Json).await;
    let (mut kept_ws, _) =
        WsClient::connect_ok(&url, Auth::Header(&other_token), Format::Json).await;

    // The revocation lands in Redis but its notice is never published (as if the gateway's
    // subscription had been down at that moment); then the subscription drops and comes back.
    let mut conn = chat_testkit::redis_target::connect(&redis.url())
        .await
        .expect("redis");
    let key = format!("{}:revoked:{}", stack.redis_prefix(), jti_of(&user.token));
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(1)
        .arg("PX")
        .arg(600_000)
        .query_async(&mut conn)
        .await
        .expect("SET");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");

    revoked_ws
        .recv_until("resync", Duration::from_secs(10))
        .await;
    revoked_ws.expect_close(4001, WAIT).await;
    kept_ws.recv_until("resync", WAIT).await;
    let pong = kept_ws
        .request(&json!({"type": "ping", "id": "p"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");
}
