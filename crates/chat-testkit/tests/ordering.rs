//! Events of one chat reach every socket in seq order, even when several members send at once
//! (the publish happens under the chat's lock, after the commit).

use std::time::{Duration, Instant};

use chat_testkit::{Stack, StackOptions, WsClient, id_of, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_senders_are_delivered_in_seq_order() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let senders = api.new_users("os", 6).await;
    let reader = api.new_user("or").await;
    let ids: Vec<u64> = senders.iter().map(|u| u.id).chain([reader.id]).collect();
    let chat = id_of(
        &api.as_user(&senders[0]).group_chat("order", &ids).await,
        "id",
    );
    let mut ws = WsClient::authed(&stack.gateway_ws_url(1), &reader.token).await;

    let per_sender = 20u64;
    let tasks: Vec<_> = senders
        .iter()
        .enumerate()
        .map(|(n, user)| {
            let client = api.as_user(user);
            tokio::spawn(async move {
                for i in 0..per_sender {
                    client.send_text(chat, &format!("o{n}-{i}"), "race").await;
                }
            })
        })
        .collect();
    let total = per_sender * senders.len() as u64;
    let mut seqs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (seqs.len() as u64) < total && Instant::now() < deadline {
        let Some(frame) = ws.recv_json_opt(Duration::from_secs(2)).await else {
            continue;
        };
        if frame["type"] == json!("new_message") {
            seqs.push(id_of(&frame["message"], "seq"));
        }
    }
    for task in tasks {
        task.await.expect("sender");
    }
    let expected: Vec<u64> = (1..=total).collect();
    assert_eq!(
        seqs, expected,
        "live events of one chat arrive in seq order"
    );
}
