//! chat-gateway on its own: authentication, request frames, errors, limits, MessagePack, logout.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_testkit::{
    ApiClient, Auth, Format, Frame, QUIET, Stack, StackOptions, WAIT, WsClient, assert_error,
    assert_has_keys, assert_status, expired_token, forged_token, id_of, is_msgpack_map, json,
    unique_client_msg_id,
};

async fn stack() -> Stack {
    Stack::start(StackOptions::gateways(1)).await
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

async fn connect(url: &str, auth: Auth<'_>) -> WsClient {
    WsClient::connect(url, auth, Format::Json)
        .await
        .unwrap_or_else(|e| panic!("upgrade must succeed even for bad auth: {e:#}"))
}

/// The next frame must be `error`/`unauthorized`, then the close must be 4001.
async fn expect_unauthorized(ws: &mut WsClient, timeout: Duration) {
    let frame = ws.recv_json(timeout).await;
    assert_eq!(
        frame["type"],
        json!("error"),
        "[{}] frame before the close: {frame}",
        ws.label()
    );
    assert_eq!(
        frame["code"],
        json!("unauthorized"),
        "[{}] {frame}",
        ws.label()
    );
    assert!(
        frame["message"].is_string(),
        "error without message: {frame}"
    );
    ws.expect_close(4001, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_ways_to_authenticate() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("wsauth").await;
    let url = stack.gateway_ws_url(0);
    let mut sessions = Vec::new();
    for auth in [
        Auth::Header(&user.token),
        Auth::Query(&user.token),
        Auth::FirstFrame(&user.token),
    ] {
        let (mut ws, ok) = WsClient::connect_ok(&url, auth, Format::Json).await;
        assert_has_keys(&ok, &["type", "user_id", "session_id"], "auth_ok");
        assert_eq!(
            ok["user_id"],
            json!(user.id),
            "auth_ok user_id with {auth:?}"
        );
        assert!(
            ok["session_id"].as_str().is_some_and(|s| !s.is_empty()),
            "session_id with {auth:?}: {ok}"
        );
        let pong = ws.request(&json!({"type": "ping", "id": "p"}), WAIT).await;
        assert_eq!(pong["type"], json!("pong"), "{auth:?} session is usable");
        sessions.push(ok["session_id"].clone());
    }
    let mut unique = sessions.clone();
    unique.sort_by_key(|v| v.to_string());
    unique.dedup();
    assert_eq!(
        unique.len(),
        sessions.len(),
        "each socket gets its own session_id: {sessions:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_get_error_then_4001() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("wsbad").await;
    let url = stack.gateway_ws_url(0);
    let expired = expired_token(stack.jwt_secret(), user.id);
    let forged = forged_token(user.id);
    for (label, auth) in [
        ("garbage header", Auth::Header("garbage")),
        ("garbage query", Auth::Query("not.a.jwt")),
        ("garbage first frame", Auth::FirstFrame("xyz")),
        ("expired header", Auth::Header(&expired)),
        ("expired first frame", Auth::FirstFrame(&expired)),
        ("forged query", Auth::Query(&forged)),
        ("forged first frame", Auth::FirstFrame(&forged)),
    ] {
        let mut ws = connect(&url, auth).await.labeled(label);
        expect_unauthorized(&mut ws, WAIT).await;
    }
    // A first frame that is not `auth`.
    let mut ws = connect(&url, Auth::None).await.labeled("ping first");
    ws.send_json(&json!({"type": "ping", "id": "1"})).await;
    expect_unauthorized(&mut ws, WAIT).await;
    let mut ws = connect(&url, Auth::None).await.labeled("garbage first");
    ws.send_text("{not json").await;
    expect_unauthorized(&mut ws, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_timeout_closes_4001() {
    let stack = Stack::start(StackOptions {
        gateways: 1,
        auth_timeout_ms: Some(500),
        ..StackOptions::default()
    })
    .await;
    let url = stack.gateway_ws_url(0);
    let started = std::time::Instant::now();
    let mut ws = connect(&url, Auth::None).await.labeled("silent");
    expect_unauthorized(&mut ws, Duration::from_secs(3)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400),
        "closed after {took:?}, before the 500 ms auth timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_malformed_unknown_and_missing_fields() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("wsping").await;
    let mut ws = WsClient::authed(&stack.gateway_ws_url(0), &user.token).await;

    ws.send_json(&json!({"type": "ping"})).await;
    let pong = ws.recv_until("pong", WAIT).await;
    let ts = pong["ts"]
        .as_i64()
        .unwrap_or_else(|| panic!("pong.ts is not an integer: {pong}"));
    assert!(
        (ts - now_ms()).abs() < 60_000,
        "pong.ts {ts} is not ms since the epoch"
    );

    ws.send_text("{this is not json").await;
    let err = ws.recv_json(WAIT).await;
    assert_eq!(err["type"], json!("error"), "{err}");
    assert_eq!(err["code"], json!("invalid_input"), "malformed JSON: {err}");

    let err = ws
        .request(&json!({"type": "bogus", "id": "u1"}), WAIT)
        .await;
    assert_eq!(err["type"], json!("error"), "{err}");
    assert_eq!(err["code"], json!("invalid_input"), "unknown type: {err}");
    assert_eq!(err["id"], json!("u1"), "the readable id is echoed");

    let err = ws.request(&json!({"id": "u2", "chat_id": 1}), WAIT).await;
    assert_eq!(err["code"], json!("invalid_input"), "no type: {err}");

    let err = ws
        .request(
            &json!({"type": "send", "id": "u3", "client_msg_id": "c", "text": "x"}),
            WAIT,
        )
        .await;
    assert_eq!(err["type"], json!("error"));
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "send without chat_id: {err}"
    );
    let err = ws
        .request(&json!({"type": "read", "id": "u4", "chat_id": 1}), WAIT)
        .await;
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "read without up_to_seq: {err}"
    );
    // The auth frame has no request id in the contract, so only the code is checked.
    ws.send_json(&json!({"type": "auth", "token": user.token}))
        .await;
    let err = ws.recv_until("error", WAIT).await;
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "auth after auth: {err}"
    );

    ws.send_binary(b"{\"type\":\"ping\"}".to_vec()).await;
    let err = ws.recv_json(WAIT).await;
    assert_eq!(
        err["type"],
        json!("error"),
        "binary frame in a JSON session: {err}"
    );
    assert_eq!(err["code"], json!("invalid_input"), "{err}");

    // Still usable after all of that, and WebSocket pings are answered.
    ws.send_ping(b"hi".to_vec()).await;
    let pong = ws.request(&json!({"type": "ping", "id": 7}), WAIT).await;
    assert_eq!(pong["type"], json!("pong"));
    assert_eq!(pong["id"], json!(7), "a numeric id is echoed unchanged");
    ws.expect_no_frame_of_type("error", QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_closes_1008() {
    let stack = stack().await;
    let api = stack.api();
    let user = api.new_user("wsbig").await;
    let url = stack.gateway_ws_url(0);
    let mut ws = WsClient::authed(&url, &user.token).await.labeled("big");
    // A frame just under the limit is fine (it is just an invalid send).
    let text = "x".repeat(60 * 1024);
    let reply = ws
        .request(
            &json!({"type": "send", "id": "ok", "chat_id": 999_999_999, "client_msg_id": "b", "text": text}),
            WAIT,
        )
        .await;
    assert_eq!(reply["type"], json!("error"), "{reply}");
    let big = format!(
        "{{\"type\":\"send\",\"id\":\"big\",\"chat_id\":1,\"client_msg_id\":\"b\",\"text\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    ws.send_text(&big).await;
    ws.expect_close(1008, WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_and_read_get_acks() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("wsa").await;
    let b = api.new_user("wsb").await;
    let outsider = api.new_user("wsx").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let mut ws = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A");
    let cmid = unique_client_msg_id("ws");

    let ack = ws
        .request(
            &json!({"type": "send", "id": "r1", "chat_id": chat, "client_msg_id": cmid, "text": " hi "}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    assert_eq!(ack["id"], json!("r1"));
    let msg = &ack["message"];
    assert_has_keys(
        msg,
        &[
            "id",
            "chat_id",
            "seq",
            "sender_id",
            "type",
            "text",
            "attachment",
            "reply_to_id",
            "client_msg_id",
            "created_at",
        ],
        "ack.message",
    );
    assert_eq!(msg["chat_id"], json!(chat));
    assert_eq!(msg["seq"], json!(1));
    assert_eq!(msg["sender_id"], json!(a.id));
    assert_eq!(msg["text"], json!("hi"));
    assert_eq!(msg["client_msg_id"], json!(cmid));
    let msg_id = id_of(msg, "id");

    // The REST view has it.
    let page = api
        .as_user(&b)
        .get(&format!("/v1/chats/{chat}/messages"))
        .await;
    assert_status(&page, 200, "messages");
    assert_eq!(page.1["messages"][0]["id"], json!(msg_id));

    // A retry acks the stored message.
    let again = ws
        .request(
            &json!({"type": "send", "id": "r2", "chat_id": chat, "client_msg_id": cmid, "text": "other"}),
            WAIT,
        )
        .await;
    assert_eq!(again["type"], json!("ack"), "{again}");
    assert_eq!(again["id"], json!("r2"));
    assert_eq!(
        again["message"]["id"],
        json!(msg_id),
        "retry acks the same message"
    );
    assert_eq!(again["message"]["text"], json!("hi"));

    // A reply.
    let reply = ws
        .request(
            &json!({"type": "send", "id": "r3", "chat_id": chat, "client_msg_id": "re",
                    "text": "re", "reply_to_id": msg_id}),
            WAIT,
        )
        .await;
    assert_eq!(reply["type"], json!("ack"), "{reply}");
    assert_eq!(reply["message"]["reply_to_id"], json!(msg_id));

    // Read.
    let mut ws_b = WsClient::authed(&stack.gateway_ws_url(0), &b.token)
        .await
        .labeled("B");
    let ack = ws_b
        .request(
            &json!({"type": "read", "id": "r4", "chat_id": chat, "up_to_seq": 1}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    assert_eq!(ack["id"], json!("r4"));
    let view = api.as_user(&b).get(&format!("/v1/chats/{chat}")).await;
    assert_eq!(
        view.1["unread_count"],
        json!(1),
        "read over WS moved the watermark"
    );

    // Errors carry the request id and the HTTP codes.
    let err = ws
        .request(
            &json!({"type": "send", "id": "r5", "chat_id": chat, "client_msg_id": "blank", "text": "   "}),
            WAIT,
        )
        .await;
    assert_eq!(err["type"], json!("error"), "{err}");
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "blank text over WS: {err}"
    );
    let err = ws
        .request(
            &json!({"type": "send", "id": "r6", "chat_id": chat, "client_msg_id": "long",
                    "text": "é".repeat(5001)}),
            WAIT,
        )
        .await;
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "5001 chars over WS: {err}"
    );

    let other = id_of(&api.as_user(&b).private_chat(outsider.id).await, "id");
    let err = ws
        .request(
            &json!({"type": "send", "id": "r7", "chat_id": other, "client_msg_id": "x", "text": "x"}),
            WAIT,
        )
        .await;
    assert_eq!(err["type"], json!("error"), "{err}");
    assert_eq!(err["id"], json!("r7"));
    assert_eq!(
        err["code"],
        json!("not_found"),
        "send to a chat I am not in: {err}"
    );
    let err = ws
        .request(
            &json!({"type": "read", "id": "r8", "chat_id": other, "up_to_seq": 1}),
            WAIT,
        )
        .await;
    assert_eq!(
        err["code"],
        json!("not_found"),
        "read of a chat I am not in: {err}"
    );
    assert_eq!(err["id"], json!("r8"));
    let page = api
        .as_user(&b)
        .get(&format!("/v1/chats/{other}/messages"))
        .await;
    assert_eq!(
        page.1["messages"],
        json!([]),
        "nothing was stored in the foreign chat"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msgpack_round_trip() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("mpa").await;
    let b = api.new_user("mpb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let url = stack.gateway_ws_url(0);

    // auth_ok arrives as a binary MessagePack map (checked by the client in msgpack mode).
    let (mut ws_b, ok_b) = WsClient::connect_ok(&url, Auth::Query(&b.token), Format::Msgpack).await;
    assert_eq!(ok_b["user_id"], json!(b.id));
    let (mut ws_a, ok_a) =
        WsClient::connect_ok(&url, Auth::FirstFrame(&a.token), Format::Msgpack).await;
    assert_eq!(ok_a["type"], json!("auth_ok"));
    assert!(ok_a["session_id"].is_string());

    let ack = ws_a
        .request(
            &json!({"type": "send", "id": "m1", "chat_id": chat, "client_msg_id": "mp", "text": "packed"}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    assert_eq!(ack["message"]["text"], json!("packed"));
    assert_eq!(
        ack["message"]["chat_id"],
        json!(chat),
        "ids are integers in msgpack too"
    );
    let event = ws_b.recv_until("new_message", WAIT).await;
    assert_eq!(event["message"]["id"], ack["message"]["id"]);
    assert_eq!(event["message"]["text"], json!("packed"));
    assert!(event["message"]["created_at"].is_string());

    let pong = ws_b
        .request(&json!({"type": "ping", "id": "p"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"));

    // A text frame in a msgpack session gets an invalid_input error (as a binary frame).
    ws_b.send_text("{\"type\":\"ping\"}").await;
    let err = ws_b.recv_until("error", WAIT).await;
    assert_eq!(err["type"], json!("error"), "{err}");
    assert_eq!(err["code"], json!("invalid_input"), "{err}");
    // Garbage binary.
    ws_b.send_binary(vec![0xc1, 0x00, 0xff]).await;
    let err = ws_b.recv_until("error", WAIT).await;
    assert_eq!(
        err["code"],
        json!("invalid_input"),
        "bad MessagePack: {err}"
    );

    // The raw frame really is binary MessagePack.
    ws_a.send_json(&json!({"type": "ping", "id": "raw"})).await;
    match ws_a.recv_frame(WAIT).await {
        Some(Frame::Binary(bytes)) => assert!(is_msgpack_map(&bytes), "{bytes:02x?}"),
        other => panic!("expected a binary frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_closes_sockets_with_4001() {
    // Two gateways: the logout must reach every node.
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let user = api.new_user("wsout").await;
    let (_, other_token) = api.login(&user.username, &user.password).await;
    let url = stack.gateway_ws_url(0);
    let mut ws1 = WsClient::authed(&url, &user.token)
        .await
        .labeled("session 1 socket a@gw1");
    let mut ws2 = WsClient::authed(&stack.gateway_ws_url(1), &user.token)
        .await
        .labeled("session 1 socket b@gw2");
    let mut other = WsClient::authed(&url, &other_token)
        .await
        .labeled("session 2");

    let resp = api
        .with_token(&user.token)
        .post_empty("/v1/auth/logout")
        .await;
    assert_status(&resp, 204, "logout");
    ws1.expect_close(4001, WAIT).await;
    ws2.expect_close(4001, WAIT).await;

    // The other session stays open.
    let pong = other
        .request(&json!({"type": "ping", "id": "still"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"));

    // The revoked token is refused at auth, by every method.
    for auth in [
        Auth::Header(&user.token),
        Auth::Query(&user.token),
        Auth::FirstFrame(&user.token),
    ] {
        let mut ws = connect(&url, auth).await.labeled("revoked");
        expect_unauthorized(&mut ws, WAIT).await;
    }
    let resp = ApiClient::new(&stack.api_url())
        .with_token(&user.token)
        .get("/v1/users/me")
        .await;
    assert_error(&resp, 401, "unauthorized", "api with the revoked token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_http_routes_and_sigterm() {
    let mut stack = stack().await;
    let api = stack.api();
    let user = api.new_user("wsterm").await;
    let http = ApiClient::new(&stack.gateway_http_url(0));
    assert_status(&http.get("/healthz").await, 200, "gateway healthz");
    assert_status(&http.get("/readyz").await, 200, "gateway readyz");
    let metrics = http.get("/metrics").await;
    assert_status(&metrics, 200, "gateway metrics");
    assert!(metrics.1.is_string(), "metrics is text: {}", metrics.1);
    let resp = http.get("/nope").await;
    assert_error(&resp, 404, "not_found", "unknown gateway path");

    let mut ws = WsClient::authed(&stack.gateway_ws_url(0), &user.token)
        .await
        .labeled("draining");
    let status = {
        let terminate = stack.terminate_gateway(0);
        let close = ws.expect_close(1012, Duration::from_secs(10));
        let (status, _) = tokio::join!(terminate, close);
        status
    };
    assert!(
        status.success(),
        "gateway exit status after SIGTERM: {status}"
    );
}
