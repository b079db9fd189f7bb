//! End to end over two gateway processes: message fan-out, read receipts, typing, membership.

use std::time::{Duration, Instant};

use chat_testkit::{
    QUIET, Stack, StackOptions, Value, WAIT, WsClient, assert_status, id_of, json, metric_value,
    metrics_page, unique_client_msg_id,
};

async fn stack() -> Stack {
    Stack::start(StackOptions::gateways(2)).await
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == json!(kind)).collect()
}

/// Reads `new_message` events until `n` arrived (or WAIT passed), then listens for QUIET more to
/// catch duplicates; returns every `new_message` seen.
async fn collect_new_messages(ws: &mut WsClient, n: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < n && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = ws.recv_json_opt(left).await else {
            break;
        };
        if frame["type"] == json!("new_message") {
            got.push(frame);
        }
    }
    let extra = ws.collect_for(QUIET).await;
    got.extend(of_type(&extra, "new_message").into_iter().cloned());
    got
}

fn message_ids(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| id_of(&e["message"], "id")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_over_ws_reaches_every_socket_once_across_gateways() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("fa").await;
    let b = api.new_user("fb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");

    let mut a1 = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A1@gw1");
    let mut a2 = WsClient::authed(&stack.gateway_ws_url(1), &a.token)
        .await
        .labeled("A2@gw2");
    let mut b1 = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B1@gw2");
    let mut b2 = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B2@gw2");

    let cmid = unique_client_msg_id("fan");
    let ack = a1
        .request(
            &json!({"type": "send", "id": "s1", "chat_id": chat,
                    "client_msg_id": cmid, "text": "hello B"}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    let msg_id = id_of(&ack["message"], "id");
    assert_eq!(ack["message"]["text"], json!("hello B"));

    for ws in [&mut b1, &mut b2, &mut a2] {
        let events = collect_new_messages(ws, 1).await;
        assert_eq!(
            message_ids(&events),
            vec![msg_id],
            "[{}] exactly one new_message with the acked id: {events:?}",
            ws.label()
        );
        let m = &events[0]["message"];
        assert_eq!(
            m,
            &ack["message"],
            "[{}] event carries the acked message",
            ws.label()
        );
    }
    // The sending socket may or may not get its own event, but never twice.
    let own = of_type(&a1.collect_for(QUIET).await, "new_message").len();
    assert!(own <= 1, "A1 got its own message {own} times");

    // A retry of the same client_msg_id acks the stored message and announces nothing new.
    let retry = a1
        .request(
            &json!({"type": "send", "id": "s2", "chat_id": chat,
                    "client_msg_id": cmid, "text": "hello B"}),
            WAIT,
        )
        .await;
    assert_eq!(retry["type"], json!("ack"), "{retry}");
    assert_eq!(
        retry["message"]["id"],
        json!(msg_id),
        "retry acks the stored message"
    );
    for ws in [&mut b1, &mut b2, &mut a2] {
        let events = collect_new_messages(ws, 0).await;
        assert!(
            events.is_empty(),
            "[{}] a retry was announced again: {events:?}",
            ws.label()
        );
    }

    // B reads over WS: every member's sockets get message_read, B's included.
    let ack = b1
        .request(
            &json!({"type": "read", "id": "rd", "chat_id": chat, "up_to_seq": 1}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    let want = json!({"type": "message_read", "chat_id": chat, "user_id": b.id, "up_to_seq": 1});
    for ws in [&mut a1, &mut a2, &mut b2] {
        let mut event = ws.recv_until("message_read", WAIT).await;
        let cursor = event.as_object_mut().and_then(|e| e.remove("cursor"));
        assert!(
            cursor.as_ref().and_then(Value::as_str).is_some(),
            "[{}] message_read carries a cursor: {event}",
            ws.label()
        );
        assert_eq!(event, want, "[{}] message_read", ws.label());
        ws.expect_no_frame_of_type("message_read", QUIET).await;
    }

    // A read that does not move the watermark sends nothing.
    let resp = api
        .as_user(&b)
        .post(&format!("/v1/chats/{chat}/read"), &json!({"up_to_seq": 1}))
        .await;
    assert_status(&resp, 204, "read again");
    a1.expect_no_frame_of_type("message_read", QUIET).await;

    // A REST send from B reaches all four sockets.
    let sent = api
        .as_user(&b)
        .send_text(chat, &unique_client_msg_id("rest"), "via rest")
        .await;
    for ws in [&mut a1, &mut a2, &mut b1, &mut b2] {
        let events = collect_new_messages(ws, 1).await;
        assert_eq!(
            message_ids(&events),
            vec![id_of(&sent, "id")],
            "[{}] REST-sent message once",
            ws.label()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_five_gets_every_message_once_in_order() {
    let stack = stack().await;
    let api = stack.api();
    let users = api.new_users("g5", 5).await;
    let ids: Vec<u64> = users.iter().map(|u| u.id).collect();
    let chat = id_of(
        &api.as_user(&users[0]).group_chat("five", &ids[1..]).await,
        "id",
    );

    // Six sockets: users alternate gateways, the last user has one socket on each.
    let mut sockets = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let gw = i % 2;
        let ws = WsClient::authed(&stack.gateway_ws_url(gw), &user.token)
            .await
            .labeled(&format!("u{i}@gw{}", gw + 1));
        sockets.push(ws);
    }
    sockets.push(
        WsClient::authed(&stack.gateway_ws_url(1), &users[4].token)
            .await
            .labeled("u4@gw2"),
    );

    let mut sent = Vec::new();
    for k in 0..10 {
        let sender = api.as_user(&users[k % 5]);
        let msg = sender
            .send_text(chat, &unique_client_msg_id("g5"), &format!("msg {k}"))
            .await;
        assert_eq!(msg["seq"], json!(k as u64 + 1));
        sent.push(id_of(&msg, "id"));
    }
    for ws in sockets.iter_mut() {
        let events = collect_new_messages(ws, 10).await;
        assert_eq!(
            message_ids(&events),
            sent,
            "[{}] all ten, once each, in seq order",
            ws.label()
        );
        let seqs: Vec<u64> = events.iter().map(|e| id_of(&e["message"], "seq")).collect();
        assert_eq!(
            seqs,
            (1..=10).collect::<Vec<u64>>(),
            "[{}] seqs",
            ws.label()
        );
    }
    // Each gateway read each message once from the chat's channel, not once per member it
    // holds (three users each: 60 in all). The embedded stack runs both gateways in one process,
    // whose metrics every listener shows.
    let pages = if stack.is_embedded() {
        vec![stack.gateway_http_url(0)]
    } else {
        vec![stack.gateway_http_url(0), stack.gateway_http_url(1)]
    };
    let mut from_chats = 0.0;
    for page in &pages {
        let series = "chat_gateway_bus_messages_total{channel=\"chat\"}";
        from_chats += metric_value(&metrics_page(page).await, series)
            .unwrap_or_else(|| panic!("{series} missing from {page}/metrics"));
    }
    assert!(
        (20.0..30.0).contains(&from_chats),
        "two gateways read {from_chats} messages from chat channels for 10 group messages"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typing_goes_to_the_others_only() {
    let stack = stack().await;
    let api = stack.api();
    let users = api.new_users("ty", 3).await;
    let (a, b, c) = (&users[0], &users[1], &users[2]);
    let chat = id_of(
        &api.as_user(a).group_chat("typing", &[b.id, c.id]).await,
        "id",
    );
    let mut a1 = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A1");
    let mut a2 = WsClient::authed(&stack.gateway_ws_url(1), &a.token)
        .await
        .labeled("A2");
    let mut wb = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B");
    let mut wc = WsClient::authed(&stack.gateway_ws_url(0), &c.token)
        .await
        .labeled("C");

    // Three typing frames in a burst: forwarded once (one per chat per 2 s per socket).
    let burst_start = Instant::now();
    for _ in 0..3 {
        a1.send_json(&json!({"type": "typing", "chat_id": chat}))
            .await;
    }
    let want = json!({"type": "typing", "chat_id": chat, "user_id": a.id});
    for ws in [&mut wb, &mut wc] {
        let event = ws.recv_until("typing", WAIT).await;
        assert_eq!(event, want, "[{}] typing event", ws.label());
    }
    for ws in [&mut wb, &mut wc] {
        ws.expect_no_frame_of_type("typing", Duration::from_millis(1000))
            .await;
    }
    a1.expect_no_frame_of_type("typing", QUIET).await;
    a2.expect_no_frame_of_type("typing", Duration::from_millis(100))
        .await;

    // After the 2 s window, the next one is forwarded again.
    let left = Duration::from_millis(2100).saturating_sub(burst_start.elapsed());
    tokio::time::sleep(left).await;
    a1.send_json(&json!({"type": "typing", "chat_id": chat}))
        .await;
    let event = wb.recv_until("typing", WAIT).await;
    assert_eq!(event, want, "typing after the throttle window");

    // The REST twin relays too.
    let resp = api
        .as_user(b)
        .post_empty(&format!("/v1/chats/{chat}/typing"))
        .await;
    assert_status(&resp, 204, "typing over REST");
    let want_b = json!({"type": "typing", "chat_id": chat, "user_id": b.id});
    assert_eq!(
        a1.recv_until("typing", WAIT).await,
        want_b,
        "A1 gets B's typing"
    );
    assert_eq!(
        a2.recv_until("typing", WAIT).await,
        want_b,
        "A2 gets B's typing"
    );
    wb.expect_no_frame_of_type("typing", QUIET).await;

    // Typing into a chat you are not in relays nothing.
    let other = id_of(&api.as_user(b).private_chat(c.id).await, "id");
    a1.send_json(&json!({"type": "typing", "chat_id": other}))
        .await;
    wb.expect_no_frame_of_type("typing", QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_changes_change_delivery() {
    let stack = stack().await;
    let api = stack.api();
    let users = api.new_users("mem", 3).await;
    let (owner, m, late) = (&users[0], &users[1], &users[2]);
    let as_owner = api.as_user(owner);
    let chat = id_of(&as_owner.group_chat("members", &[m.id]).await, "id");
    let mut wm = WsClient::authed(&stack.gateway_ws_url(1), &m.token)
        .await
        .labeled("M");
    let mut wl = WsClient::authed(&stack.gateway_ws_url(0), &late.token)
        .await
        .labeled("late");

    let first = as_owner
        .send_text(chat, &unique_client_msg_id("a"), "before")
        .await;
    assert_eq!(
        message_ids(&collect_new_messages(&mut wm, 1).await),
        vec![id_of(&first, "id")]
    );
    wl.expect_no_frame_of_type("new_message", QUIET).await;

    let resp = as_owner
        .post(
            &format!("/v1/chats/{chat}/members"),
            &json!({"user_id": late.id}),
        )
        .await;
    assert_status(&resp, 204, "add late");
    let resp = as_owner
        .delete(&format!("/v1/chats/{chat}/members/{}", m.id))
        .await;
    assert_status(&resp, 204, "remove m");
    let second = as_owner
        .send_text(chat, &unique_client_msg_id("b"), "after")
        .await;
    assert_eq!(
        message_ids(&collect_new_messages(&mut wl, 1).await),
        vec![id_of(&second, "id")],
        "an added member gets new messages"
    );
    let events = collect_new_messages(&mut wm, 0).await;
    assert!(events.is_empty(), "a removed member got {events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_come_after_commit() {
    let stack = stack().await;
    let api = stack.api();
    let a = api.new_user("ca").await;
    let b = api.new_user("cb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let mut wb = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B");
    let as_b = api.as_user(&b);

    let sender = api.as_user(&a);
    let sending = tokio::spawn(async move {
        for k in 0..20 {
            sender
                .send_text(chat, &format!("commit-{k}"), &format!("c{k}"))
                .await;
        }
    });
    // Whenever an event arrives, the message it announces is already readable.
    for _ in 0..20 {
        let event = wb.recv_until("new_message", WAIT).await;
        let seq = id_of(&event["message"], "seq");
        let resp = as_b
            .get(&format!(
                "/v1/chats/{chat}/messages?after_seq={}&limit=1",
                seq - 1
            ))
            .await;
        assert_status(&resp, 200, "fetch the announced message");
        assert_eq!(
            resp.1["messages"][0]["id"], event["message"]["id"],
            "seq {seq} was announced before it was readable: {}",
            resp.1
        );
    }
    sending.await.expect("sender");
}
