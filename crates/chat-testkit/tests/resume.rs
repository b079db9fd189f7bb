//! Cursor sync and resume: `GET /v1/sync`, `?since=` on the upgrade, `since` in the auth frame,
//! the `resume` frame, and the seam between replay and live events (no gap, no repeat).

use std::collections::BTreeSet;
use std::time::Duration;

use chat_testkit::{
    Auth, Format, QUIET, Stack, StackOptions, TestUser, Value, WAIT, WsClient, assert_error,
    assert_status, id_of, json,
};

async fn pair(stack: &Stack) -> (TestUser, TestUser, u64) {
    let api = stack.api();
    let a = api.new_user("ra").await;
    let b = api.new_user("rb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    (a, b, chat)
}

/// Reads frames until `synced`, returning the replayed events before it.
async fn until_synced(ws: &mut WsClient) -> (Vec<Value>, Value) {
    let mut replayed = Vec::new();
    loop {
        let frame = ws.recv_json(WAIT).await;
        if frame["type"] == json!("synced") {
            return (replayed, frame);
        }
        replayed.push(frame);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_validates_cursors_and_pages_without_loss() {
    let stack = Stack::start(StackOptions::default()).await;
    let (a, b, chat) = pair(&stack).await;
    let alice = stack.api().as_user(&a);
    let bob = stack.api().as_user(&b);

    assert_error(
        &bob.get("/v1/sync").await,
        400,
        "invalid_input",
        "sync check 1",
    );
    assert_error(
        &bob.get("/v1/sync?since=yesterday").await,
        400,
        "invalid_input",
        "sync check 2",
    );
    let future = chrono_ms() + 3_600_000;
    let resp = bob.get(&format!("/v1/sync?since=c{future}")).await;
    assert_error(&resp, 400, "invalid_input", "sync check 3");
    assert!(
        resp.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("future")
    );
    assert_error(
        &bob.get("/v1/sync?since=c0&limit=501").await,
        400,
        "invalid_input",
        "sync check 4",
    );
    assert_error(
        &stack.api().get("/v1/sync?since=c0").await,
        401,
        "unauthorized",
        "sync check 5",
    );

    for i in 0..5 {
        alice
            .send_text(chat, &format!("s{i}"), &format!("m{i}"))
            .await;
    }
    assert_status(
        &bob.post(&format!("/v1/chats/{chat}/read"), &json!({"up_to_seq": 3}))
            .await,
        204,
        "read",
    );

    // Page through everything two events at a time.
    let mut cursor = "c0".to_string();
    let mut seqs = Vec::new();
    let mut reads = Vec::new();
    for _ in 0..20 {
        let resp = bob.get(&format!("/v1/sync?since={cursor}&limit=2")).await;
        assert_status(&resp, 200, "sync page");
        for event in resp.1["events"].as_array().expect("events") {
            assert!(
                event["cursor"].as_str().is_some_and(|c| c.starts_with('c')),
                "{event}"
            );
            match event["type"].as_str() {
                Some("new_message") => seqs.push(id_of(&event["message"], "seq")),
                Some("message_read") => reads.push(id_of(event, "up_to_seq")),
                other => panic!("unexpected event type {other:?}"),
            }
        }
        cursor = resp.1["cursor"].as_str().expect("cursor").to_string();
        if resp.1["has_more"] == json!(false) {
            break;
        }
    }
    seqs.dedup();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(reads, vec![3]);

    // A stranger's sync shows nothing of this chat.
    let carol = stack.api().new_user("rc").await;
    let resp = stack.api().as_user(&carol).get("/v1/sync?since=c0").await;
    assert_status(&resp, 200, "stranger sync");
    assert_eq!(resp.1["events"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_on_the_upgrade_replays_what_was_missed_then_goes_live() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let (a, b, chat) = pair(&stack).await;
    let alice = stack.api().as_user(&a);
    let first = alice.send_text(chat, "u0", "before").await;

    // Bob saw the first message (its cursor) and then went away.
    let mut bob = WsClient::authed(&stack.gateway_ws_url(1), &b.token).await;
    let _ = bob.collect_for(QUIET).await;
    bob.close().await;
    let sync = stack.api().as_user(&b).get("/v1/sync?since=c0").await;
    let cursor = sync.1["events"][0]["cursor"]
        .as_str()
        .expect("cursor")
        .to_string();
    assert_eq!(
        id_of(&sync.1["events"][0]["message"], "id"),
        id_of(&first, "id")
    );
    for i in 1..=3 {
        alice.send_text(chat, &format!("u{i}"), "while away").await;
    }

    let url = format!("{}?since={cursor}", stack.gateway_ws_url(0));
    let mut bob = WsClient::connect(&url, Auth::Query(&b.token), Format::Json)
        .await
        .expect("connect");
    assert_eq!(bob.recv_json(WAIT).await["type"], json!("auth_ok"));
    let (replayed, synced) = until_synced(&mut bob).await;
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|e| id_of(&e["message"], "seq"))
        .collect();
    assert_eq!(
        seqs,
        vec![1, 2, 3, 4],
        "the replay repeats the event at the cursor, then the missed ones"
    );
    assert!(synced["cursor"].as_str().is_some());

    alice.send_text(chat, "u4", "live").await;
    let live = bob.recv_until("new_message", WAIT).await;
    assert_eq!(id_of(&live["message"], "seq"), 5);
    bob.expect_no_frame_of_type("new_message", QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_frame_since_and_resume_frame_both_replay() {
    let stack = Stack::start(StackOptions::default()).await;
    let (a, b, chat) = pair(&stack).await;
    stack.api().as_user(&a).send_text(chat, "f1", "one").await;

    let mut bob = WsClient::connect(&stack.gateway_ws_url(0), Auth::None, Format::Msgpack)
        .await
        .expect("connect");
    bob.send_json(&json!({"type": "auth", "token": b.token, "since": "c0"}))
        .await;
    assert_eq!(bob.recv_json(WAIT).await["type"], json!("auth_ok"));
    let (replayed, _) = until_synced(&mut bob).await;
    assert_eq!(replayed.len(), 1);

    bob.send_json(&json!({"type": "resume", "since": "c0"}))
        .await;
    let (replayed, _) = until_synced(&mut bob).await;
    assert_eq!(replayed.len(), 1);

    bob.send_json(&json!({"type": "resume", "since": "nonsense"}))
        .await;
    let error = bob.recv_until("error", WAIT).await;
    assert_eq!(error["code"], json!("invalid_input"));
    stack.api().as_user(&a).send_text(chat, "f2", "two").await;
    let live = bob.recv_until("new_message", WAIT).await;
    assert_eq!(
        id_of(&live["message"], "seq"),
        2,
        "the socket stays live after a refused cursor"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_messages_flow_has_no_gap_and_no_repeat() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let (a, b, chat) = pair(&stack).await;
    let alice = stack.api().as_user(&a);
    let total = 60u64;
    let sender = tokio::spawn(async move {
        for i in 0..total {
            alice.send_text(chat, &format!("x{i}"), "flow").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let url = format!("{}?since=c0", stack.gateway_ws_url(1));
    let mut bob = WsClient::connect(&url, Auth::Query(&b.token), Format::Json)
        .await
        .expect("connect");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while (seen.iter().collect::<BTreeSet<_>>().len() as u64) < total
        && tokio::time::Instant::now() < deadline
    {
        let Some(frame) = bob.recv_json_opt(Duration::from_secs(2)).await else {
            continue;
        };
        if frame["type"] == json!("new_message") {
            seen.push(id_of(&frame["message"], "seq"));
        }
    }
    sender.await.expect("sender");
    let extra = bob.collect_for(QUIET).await;
    seen.extend(
        extra
            .iter()
            .filter(|f| f["type"] == json!("new_message"))
            .map(|f| id_of(&f["message"], "seq")),
    );
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        seen, expected,
        "every message exactly once, in order, across the seam"
    );
}

fn chrono_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
