//! Malformed and hostile input: raw WebSocket frames a library would never send (invalid UTF-8,
//! unmasked, hand-fragmented), and SQL metacharacters and Unicode edge cases in every string
//! field, which must round-trip unchanged or get a clean 400.

use std::time::Duration;

use chat_testkit::raw::{OP_BINARY, OP_CONT, OP_PING, OP_TEXT, RawWs};
use chat_testkit::{
    Auth, Format, Stack, WAIT, WsClient, assert_error, assert_status, id_of, json,
    unique_client_msg_id,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_1007() {
    let stack = Stack::start_default().await;
    let user = stack.api().new_user("utf").await;
    let addr = stack.gateway_addr(0).to_string();
    let mut ws = RawWs::connect_authed(&addr, &user.token).await;
    ws.recv_type("auth_ok", WAIT).await;
    // An overlong encoding and a lone continuation byte: not UTF-8.
    ws.send_frame(
        true,
        OP_TEXT,
        b"{\"type\":\"ping\",\"id\":\"\xC0\xAF\x80\"}",
        true,
    )
    .await;
    assert_eq!(ws.expect_close(WAIT).await, 1007);

    // Also when the bad byte is split across fragments, and before authentication.
    let hs = RawWs::handshake(&addr, "/ws", &[])
        .await
        .expect("handshake");
    let mut ws = hs.ws.expect("101");
    ws.send_frame(false, OP_TEXT, b"{\"type\":\"auth\",\"token\":\"\xE2", true)
        .await;
    ws.send_frame(true, OP_CONT, b"\x28\xA1\"}", true).await;
    assert_eq!(ws.expect_close(WAIT).await, 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frames_are_a_protocol_error() {
    let stack = Stack::start_default().await;
    let user = stack.api().new_user("mask").await;
    let addr = stack.gateway_addr(0).to_string();
    let mut ws = RawWs::connect_authed(&addr, &user.token).await;
    ws.recv_type("auth_ok", WAIT).await;
    ws.send_frame(true, OP_TEXT, br#"{"type":"ping","id":"u"}"#, false)
        .await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);

    // Reserved opcodes and a fragmented control frame are protocol errors too.
    for (fin, opcode, what) in [
        (true, 0x3u8, "reserved opcode"),
        (false, OP_PING, "fragmented ping"),
    ] {
        let mut ws = RawWs::connect_authed(&addr, &user.token).await;
        ws.recv_type("auth_ok", WAIT).await;
        ws.send_frame(fin, opcode, b"x", true).await;
        assert_eq!(ws.expect_close(WAIT).await, 1002, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_frames_are_reassembled() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("frag_a").await;
    let bob = api.new_user("frag_b").await;
    let chat = api.as_user(&alice).private_chat(bob.id).await;
    let chat_id = id_of(&chat, "id");
    let addr = stack.gateway_addr(0).to_string();

    // The auth frame in three fragments with a ping between them (allowed by RFC 6455 5.4).
    let hs = RawWs::handshake(&addr, "/ws", &[])
        .await
        .expect("handshake");
    let mut ws = hs.ws.expect("101");
    let auth = format!(r#"{{"type":"auth","token":"{}"}}"#, alice.token);
    let (a, rest) = auth.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    ws.send_frame(false, OP_TEXT, a.as_bytes(), true).await;
    ws.send_frame(true, OP_PING, b"hello", true).await;
    ws.send_frame(false, OP_CONT, b.as_bytes(), true).await;
    ws.send_frame(true, OP_CONT, c.as_bytes(), true).await;
    let ok = ws.recv_type("auth_ok", WAIT).await;
    assert_eq!(ok["user_id"], json!(alice.id), "{ok}");

    // A send split inside a 4-byte character, byte by byte at the seam.
    let text = "split 😀 here";
    let frame = format!(
        r#"{{"type":"send","id":"s1","chat_id":{chat_id},"client_msg_id":"{}","text":"{text}"}}"#,
        unique_client_msg_id("fr")
    );
    let bytes = frame.as_bytes();
    let seam = frame.find('😀').expect("emoji") + 2;
    ws.send_frame(false, OP_TEXT, &bytes[..seam], true).await;
    ws.send_frame(false, OP_CONT, &bytes[seam..seam + 1], true)
        .await;
    ws.send_frame(true, OP_CONT, &bytes[seam + 1..], true).await;
    let ack = ws.recv_type("ack", WAIT).await;
    assert_eq!(ack["message"]["text"], json!(text), "{ack}");

    // A continuation without a start, and a new data frame inside a fragmented one, are
    // protocol errors.
    ws.send_frame(true, OP_CONT, b"orphan", true).await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);
    let mut ws = RawWs::connect_authed(&addr, &alice.token).await;
    ws.recv_type("auth_ok", WAIT).await;
    ws.send_frame(false, OP_TEXT, b"{\"type\":", true).await;
    ws.send_frame(true, OP_BINARY, b"\x80", true).await;
    assert_eq!(ws.expect_close(WAIT).await, 1002);
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Strings that break naive SQL, JSON or Unicode handling.
fn hostile_strings() -> Vec<&'static str> {
    vec![
        "'; DROP TABLE users; --",
        "\" OR \"1\"=\"1",
        "' OR 1=1 #",
        "\\'; SELECT SLEEP(5); -- \\",
        "%_%' UNION SELECT password_hash FROM users --",
        "NUL\u{0}inside",
        "\u{202E}RTL override\u{202C} and \u{05E9}\u{05DC}\u{05D5}\u{05DD}",
        "emoji 😀👩‍👩‍👧‍👦🏳️‍🌈",
        "combining e\u{0301}\u{0301}\u{0301} Z\u{0351}\u{0354}\u{0359}",
        "4-byte 𝄞 𠜎 🀄",
        "zero\u{200B}width\u{FEFF}bom",
        "\u{FFFD}\u{FFFF} noncharacters",
        "<script>alert(1)</script>",
        "line\r\nbreak\ttab",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_strings_round_trip_or_get_a_clean_400() {
    let stack = Stack::start_default().await;
    let api = stack.api();
    let alice = api.new_user("hs_a").await;
    let bob = api.new_user("hs_b").await;
    let as_a = api.as_user(&alice);
    let chat = as_a.group_chat("hostile", &[bob.id]).await;
    let chat_id = id_of(&chat, "id");
    let (mut bob_ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&bob.token),
        Format::Json,
    )
    .await;

    for (n, s) in hostile_strings().into_iter().enumerate() {
        // Message text, over REST: stored and returned exactly, and delivered exactly.
        let cmid = format!("{s}-{n}");
        let resp = as_a
            .post(
                &format!("/v1/chats/{chat_id}/messages"),
                &json!({"client_msg_id": cmid, "text": s}),
            )
            .await;
        assert_status(&resp, 201, &format!("send {s:?}"));
        assert_eq!(resp.1["message"]["text"], json!(s), "text {s:?}");
        assert_eq!(
            resp.1["message"]["client_msg_id"],
            json!(cmid),
            "cmid {s:?}"
        );
        let event = bob_ws
            .recv_matching(WAIT, "the hostile message", |f| {
                f["type"] == "new_message" && f["message"]["client_msg_id"] == json!(cmid)
            })
            .await;
        assert_eq!(event["message"]["text"], json!(s), "delivered {s:?}");

        // Chat title: set, then read back.
        let resp = as_a
            .patch(&format!("/v1/chats/{chat_id}"), &json!({"title": s}))
            .await;
        assert_status(&resp, 200, &format!("title {s:?}"));
        let got = as_a.get(&format!("/v1/chats/{chat_id}")).await;
        assert_eq!(got.1["title"], json!(s), "title read back {s:?}");

        // User search: whatever the query, 200 or 400, never 500, and no other user's data
        // through SQL wildcards.
        let q = percent_encode(s);
        let resp = as_a.get(&format!("/v1/users?q={q}")).await;
        assert!(
            resp.0 == 200 || resp.0 == 400,
            "search {s:?}: {} {}",
            resp.0,
            resp.1
        );
        if resp.0 == 400 {
            assert_error(&resp, 400, "invalid_input", "search");
        } else if let Some(users) = resp.1["users"].as_array() {
            assert!(
                users.len() <= 1,
                "a hostile query matched many users: {s:?} -> {}",
                resp.1
            );
        }

        // Username: only a-z 0-9 _ . - are allowed, so every hostile one is a clean 400.
        let resp = api
            .anonymous()
            .post(
                "/v1/auth/register",
                &json!({"username": s, "password": "password1"}),
            )
            .await;
        assert_error(&resp, 400, "invalid_input", &format!("username {s:?}"));

        // Password: any characters; a user registered with it can log in with it.
        let password = format!("{s}-pw-long-enough");
        let name = format!("hs_p{n}_{}", rand::random::<u32>());
        let resp = api
            .anonymous()
            .post(
                "/v1/auth/register",
                &json!({"username": name, "password": password}),
            )
            .await;
        if password.chars().count() <= 128 {
            assert_status(&resp, 201, &format!("password {s:?}"));
            let token = resp.1["token"].as_str().unwrap_or_default().to_string();
            // Email: kept as given (trimmed), or a clean 400.
            let email = format!("{s}@mail.example");
            let resp = api
                .anonymous()
                .post(
                    "/v1/auth/register",
                    &json!({"username": format!("{name}e"), "password": "password1",
                            "email": email}),
                )
                .await;
            if resp.0 == 400 {
                assert_error(&resp, 400, "invalid_input", &format!("email {s:?}"));
            } else {
                assert_status(&resp, 201, &format!("email {s:?}"));
                let me = api
                    .with_token(resp.1["token"].as_str().unwrap_or_default())
                    .get("/v1/users/me")
                    .await;
                assert_eq!(me.1["email"], json!(email.trim()), "email read back {s:?}");
            }
            assert!(!token.is_empty(), "register answered a token");
            let resp = api
                .anonymous()
                .post(
                    "/v1/auth/login",
                    &json!({"username": name, "password": password}),
                )
                .await;
            assert_status(&resp, 200, &format!("login with password {s:?}"));
        }
    }
    // The hostile strings did not hurt the schema: history reads back, in order.
    let messages = as_a.all_messages(chat_id).await;
    let texts: Vec<&str> = messages.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, hostile_strings(), "history in order and unchanged");

    // Over the socket, a hostile client_msg_id and text round-trip too.
    let (mut ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&alice.token),
        Format::Json,
    )
    .await;
    let s = "ws '; DROP TABLE messages; -- 😀\u{0}\u{202E}";
    let ack = ws
        .request(
            &json!({"type": "send", "id": "h", "chat_id": chat_id,
                    "client_msg_id": s, "text": s}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    assert_eq!(ack["message"]["text"], json!(s), "{ack}");
    assert_eq!(ack["message"]["client_msg_id"], json!(s), "{ack}");
    // Too long or empty is a clean error.
    let reply = ws
        .request(
            &json!({"type": "send", "id": "long", "chat_id": chat_id,
                    "client_msg_id": "x", "text": "😀".repeat(5001)}),
            WAIT,
        )
        .await;
    assert_eq!(reply["code"], json!("invalid_input"), "{reply}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}
