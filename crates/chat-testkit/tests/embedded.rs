//! The embedded topology as a whole: one chat-embedded process with two in-process gateways on
//! SQLite and the in-memory bus. The rest of the suite runs against it too (`make
//! test-embedded`); this file covers what only the single process has: fan-out between its
//! gateways through the memory bus, and one SIGTERM draining every gateway before the api stops,
//! with everything acked on disk.

use std::time::{Duration, Instant};

use chat_testkit::{Stack, StackOptions, WAIT, WsClient, id_of, json, unique_client_msg_id};

const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_fans_out_across_its_gateways_drains_and_keeps_every_message() {
    let mut stack = Stack::start(StackOptions {
        gateways: 2,
        embedded: true,
        ..StackOptions::default()
    })
    .await;
    assert!(stack.is_embedded());
    assert!(
        stack.database_url().starts_with("sqlite://"),
        "embedded stacks run on SQLite: {}",
        stack.database_url()
    );
    let api = stack.api();
    let alice = api.new_user("emb_a").await;
    let bob = api.new_user("emb_b").await;
    let chat = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");

    let mut sender = WsClient::authed(&stack.gateway_ws_url(0), &alice.token)
        .await
        .labeled("alice@gw1");
    let mut receiver = WsClient::authed(&stack.gateway_ws_url(1), &bob.token)
        .await
        .labeled("bob@gw2");

    let mut acked = Vec::new();
    for n in 0..MESSAGES {
        let ack = sender
            .request(
                &json!({"type": "send", "id": format!("s{n}"), "chat_id": chat,
                        "client_msg_id": unique_client_msg_id("emb"), "text": format!("m{n}")}),
                WAIT,
            )
            .await;
        assert_eq!(ack["type"], json!("ack"), "{ack}");
        acked.push(id_of(&ack["message"], "id"));
    }

    let mut received = Vec::new();
    let mut seqs = Vec::new();
    let deadline = Instant::now() + WAIT;
    while received.len() < MESSAGES && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(frame) = receiver.recv_json_opt(left).await else {
            break;
        };
        if frame["type"] == json!("new_message") {
            received.push(id_of(&frame["message"], "id"));
            seqs.push(id_of(&frame["message"], "seq"));
        }
    }
    assert_eq!(
        received, acked,
        "bob on the other gateway gets every acked message once, in order"
    );
    assert_eq!(
        seqs,
        (1..=MESSAGES as u64).collect::<Vec<_>>(),
        "gap-free seq"
    );

    // One SIGTERM: both gateways close their sockets with 1012, then the process exits cleanly.
    let (status, _, _) = tokio::join!(
        stack.terminate_api(),
        sender.expect_close(1012, Duration::from_secs(10)),
        receiver.expect_close(1012, Duration::from_secs(10)),
    );
    assert!(
        status.success(),
        "chat-embedded exit status after SIGTERM: {status}"
    );

    let stored = stack
        .count_rows("messages")
        .await
        .unwrap_or_else(|e| panic!("reading the SQLite file after exit: {e:#}"));
    assert_eq!(
        stored, MESSAGES as i64,
        "every acked message is in the SQLite file"
    );
}
