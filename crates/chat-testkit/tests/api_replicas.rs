//! Two chat-api replicas behind the gateways: a replica that dies between a message's COMMIT and
//! its publish leaves the message to the other one, which announces it live, once, in order; a
//! deletion left that way is announced by the other one too; and the gateways keep forwarding
//! frames while one replica is down.

use std::time::{Duration, Instant};

use chat_testkit::{CommitTrap, Stack, StackOptions, WsClient, id_of, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_replica_died_before_publishing_is_announced_by_the_other() {
    let mut stack = Stack::start(StackOptions {
        apis: 2,
        proxy_mysql: true,
        ..StackOptions::default()
    })
    .await;
    let first = chat_testkit::ApiClient::new(&stack.api_url_of(0));
    let second = chat_testkit::ApiClient::new(&stack.api_url_of(1));
    let alice = first.new_user("ara").await;
    let bob = first.new_user("arb").await;
    let chat = id_of(&first.as_user(&alice).private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    let sent = first.as_user(&alice).send_text(chat, "a1", "a1").await;
    assert_eq!(id_of(&sent, "seq"), 1);
    assert_eq!(
        bob_ws.next_new_message(Duration::from_secs(10)).await,
        Some((1, "a1".into()))
    );

    // The first replica stores a2 and hears nothing back; it dies before it publishes (its own
    // resolver would try a quarter of a second later).
    stack.mysql_proxy().arm_commit_trap(CommitTrap::LoseReply);
    let (status, body) = first
        .as_user(&alice)
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "a2", "text": "a2"}),
        )
        .await;
    stack.kill_api(0);
    assert_eq!(status, 503, "{body}");
    let killed = Instant::now();

    assert_eq!(
        bob_ws.next_new_message(Duration::from_secs(10)).await,
        Some((2, "a2".into())),
        "the surviving replica announces the dead one's message"
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(6), "announced after {took:?}");

    // Nothing twice: the sender's retry on the other replica finds it, and the next message
    // follows it directly.
    let (status, _) = second
        .as_user(&alice)
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "a2", "text": "a2"}),
        )
        .await;
    assert_eq!(status, 200);
    second.as_user(&alice).send_text(chat, "a3", "a3").await;
    assert_eq!(
        bob_ws.next_new_message(Duration::from_secs(10)).await,
        Some((3, "a3".into())),
        "no second copy of a2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_whose_replica_died_before_publishing_is_announced_by_the_other() {
    let mut stack = Stack::start(StackOptions {
        apis: 2,
        proxy_mysql: true,
        ..StackOptions::default()
    })
    .await;
    let first = chat_testkit::ApiClient::new(&stack.api_url_of(0));
    let alice = first.new_user("ard").await;
    let bob = first.new_user("are").await;
    let chat = id_of(&first.as_user(&alice).private_chat(bob.id).await, "id");
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;
    let sent = first.as_user(&alice).send_text(chat, "d1", "d1").await;
    let message_id = id_of(&sent, "id");
    bob_ws
        .recv_until("new_message", Duration::from_secs(10))
        .await;

    // The first replica's deletion runs and hears nothing back; the replica dies before its own
    // resolver (a quarter of a second later) can announce it.
    stack
        .mysql_proxy()
        .arm_statement_trap("SET body = NULL, attachment_id = NULL, deleted_at");
    let (status, body) = first
        .as_user(&alice)
        .delete(&format!("/v1/chats/{chat}/messages/{message_id}"))
        .await;
    stack.kill_api(0);
    assert_eq!(status, 503, "{body}");
    assert!(!stack.mysql_proxy().statement_trap_armed());
    let killed = Instant::now();

    let updated = bob_ws
        .recv_until("message_updated", Duration::from_secs(10))
        .await;
    assert_eq!(updated["message"]["id"], json!(message_id));
    assert!(
        updated["message"]["deleted_at"].is_string(),
        "the surviving replica announces the tombstone: {updated}"
    );
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(6), "announced after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_keep_forwarding_while_one_replica_is_down() {
    let mut stack = Stack::start(StackOptions {
        apis: 2,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("arc").await;
    let bob = api.new_user("ard").await;
    let chat = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");
    let mut alice_ws = WsClient::authed(&stack.gateway_ws_url(0), &alice.token).await;
    let mut bob_ws = WsClient::authed(&stack.gateway_ws_url(0), &bob.token).await;

    let mut expected = Vec::new();
    for (round, down) in [(0, None), (1, Some(0)), (2, Some(1))] {
        if let Some(i) = down {
            // Back up the replica that went down last, then take the other one down.
            if i == 1 {
                stack.restart_api(0).await.expect("restarting replica 0");
            }
            stack.kill_api(i);
        }
        for n in 0..4 {
            let client_msg_id = format!("r{round}-{n}");
            let reply = alice_ws
                .request(
                    &json!({"type": "send", "id": client_msg_id, "chat_id": chat,
                            "client_msg_id": client_msg_id, "text": "x"}),
                    Duration::from_secs(10),
                )
                .await;
            assert_eq!(reply["type"], json!("ack"), "{reply}");
            expected.push(client_msg_id);
        }
    }
    let mut received = Vec::new();
    while received.len() < expected.len() {
        match bob_ws.next_new_message(Duration::from_secs(10)).await {
            Some((_, client_msg_id)) => received.push(client_msg_id),
            None => break,
        }
    }
    assert_eq!(received, expected, "every message once, in order");
}
