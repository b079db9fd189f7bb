//! Client contract 1.1 end to end: delivered receipts, edit and delete over REST and WebSocket
//! (JSON and MessagePack), their events to every member, sync and resume replaying them, and the
//! gateway's coalescing of delivered frames under a burst.

use std::time::Duration;

use chat_testkit::{
    ApiClient, Auth, Format, QUIET, Stack, StackOptions, TestUser, Value, WAIT, WsClient,
    assert_error, assert_status, id_of, json,
};

async fn trio(api: &ApiClient) -> (TestUser, TestUser, TestUser) {
    (
        api.new_user("da").await,
        api.new_user("db").await,
        api.new_user("dc").await,
    )
}

/// `(last_read_seq, last_delivered_seq)` of `user` among the chat's members, as `viewer` sees them.
async fn watermarks(viewer: &ApiClient, chat: u64, user: u64) -> (u64, u64) {
    let resp = viewer.get(&format!("/v1/chats/{chat}/members")).await;
    assert_status(&resp, 200, "members");
    let member = resp.1["members"]
        .as_array()
        .and_then(|members| members.iter().find(|m| m["user_id"] == json!(user)))
        .unwrap_or_else(|| panic!("user {user} not among {}", resp.1))
        .clone();
    (
        id_of(&member, "last_read_seq"),
        id_of(&member, "last_delivered_seq"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_over_rest_moves_forward_only_and_reads_imply_it() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let (a, b, c) = trio(&api).await;
    let (alice, bob, carol) = (api.as_user(&a), api.as_user(&b), api.as_user(&c));
    let chat = id_of(&alice.private_chat(b.id).await, "id");
    for i in 0..4 {
        alice.send_text(chat, &format!("d{i}"), "hi").await;
    }
    let path = format!("/v1/chats/{chat}/delivered");
    assert_status(
        &bob.post(&path, &json!({"up_to_seq": 2})).await,
        204,
        "delivered 2",
    );
    assert_eq!(watermarks(&alice, chat, b.id).await, (0, 2));
    assert_status(
        &bob.post(&path, &json!({"up_to_seq": 1})).await,
        204,
        "delivered back",
    );
    assert_eq!(watermarks(&alice, chat, b.id).await, (0, 2), "never back");
    assert_status(
        &bob.post(&path, &json!({"up_to_seq": 99})).await,
        204,
        "beyond",
    );
    assert_eq!(
        watermarks(&alice, chat, b.id).await,
        (0, 4),
        "clamped to last_seq"
    );
    alice.send_text(chat, "d4", "more").await;
    assert_status(
        &bob.post(&format!("/v1/chats/{chat}/read"), &json!({"up_to_seq": 5}))
            .await,
        204,
        "read",
    );
    assert_eq!(
        watermarks(&alice, chat, b.id).await,
        (5, 5),
        "a read delivers"
    );
    // The chat object carries the same member fields.
    let listed = alice.get(&format!("/v1/chats/{chat}")).await;
    let members = listed.1["members"].as_array().cloned().unwrap_or_default();
    assert!(
        members
            .iter()
            .all(|m| m.get("last_delivered_seq").is_some_and(Value::is_u64)),
        "{}",
        listed.1
    );

    assert_error(
        &bob.post(&path, &json!({"up_to_seq": -1})).await,
        400,
        "invalid_input",
        "negative",
    );
    assert_error(
        &bob.post(&path, &json!({"up_to_seq": "x"})).await,
        400,
        "invalid_input",
        "not a number",
    );
    assert_error(
        &bob.post(&path, &json!({})).await,
        400,
        "invalid_input",
        "missing",
    );
    assert_error(
        &carol.post(&path, &json!({"up_to_seq": 1})).await,
        404,
        "not_found",
        "non-member",
    );
    assert_error(
        &bob.post("/v1/chats/999999999/delivered", &json!({"up_to_seq": 1}))
            .await,
        404,
        "not_found",
        "unknown chat",
    );
    assert_error(
        &api.anonymous().post(&path, &json!({"up_to_seq": 1})).await,
        401,
        "unauthorized",
        "no token",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_and_delete_over_rest_follow_the_rules() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let (a, b, c) = trio(&api).await;
    let (alice, bob, carol) = (api.as_user(&a), api.as_user(&b), api.as_user(&c));
    let dave = api.new_user("dd").await;
    // Bob owns the group.
    let group = id_of(&bob.group_chat("g", &[a.id, c.id]).await, "id");
    let other = id_of(&alice.private_chat(dave.id).await, "id");
    let first = alice.send_text(group, "e1", "helo").await;
    let first_id = id_of(&first, "id");
    let by_carol = id_of(&carol.send_text(group, "e2", "mine").await, "id");
    let elsewhere = id_of(&alice.send_text(other, "e3", "x").await, "id");
    let message = |id: u64| format!("/v1/chats/{group}/messages/{id}");

    let edited = alice
        .patch(&message(first_id), &json!({"text": "  hello  "}))
        .await;
    assert_status(&edited, 200, "edit");
    let m = &edited.1["message"];
    assert_eq!(m["text"], json!("hello"), "trimmed as a send is");
    assert_eq!(m["seq"], first["seq"]);
    assert!(m["edited_at"].is_string(), "{m}");
    assert!(m["deleted_at"].is_null(), "{m}");
    let history = bob.all_messages(group).await;
    assert_eq!(history[0]["text"], json!("hello"));

    assert_error(
        &bob.patch(&message(first_id), &json!({"text": "x"})).await,
        403,
        "forbidden",
        "edit by another member (even the owner)",
    );
    assert_error(
        &dave.api_patch(&api, &message(first_id)).await,
        404,
        "not_found",
        "edit by a non-member",
    );
    assert_error(
        &alice
            .patch(&message(elsewhere), &json!({"text": "x"}))
            .await,
        404,
        "not_found",
        "a message of another chat",
    );
    assert_error(
        &alice
            .patch(&message(999_999_999), &json!({"text": "x"}))
            .await,
        404,
        "not_found",
        "unknown message",
    );
    assert_error(
        &alice
            .patch(&message(first_id), &json!({"text": "   "}))
            .await,
        400,
        "invalid_input",
        "blank",
    );
    assert_error(
        &alice
            .patch(&message(first_id), &json!({"text": "é".repeat(5001)}))
            .await,
        400,
        "invalid_input",
        "too long",
    );
    assert_error(
        &alice.patch(&message(first_id), &json!({})).await,
        400,
        "invalid_input",
        "no text",
    );

    // Delete: another member may not; the group's owner may; the sender may.
    assert_error(
        &carol.delete(&message(first_id)).await,
        403,
        "forbidden",
        "delete by a member",
    );
    assert_status(&bob.delete(&message(by_carol)).await, 204, "owner deletes");
    assert_status(
        &alice.delete(&message(first_id)).await,
        204,
        "sender deletes",
    );
    assert_status(
        &alice.delete(&message(first_id)).await,
        204,
        "deleting again",
    );
    assert_error(
        &api.as_user(&dave).delete(&message(first_id)).await,
        404,
        "not_found",
        "delete by a non-member",
    );
    assert_error(
        &alice
            .patch(&message(first_id), &json!({"text": "back"}))
            .await,
        409,
        "conflict",
        "edit after delete",
    );
    let history = carol.all_messages(group).await;
    let seqs: Vec<u64> = history.iter().map(|m| id_of(m, "seq")).collect();
    assert_eq!(seqs, vec![1, 2], "tombstones keep their seq");
    for tomb in &history {
        assert!(tomb["deleted_at"].is_string(), "{tomb}");
        assert!(
            tomb["text"].is_null() && tomb["attachment"].is_null(),
            "{tomb}"
        );
    }
    let next = alice.send_text(group, "e4", "after").await;
    assert_eq!(next["seq"], json!(3), "no seq is reused");
    // The chat list shows the last message as it now is.
    assert_status(
        &alice.delete(&message(id_of(&next, "id"))).await,
        204,
        "delete last",
    );
    let chats = carol.get("/v1/chats").await;
    let listed = chats.1["chats"]
        .as_array()
        .and_then(|chats| chats.iter().find(|c| c["id"] == json!(group)))
        .cloned()
        .unwrap_or_default();
    assert!(listed["last_message"]["deleted_at"].is_string(), "{listed}");
    assert_eq!(listed["last_seq"], json!(3));
}

/// A helper so the non-member case reads like the others.
trait PatchAs {
    async fn api_patch(&self, api: &ApiClient, path: &str) -> chat_testkit::Resp;
}

impl PatchAs for TestUser {
    async fn api_patch(&self, api: &ApiClient, path: &str) -> chat_testkit::Resp {
        api.as_user(self).patch(path, &json!({"text": "x"})).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_message_no_longer_grants_attachment_access() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let (a, b, _) = trio(&api).await;
    let (alice, bob) = (api.as_user(&a), api.as_user(&b));
    let chat = id_of(&alice.private_chat(b.id).await, "id");
    let (status, record) = alice
        .request_raw(
            reqwest::Method::POST,
            "/v1/attachments",
            Some(b"%PDF-1.4 receipts".to_vec()),
            None,
        )
        .await;
    assert_eq!(status, 201, "{record}");
    let attachment = id_of(&record, "id");
    let sent = alice
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "f1", "type": "file", "attachment_id": attachment}),
        )
        .await;
    assert_status(&sent, 201, "send a file");
    let download = format!("/v1/attachments/{attachment}");
    assert_eq!(bob.get(&download).await.0, 200, "a member reads it");
    let id = id_of(&sent.1["message"], "id");
    assert_status(
        &alice
            .delete(&format!("/v1/chats/{chat}/messages/{id}"))
            .await,
        204,
        "delete",
    );
    assert_error(&bob.get(&download).await, 404, "not_found", "after delete");
    assert_eq!(
        alice.get(&download).await.0,
        200,
        "the uploader still reads it"
    );
}

/// Alice and bob in a private chat with sockets in `format`; bob's socket sees alice's events.
async fn live_pair(stack: &Stack, format: Format) -> (TestUser, TestUser, u64, WsClient, WsClient) {
    let api = stack.api();
    let a = api.new_user("wa").await;
    let b = api.new_user("wb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let url = stack.gateway_ws_url(0);
    let (alice_ws, _) = WsClient::connect_ok(&url, Auth::Header(&a.token), format).await;
    let (bob_ws, _) = WsClient::connect_ok(&url, Auth::Header(&b.token), format).await;
    (a, b, chat, alice_ws.labeled("alice"), bob_ws.labeled("bob"))
}

async fn frames_and_events_in(format: Format) {
    let stack = Stack::start(StackOptions::default()).await;
    let (a, b, chat, mut alice_ws, mut bob_ws) = live_pair(&stack, format).await;
    let sent = alice_ws
        .request(
            &json!({"type":"send","id":"s1","chat_id":chat,"client_msg_id":"w1","text":"helo"}),
            WAIT,
        )
        .await;
    assert_eq!(sent["type"], json!("ack"), "{sent}");
    let message_id = id_of(&sent["message"], "id");
    bob_ws.recv_until("new_message", WAIT).await;

    // delivered → ack; every member hears of it, the sender's own sockets included (the event
    // may come before or after the ack).
    let (ack, bob_seen) = request_keeping(
        &mut bob_ws,
        &json!({"type":"delivered","id":"r3","chat_id":chat,"up_to_seq":1}),
    )
    .await;
    assert_eq!(ack, json!({"type":"ack","id":"r3"}));
    let bob_event = match bob_seen
        .into_iter()
        .find(|f| f["type"] == json!("message_delivered"))
    {
        Some(event) => event,
        None => bob_ws.recv_until("message_delivered", WAIT).await,
    };
    let alice_event = alice_ws.recv_until("message_delivered", WAIT).await;
    for event in [alice_event, bob_event] {
        assert_eq!(event["chat_id"], json!(chat));
        assert_eq!(event["user_id"], json!(b.id));
        assert_eq!(event["up_to_seq"], json!(1));
        assert!(event["cursor"].is_string(), "{event}");
    }
    // The same watermark again moves nothing and tells nobody.
    let again = bob_ws
        .request(
            &json!({"type":"delivered","id":"r3b","chat_id":chat,"up_to_seq":1}),
            WAIT,
        )
        .await;
    assert_eq!(again["type"], json!("ack"));
    alice_ws
        .expect_no_frame_of_type("message_delivered", QUIET)
        .await;

    // edit → ack with the message; message_updated to every member.
    let (edited, alice_seen) = request_keeping(
        &mut alice_ws,
        &json!({"type":"edit","id":"r4","chat_id":chat,"message_id":message_id,"text":"hello"}),
    )
    .await;
    assert_eq!(edited["type"], json!("ack"), "{edited}");
    assert_eq!(edited["message"]["text"], json!("hello"));
    assert!(edited["message"]["edited_at"].is_string());
    let alice_event = match alice_seen
        .into_iter()
        .find(|f| f["type"] == json!("message_updated"))
    {
        Some(event) => event,
        None => alice_ws.recv_until("message_updated", WAIT).await,
    };
    let bob_event = bob_ws.recv_until("message_updated", WAIT).await;
    for event in [alice_event, bob_event] {
        assert_eq!(event["message"], edited["message"]);
        assert!(event["cursor"].is_string(), "{event}");
    }

    // Refusals come back as error frames with the request id; the socket stays open.
    let cases = [
        (
            json!({"type":"edit","id":"x1","chat_id":chat,"message_id":message_id,"text":" "}),
            "invalid_input",
        ),
        (
            json!({"type":"edit","id":"x2","chat_id":chat,"message_id":999_999_999u64,"text":"a"}),
            "not_found",
        ),
        (
            json!({"type":"delivered","id":"x3","chat_id":chat,"up_to_seq":-1}),
            "invalid_input",
        ),
        (
            json!({"type":"delivered","id":"x4","chat_id":999_999_999u64,"up_to_seq":1}),
            "not_found",
        ),
        (
            json!({"type":"delete","id":"x5","chat_id":chat,"message_id":"seven"}),
            "invalid_input",
        ),
    ];
    for (frame, code) in cases {
        let reply = bob_ws.request(&frame, WAIT).await;
        assert_eq!(reply["type"], json!("error"), "{frame} → {reply}");
        assert_eq!(reply["code"], json!(code), "{frame} → {reply}");
    }
    let forbidden = bob_ws
        .request(
            &json!({"type":"edit","id":"x6","chat_id":chat,"message_id":message_id,"text":"mine"}),
            WAIT,
        )
        .await;
    assert_eq!(forbidden["code"], json!("forbidden"), "{forbidden}");
    let forbidden = bob_ws
        .request(
            &json!({"type":"delete","id":"x7","chat_id":chat,"message_id":message_id}),
            WAIT,
        )
        .await;
    assert_eq!(forbidden["code"], json!("forbidden"), "{forbidden}");

    // delete → ack; the tombstone reaches everyone.
    let (deleted, alice_seen) = request_keeping(
        &mut alice_ws,
        &json!({"type":"delete","id":"r5","chat_id":chat,"message_id":message_id}),
    )
    .await;
    assert_eq!(deleted["type"], json!("ack"), "{deleted}");
    let alice_event = match alice_seen
        .into_iter()
        .find(|f| f["type"] == json!("message_updated"))
    {
        Some(event) => event,
        None => alice_ws.recv_until("message_updated", WAIT).await,
    };
    let bob_event = bob_ws.recv_until("message_updated", WAIT).await;
    for event in [alice_event, bob_event] {
        let tomb = &event["message"];
        assert_eq!(tomb["id"], json!(message_id));
        assert_eq!(tomb["seq"], json!(1));
        assert!(tomb["deleted_at"].is_string(), "{tomb}");
        assert!(
            tomb["text"].is_null() && tomb["attachment"].is_null(),
            "{tomb}"
        );
    }
    let conflict = alice_ws
        .request(
            &json!({"type":"edit","id":"x8","chat_id":chat,"message_id":message_id,"text":"again"}),
            WAIT,
        )
        .await;
    assert_eq!(conflict["code"], json!("conflict"), "{conflict}");
    // A read carries the delivered watermark (as member objects show) without a delivered event.
    let read = bob_ws
        .request(
            &json!({"type":"read","id":"r6","chat_id":chat,"up_to_seq":1}),
            WAIT,
        )
        .await;
    assert_eq!(read["type"], json!("ack"));
    let bob_api = stack.api().as_user(&b);
    assert_eq!(watermarks(&bob_api, chat, b.id).await, (1, 1));
    let _ = a;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_delivered_edit_and_delete_in_json() {
    frames_and_events_in(Format::Json).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_delivered_edit_and_delete_in_msgpack() {
    frames_and_events_in(Format::Msgpack).await;
}

/// Sends a request frame and reads until its reply, returning the reply and the other frames
/// seen on the way (events may overtake the ack).
async fn request_keeping(ws: &mut WsClient, frame: &Value) -> (Value, Vec<Value>) {
    ws.send_json(frame).await;
    let mut seen = Vec::new();
    loop {
        let got = ws.recv_json(WAIT).await;
        if got["id"] == frame["id"] && matches!(got["type"].as_str(), Some("ack" | "error")) {
            return (got, seen);
        }
        seen.push(got);
    }
}

/// Reads frames until `synced`, returning the replayed events before it.
async fn until_synced(ws: &mut WsClient) -> Vec<Value> {
    let mut replayed = Vec::new();
    loop {
        let frame = ws.recv_json(WAIT).await;
        if frame["type"] == json!("synced") {
            return replayed;
        }
        replayed.push(frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_and_resume_replay_updates_and_deliveries() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let a = api.new_user("ya").await;
    let b = api.new_user("yb").await;
    let (alice, bob) = (api.as_user(&a), api.as_user(&b));
    let chat = id_of(&alice.private_chat(b.id).await, "id");
    let first = alice.send_text(chat, "y1", "one").await;
    // Bob's cursor: everything up to here.
    let page = bob.get("/v1/sync?since=c0").await;
    assert_status(&page, 200, "sync");
    let cursor = page.1["cursor"].as_str().unwrap_or_default().to_string();
    // While bob is away: another message, bob's other device delivers, alice edits and deletes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let second = alice.send_text(chat, "y2", "two").await;
    assert_status(
        &bob.post(
            &format!("/v1/chats/{chat}/delivered"),
            &json!({"up_to_seq": 2}),
        )
        .await,
        204,
        "delivered",
    );
    let first_id = id_of(&first, "id");
    let second_id = id_of(&second, "id");
    assert_status(
        &alice
            .patch(
                &format!("/v1/chats/{chat}/messages/{first_id}"),
                &json!({"text": "uno"}),
            )
            .await,
        200,
        "edit",
    );
    assert_status(
        &alice
            .delete(&format!("/v1/chats/{chat}/messages/{second_id}"))
            .await,
        204,
        "delete",
    );

    let synced = bob.get(&format!("/v1/sync?since={cursor}")).await;
    assert_status(&synced, 200, "sync from the cursor");
    let events = synced.1["events"].as_array().cloned().unwrap_or_default();
    let of = |kind: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["type"] == json!(kind))
            .cloned()
            .collect()
    };
    let updated = of("message_updated");
    assert!(
        updated
            .iter()
            .any(|e| e["message"]["id"] == json!(first_id) && e["message"]["text"] == json!("uno")),
        "{events:?}"
    );
    assert!(
        updated
            .iter()
            .any(|e| e["message"]["id"] == json!(second_id)
                && e["message"]["deleted_at"].is_string()),
        "{events:?}"
    );
    let delivered = of("message_delivered");
    assert!(
        delivered
            .iter()
            .any(|e| e["user_id"] == json!(b.id) && e["up_to_seq"] == json!(2)),
        "{events:?}"
    );
    let cursors: Vec<String> = events
        .iter()
        .map(|e| e["cursor"].as_str().unwrap_or_default().to_string())
        .collect();
    let numbers: Vec<u64> = cursors
        .iter()
        .map(|c| c.trim_start_matches('c').parse().unwrap_or(0))
        .collect();
    assert!(
        numbers.windows(2).all(|w| w[0] <= w[1]),
        "cursor order: {cursors:?}"
    );

    // Resume over the socket replays the same events, then goes live without repeats.
    let url = format!("{}?since={cursor}", stack.gateway_ws_url(0));
    for format in [Format::Json, Format::Msgpack] {
        let (mut ws, _) = WsClient::connect_ok(&url, Auth::Header(&b.token), format).await;
        let replayed = until_synced(&mut ws).await;
        let kinds = |events: &[Value]| -> Vec<String> {
            events
                .iter()
                .map(|e| e["type"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(kinds(&replayed), kinds(&events), "{format:?}");
        ws.expect_no_frame_of_type("message_updated", QUIET).await;
        ws.close().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_resume_seam_neither_repeats_nor_loses_updates() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let a = api.new_user("sa").await;
    let b = api.new_user("sb").await;
    let alice = api.as_user(&a);
    let chat = id_of(&alice.private_chat(b.id).await, "id");
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(id_of(
            &alice.send_text(chat, &format!("s{i}"), "m").await,
            "id",
        ));
    }
    let cursor = format!("c{}", chrono_ms() - 1000);
    // Edits keep landing while bob resumes: every one exactly once.
    let editor = {
        let alice = stack.api().as_user(&a);
        let ids = ids.clone();
        tokio::spawn(async move {
            for (i, id) in ids.iter().enumerate() {
                let path = format!("/v1/chats/{chat}/messages/{id}");
                assert_status(
                    &alice
                        .patch(&path, &json!({"text": format!("edited {i}")}))
                        .await,
                    200,
                    "edit",
                );
            }
        })
    };
    let url = format!("{}?since={cursor}", stack.gateway_ws_url(0));
    let (mut ws, _) = WsClient::connect_ok(&url, Auth::Header(&b.token), Format::Json).await;
    editor.await.expect("editor");
    let frames = ws.collect_for(Duration::from_secs(3)).await;
    let mut updates: Vec<(u64, String)> = frames
        .iter()
        .filter(|f| f["type"] == json!("message_updated"))
        .map(|f| {
            (
                id_of(&f["message"], "id"),
                f["message"]["edited_at"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let total = updates.len();
    updates.sort();
    updates.dedup();
    assert_eq!(updates.len(), total, "no update twice");
    let edited: std::collections::BTreeSet<u64> = updates.iter().map(|u| u.0).collect();
    assert_eq!(edited.len(), ids.len(), "every edit arrived: {updates:?}");
}

fn chrono_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The gateway does not write once per delivered frame: under a burst, frames coalesce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_frames_coalesce_under_a_burst() {
    const MEMBERS: usize = 12;
    const MESSAGES: usize = 40;
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let users = api.new_users("burst", MEMBERS).await;
    let owner = api.as_user(&users[0]);
    let others: Vec<u64> = users[1..].iter().map(|u| u.id).collect();
    let group = id_of(&owner.group_chat("burst", &others).await, "id");
    for i in 0..MESSAGES {
        owner.send_text(group, &format!("b{i}"), "m").await;
    }
    let before = delivered_counters(&stack).await;
    // Every member acknowledges every message at once, as a naive client would.
    let mut tasks = Vec::new();
    for user in users.iter().skip(1) {
        let url = stack.gateway_ws_url(0);
        let token = user.token.clone();
        tasks.push(tokio::spawn(async move {
            let (mut ws, _) = WsClient::connect_ok(&url, Auth::Header(&token), Format::Json).await;
            for seq in 1..=MESSAGES {
                ws.send_json(&json!({"type":"delivered","id":format!("d{seq}"),"chat_id":group,"up_to_seq":seq}))
                    .await;
            }
            let mut acks = 0;
            while acks < MESSAGES {
                let frame = ws
                    .recv_matching(WAIT, "an ack or error", |v| {
                        matches!(v["type"].as_str(), Some("ack" | "error"))
                    })
                    .await;
                assert_eq!(frame["type"], json!("ack"), "{frame}");
                acks += 1;
            }
            ws.close().await;
        }));
    }
    for task in tasks {
        task.await.expect("member");
    }
    let after = delivered_counters(&stack).await;
    let frames = after.0 - before.0;
    let batches = after.1 - before.1;
    let expected = ((MEMBERS - 1) * MESSAGES) as f64;
    assert_eq!(frames, expected, "every frame counted");
    println!(
        "delivered burst: {frames} frames, {batches} batches (one UPDATE each): {:.3} writes per frame",
        batches / frames
    );
    assert!(
        batches <= frames / 4.0,
        "{batches} batches for {frames} frames: not coalesced"
    );
    for user in users.iter().skip(1) {
        assert_eq!(
            watermarks(&owner, group, user.id).await.1,
            MESSAGES as u64,
            "every member's highest move landed"
        );
    }
}

/// `chat_gateway_delivered_frames_total` and `chat_gateway_delivered_batches_total` of gateway 0.
async fn delivered_counters(stack: &Stack) -> (f64, f64) {
    let text = reqwest::get(format!("{}/metrics", stack.gateway_http_url(0)))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && !l.starts_with('#'))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (
        value("chat_gateway_delivered_frames_total"),
        value("chat_gateway_delivered_batches_total"),
    )
}
