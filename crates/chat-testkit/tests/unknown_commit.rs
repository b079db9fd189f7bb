//! A send whose COMMIT got no answer (the MySQL connection broke mid-COMMIT) answers 503, yet
//! its message may be stored. Recipients that stay connected must still get it live, once, in
//! seq order: from the sender's retry, from the next send in the chat, or on its own once the
//! database answers. Offline recipients get its push then, once. A deletion whose answer was
//! lost is announced the same way. A proxy in front of MySQL breaks the connection at a chosen
//! COMMIT or statement.

use std::time::Duration;

use chat_testkit::{
    CommitTrap, PushReceiver, QUIET, Stack, StackOptions, WsClient, assert_status, id_of, json,
};

/// The proxy in front of chat-api's MySQL, and one gateway for the recipients.
async fn stack() -> Stack {
    Stack::start(StackOptions {
        gateways: 1,
        proxy_mysql: true,
        ..StackOptions::default()
    })
    .await
}

/// Every `new_message` until none comes for 3 s.
async fn messages_until_quiet(ws: &mut WsClient) -> Vec<(u64, String)> {
    let mut seen = Vec::new();
    while let Some(message) = ws.next_new_message(Duration::from_secs(3)).await {
        seen.push(message);
    }
    seen
}

/// POSTs a text message and returns the status.
async fn post_text(as_user: &chat_testkit::ApiClient, chat: u64, client_msg_id: &str) -> u16 {
    let (status, body) = as_user
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": client_msg_id, "text": client_msg_id}),
        )
        .await;
    assert!(
        matches!(status, 200 | 201 | 503),
        "send {client_msg_id}: {status} {body}"
    );
    status
}

