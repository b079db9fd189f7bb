//! Each abuse limit shown tripping: the per-user message bucket (429 on REST, an error frame on
//! WS, close 1008 on sustained abuse), login throttling, the per-address handshake rate and
//! connection cap, the per-user socket cap, the Origin allow-list, body size and JSON depth.
//! Limits are tuned low per test, and loopback is not exempt here.

use std::time::Duration;

use chat_testkit::raw::RawWs;
use chat_testkit::{
    Auth, Format, Stack, StackOptions, WAIT, WsClient, assert_error, assert_status, env_vars,
    id_of, json, unique_client_msg_id,
};
use reqwest::Method;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_rate_is_429_on_rest_then_error_frames_then_1008_on_ws() {
    let stack = Stack::start(StackOptions {
        api_env: env_vars(&[("CHAT_MSG_RATE_PER_SEC", "0.5"), ("CHAT_MSG_BURST", "3")]),
        gateway_env: env_vars(&[("CHAT_WS_ABUSE_STRIKES", "5")]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("rl_a").await;
    let bob = api.new_user("rl_b").await;
    let chat = api.as_user(&alice).private_chat(bob.id).await;
    let chat_id = id_of(&chat, "id");
    let path = format!("/v1/chats/{chat_id}/messages");

    for _ in 0..3 {
        api.as_user(&alice)
            .send_text(chat_id, &unique_client_msg_id("rl"), "hi")
            .await;
    }
    let body = json!({"client_msg_id": unique_client_msg_id("rl"), "text": "one too many"});
    let resp = api.as_user(&alice).post(&path, &body).await;
    assert_error(&resp, 429, "rate_limited", "fourth message in the burst");
    // Another user has a bucket of their own.
    api.as_user(&bob)
        .send_text(chat_id, &unique_client_msg_id("rl"), "bob is fine")
        .await;

    // The bucket is the same for the socket (it is kept in Redis, not per process).
    let (mut ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&alice.token),
        Format::Json,
    )
    .await;
    let reply = ws
        .request(
            &json!({"type": "send", "id": "w1", "chat_id": chat_id,
                    "client_msg_id": unique_client_msg_id("rl"), "text": "ws"}),
            WAIT,
        )
        .await;
    assert_eq!(reply["type"], json!("error"), "{reply}");
    assert_eq!(reply["code"], json!("rate_limited"), "{reply}");
    // Keep sending into the empty bucket: the gateway closes the socket with 1008.
    for n in 0..10 {
        let frame = json!({"type": "send", "id": format!("f{n}"), "chat_id": chat_id,
                           "client_msg_id": unique_client_msg_id("rl"), "text": "flood"});
        if ws.try_send_json(&frame).await.is_err() {
            break;
        }
    }
    ws.expect_close(1008, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_is_throttled_per_account_and_address() {
    let stack = Stack::start(StackOptions {
        api_env: env_vars(&[
            ("CHAT_LOGIN_MAX_FAILURES", "3"),
            ("CHAT_LOGIN_WINDOW_SECS", "60"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api().anonymous();
    let victim = stack.api().new_user("lt_v").await;
    let other = stack.api().new_user("lt_o").await;
    let wrong = json!({"username": victim.username, "password": "guess-guess"});
    for n in 0..3 {
        let resp = api.post("/v1/auth/login", &wrong).await;
        assert_error(&resp, 401, "unauthorized", &format!("wrong password {n}"));
    }
    let resp = api.post("/v1/auth/login", &wrong).await;
    assert_error(&resp, 429, "rate_limited", "after 3 failures");
    // Even the right password is refused while the account is throttled from this address.
    let right = json!({"username": victim.username, "password": victim.password});
    let resp = api.post("/v1/auth/login", &right).await;
    assert_error(&resp, 429, "rate_limited", "right password while throttled");
    // Another account from the same address is not affected.
    let resp = api
        .post(
            "/v1/auth/login",
            &json!({"username": other.username, "password": other.password}),
        )
        .await;
    assert_status(&resp, 200, "another account");
    // Unknown usernames are counted too (no hint that they do not exist).
    let ghost = json!({"username": "no_such_user_x", "password": "whatever1"});
    for _ in 0..3 {
        assert_error(
            &api.post("/v1/auth/login", &ghost).await,
            401,
            "unauthorized",
            "ghost",
        );
    }
    assert_error(
        &api.post("/v1/auth/login", &ghost).await,
        429,
        "rate_limited",
        "ghost throttled",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_rate_per_address_is_429() {
    let stack = Stack::start(StackOptions {
        gateway_env: env_vars(&[
            ("CHAT_LIMIT_EXEMPT_LOOPBACK", "false"),
            ("CHAT_IP_HANDSHAKES_PER_SEC", "0.1"),
            ("CHAT_IP_HANDSHAKE_BURST", "5"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let addr = stack.gateway_addr(0).to_string();
    let mut open = Vec::new();
    for n in 0..5 {
        let hs = RawWs::handshake(&addr, "/ws", &[])
            .await
            .expect("handshake");
        assert_eq!(hs.status, 101, "handshake {n}: {}", hs.head);
        open.push(hs.ws);
    }
    let hs = RawWs::handshake(&addr, "/ws", &[])
        .await
        .expect("handshake");
    assert_eq!(hs.status, 429, "sixth handshake: {}", hs.head);
    assert!(hs.head.contains("rate_limited"), "{}", hs.head);
    // Plain HTTP to the gateway (health) is not a handshake and still answers.
    let health = reqwest::get(format!("{}/healthz", stack.gateway_http_url(0)))
        .await
        .expect("healthz");
    assert_eq!(health.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_and_sockets_per_user_are_capped() {
    let stack = Stack::start(StackOptions {
        gateway_env: env_vars(&[
            ("CHAT_LIMIT_EXEMPT_LOOPBACK", "false"),
            ("CHAT_IP_MAX_CONNECTIONS", "3"),
            ("CHAT_MAX_SOCKETS_PER_USER", "2"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("cap_u").await;
    let url = stack.gateway_ws_url(0);
    let addr = stack.gateway_addr(0).to_string();

    // Per user: the third socket is refused (error frame, 1008); the first two keep working.
    let (mut first, _) = WsClient::connect_ok(&url, Auth::Header(&user.token), Format::Json).await;
    let (_second, _) = WsClient::connect_ok(&url, Auth::Header(&user.token), Format::Json).await;
    let mut third = WsClient::connect(&url, Auth::Header(&user.token), Format::Json)
        .await
        .expect("upgrade");
    let frame = third.recv_json(WAIT).await;
    assert_eq!(frame["type"], json!("error"), "{frame}");
    assert_eq!(frame["code"], json!("rate_limited"), "{frame}");
    third.expect_close(1008, WAIT).await;
    let pong = first
        .request(&json!({"type": "ping", "id": "p"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");

    // Per address: two sockets are open; one more fits, the next is 429. (The refused third
    // socket's slot was released when it closed.)
    tokio::time::sleep(Duration::from_millis(200)).await;
    let hs = RawWs::handshake(&addr, "/ws", &[])
        .await
        .expect("handshake");
    assert_eq!(
        hs.status, 101,
        "third connection from the address: {}",
        hs.head
    );
    let hs2 = RawWs::handshake(&addr, "/ws", &[])
        .await
        .expect("handshake");
    assert_eq!(hs2.status, 429, "fourth connection: {}", hs2.head);
    // Closing one frees its slot.
    drop(hs);
    let mut freed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let again = RawWs::handshake(&addr, "/ws", &[])
            .await
            .expect("handshake");
        if again.status == 101 {
            freed = true;
            break;
        }
    }
    assert!(freed, "a closed connection frees its slot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_allow_list_refuses_other_browsers() {
    let stack = Stack::start(StackOptions {
        gateway_env: env_vars(&[(
            "CHAT_ALLOWED_ORIGINS",
            "https://chat.example.com,https://app.example.com",
        )]),
        ..StackOptions::default()
    })
    .await;
    let addr = stack.gateway_addr(0).to_string();
    for (origin, status) in [
        (Some("https://evil.example.net"), 403),
        (Some("null"), 403),
        (Some("https://chat.example.com.evil.net"), 403),
        (Some("https://chat.example.com"), 101),
        (Some("https://app.example.com"), 101),
        (None, 101),
    ] {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("Origin", o)).into_iter().collect();
        let hs = RawWs::handshake(&addr, "/ws", &headers)
            .await
            .expect("handshake");
        assert_eq!(hs.status, status, "Origin {origin:?}: {}", hs.head);
        if status == 403 {
            assert!(hs.head.contains("forbidden"), "{}", hs.head);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_deeply_nested_input_is_refused() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let user = api.new_user("big").await;
    let as_user = api.as_user(&user);

    // REST: more than 1 MiB is 413; nesting beyond 32 levels is 400, as is a bomb of 100k.
    let big = format!(r#"{{"type":"group","title":"{}"}}"#, "a".repeat(1_100_000));
    let resp = as_user
        .request_raw(Method::POST, "/v1/chats", Some(big.into_bytes()), None)
        .await;
    assert_error(&resp, 413, "too_large", "1.1 MB body");
    for depth in [33usize, 100_000] {
        let nested = format!(
            r#"{{"type":"group","title":"t","x":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        let resp = as_user
            .request_raw(Method::POST, "/v1/chats", Some(nested.into_bytes()), None)
            .await;
        assert_error(
            &resp,
            400,
            "invalid_input",
            &format!("body nested {depth} deep"),
        );
    }
    let resp = as_user
        .request_raw(
            Method::POST,
            "/v1/auth/login",
            Some(format!("{}{}", "{\"a\":".repeat(5000), "1").into_bytes()),
            None,
        )
        .await;
    assert_error(&resp, 400, "invalid_input", "nested login body");

    // WebSocket: a deep frame is an error frame (the socket stays); a message beyond the
    // frame limit closes it with 1008.
    let (mut ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&user.token),
        Format::Json,
    )
    .await;
    let deep = format!(
        r#"{{"type":"ping","id":"d","x":{}0{}}}"#,
        "[".repeat(64),
        "]".repeat(64)
    );
    ws.send_text(&deep).await;
    let frame = ws.recv_json(WAIT).await;
    assert_eq!(frame["type"], json!("error"), "{frame}");
    assert_eq!(frame["code"], json!("invalid_input"), "{frame}");
    let pong = ws.request(&json!({"type": "ping", "id": "p"}), WAIT).await;
    assert_eq!(pong["type"], json!("pong"), "{pong}");
    ws.send_text(&format!(
        r#"{{"type":"ping","id":"{}"}}"#,
        "x".repeat(70_000)
    ))
    .await;
    ws.expect_close(1008, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_the_address_the_proxy_saw_not_the_clients_claim() {
    let stack = Stack::start(StackOptions {
        gateway_env: env_vars(&[
            ("CHAT_LIMIT_EXEMPT_LOOPBACK", "false"),
            ("CHAT_TRUST_FORWARDED_FOR", "true"),
            ("CHAT_IP_HANDSHAKES_PER_SEC", "0.1"),
            ("CHAT_IP_HANDSHAKE_BURST", "2"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let addr = stack.gateway_addr(0).to_string();
    // The proxy appended 203.0.113.9; whatever the client put before it does not count.
    for spoof in ["198.51.100.1", "198.51.100.2"] {
        let xff = format!("{spoof}, 203.0.113.9");
        let hs = RawWs::handshake(&addr, "/ws", &[("X-Forwarded-For", &xff)])
            .await
            .expect("handshake");
        assert_eq!(hs.status, 101, "{xff}: {}", hs.head);
    }
    let hs = RawWs::handshake(
        &addr,
        "/ws",
        &[("X-Forwarded-For", "10.9.9.9, 203.0.113.9")],
    )
    .await
    .expect("handshake");
    assert_eq!(
        hs.status, 429,
        "a rotated spoofed prefix does not reset the bucket"
    );
    // Another client behind the same proxy has its own bucket.
    let hs = RawWs::handshake(&addr, "/ws", &[("X-Forwarded-For", "203.0.113.10")])
        .await
        .expect("handshake");
    assert_eq!(hs.status, 101, "{}", hs.head);
}