const LIVE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_message_whose_commit_answer_was_lost_is_announced_once() {
    let stack = stack().await;
    let api = stack.api();
    let alice = api.new_user("uca").await;
    let bob = api.new_user("ucb").await;
    let as_alice = api.as_user(&alice);
    let chat = id_of(&as_alice.private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    assert_eq!(post_text(&as_alice, chat, "m1").await, 201);
    assert_eq!(bob_ws.next_new_message(LIVE).await, Some((1, "m1".into())));

    stack.mysql_proxy().arm_commit_trap(CommitTrap::LoseReply);
    assert_eq!(
        post_text(&as_alice, chat, "m2").await,
        503,
        "no answer to COMMIT"
    );
    assert!(
        !stack.mysql_proxy().commit_trap_armed(),
        "the send hit the trap"
    );
    // Nobody retries and nobody else sends: chat-api announces it on its own.
    assert_eq!(
        bob_ws.next_new_message(LIVE).await,
        Some((2, "m2".into())),
        "the stored message reaches the connected recipient"
    );

    // The sender's retry finds it (200) and announces nothing again.
    assert_eq!(post_text(&as_alice, chat, "m2").await, 200);
    assert_eq!(post_text(&as_alice, chat, "m3").await, 201);
    assert_eq!(
        bob_ws.next_new_message(LIVE).await,
        Some((3, "m3".into())),
        "no second copy of m2 before m3"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_send_in_the_chat_announces_it_first() {
    let stack = stack().await;
    let api = stack.api();
    let alice = api.new_user("ucn").await;
    let bob = api.new_user("uco").await;
    let carol = api.new_user("ucp").await;
    let as_alice = api.as_user(&alice);
    let as_carol = api.as_user(&carol);
    let ids = [alice.id, bob.id, carol.id];
    let chat = id_of(&as_alice.group_chat("unknown", &ids).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    stack.mysql_proxy().arm_commit_trap(CommitTrap::LoseReply);
    assert_eq!(post_text(&as_alice, chat, "a1").await, 503);
    // Straight away, before chat-api's own resolver is due: carol's send must announce
    // alice's message before her own.
    assert_eq!(post_text(&as_carol, chat, "c1").await, 201);
    let seen = messages_until_quiet(&mut bob_ws).await;
    assert_eq!(
        seen,
        [(1, "a1".to_string()), (2, "c1".to_string())],
        "alice's stored message, then carol's, each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_never_ran_is_sent_again_and_announced_once() {
    let stack = stack().await;
    let api = stack.api();
    let alice = api.new_user("ucr").await;
    let bob = api.new_user("ucs").await;
    let as_alice = api.as_user(&alice);
    let chat = id_of(&as_alice.private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    stack.mysql_proxy().arm_commit_trap(CommitTrap::LoseCommit);
    assert_eq!(post_text(&as_alice, chat, "r1").await, 503);
    assert!(
        as_alice.all_messages(chat).await.is_empty(),
        "the transaction was rolled back"
    );
    // The retry stores it for real; the record of the lost send must not make a second copy.
    assert_eq!(post_text(&as_alice, chat, "r1").await, 201);
    let seen = messages_until_quiet(&mut bob_ws).await;
    assert_eq!(seen, [(1, "r1".to_string())], "one copy, live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_announced_late_gets_its_offline_push_once() {
    let receiver = PushReceiver::start().await;
    let stack = Stack::start(StackOptions {
        gateways: 1,
        proxy_mysql: true,
        workers: 1,
        worker_env: vec![("CHAT_PUSH_URL".to_string(), receiver.url())],
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("ucs").await;
    let bob = api.new_user("uct").await; // offline, with a device token
    let registered = api
        .as_user(&bob)
        .put("/v1/me/push-token", Some(&json!({"token": "tok-late"})))
        .await;
    assert_status(&registered, 204, "register bob's push token");
    let as_alice = api.as_user(&alice);
    let chat = id_of(&as_alice.private_chat(bob.id).await, "id");

    stack.mysql_proxy().arm_commit_trap(CommitTrap::LoseReply);
    assert_eq!(post_text(&as_alice, chat, "p1").await, 503);
    receiver
        .wait_until(LIVE, "bob's push for the message announced late", |seen| {
            !seen.is_empty()
        })
        .await;

    // The sender's retry finds the message (200) and queues no second push.
    let (status, retried) = as_alice
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "p1", "text": "p1"}),
        )
        .await;
    assert_eq!(status, 200, "the retry finds the stored message: {retried}");
    tokio::time::sleep(QUIET * 2).await;
    let seen = receiver.received();
    assert_eq!(seen.len(), 1, "one push for the late message: {seen:?}");
    let data = &seen[0].body["message"]["data"];
    assert_eq!(
        data["message_id"],
        json!(id_of(&retried["message"], "id").to_string())
    );
    assert_eq!(seen[0].body["message"]["token"], json!("tok-late"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_whose_answer_was_lost_is_announced_and_synced() {
    let stack = stack().await;
    let api = stack.api();
    let alice = api.new_user("ucd").await;
    let bob = api.new_user("uce").await;
    let as_alice = api.as_user(&alice);
    let as_bob = api.as_user(&bob);
    let chat = id_of(&as_alice.private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    let sent = as_alice.send_text(chat, "d1", "to be deleted").await;
    let message_id = id_of(&sent, "id");
    let event = bob_ws.recv_until("new_message", LIVE).await;
    let cursor = event["cursor"].as_str().expect("a cursor").to_string();

    // The deletion's UPDATE runs; its answer never reaches chat-api.
    stack
        .mysql_proxy()
        .arm_statement_trap("SET body = NULL, attachment_id = NULL, deleted_at");
    let path = format!("/v1/chats/{chat}/messages/{message_id}");
    let (status, body) = as_alice.delete(&path).await;
    assert_eq!(status, 503, "no answer to the deletion: {body}");
    assert!(
        !stack.mysql_proxy().statement_trap_armed(),
        "the deletion hit the trap"
    );

    // Nobody retries: chat-api announces the stored tombstone on its own.
    let updated = bob_ws.recv_until("message_updated", LIVE).await;
    assert_eq!(updated["message"]["id"], json!(message_id));
    assert!(
        updated["message"]["deleted_at"].is_string(),
        "the event shows the tombstone: {updated}"
    );

    // The retry finds it done, and a sync from before the deletion carries it.
    let (status, body) = as_alice.delete(&path).await;
    assert_eq!(status, 204, "the retry: {body}");
    let (status, synced) = as_bob.get(&format!("/v1/sync?since={cursor}")).await;
    assert_eq!(status, 200, "{synced}");
    let events = synced["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().any(|e| e["type"] == json!("message_updated")
            && e["message"]["id"] == json!(message_id)
            && e["message"]["deleted_at"].is_string()),
        "the sync carries the deletion: {synced}"
    );
}
