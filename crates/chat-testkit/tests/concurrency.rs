//! Concurrent senders: `seq` stays 1..N without gaps or duplicates; concurrent retries of one
//! `client_msg_id` store one message.

use std::collections::HashSet;

use chat_testkit::{Stack, StackOptions, assert_status, id_of, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_senders_times_25_give_seqs_1_to_200() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let users = api.new_users("cc", 8).await;
    let ids: Vec<u64> = users.iter().map(|u| u.id).collect();
    let chat = id_of(
        &api.as_user(&users[0]).group_chat("race", &ids[1..]).await,
        "id",
    );

    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let client = api.as_user(user);
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for k in 0..25 {
                let resp = client
                    .post(
                        &format!("/v1/chats/{chat}/messages"),
                        &json!({"client_msg_id": format!("s{i}-{k}"), "text": format!("{i}/{k}")}),
                    )
                    .await;
                statuses.push((resp.0, resp.1));
            }
            statuses
        }));
    }
    for task in tasks {
        for (status, body) in task.await.expect("sender task") {
            assert_eq!(status, 201, "concurrent send: {body}");
        }
    }

    let all = api.as_user(&users[3]).all_messages(chat).await;
    let seqs: Vec<u64> = all.iter().map(|m| id_of(m, "seq")).collect();
    assert_eq!(
        seqs,
        (1..=200).collect::<Vec<u64>>(),
        "seqs without gaps or duplicates"
    );
    let distinct: HashSet<u64> = all.iter().map(|m| id_of(m, "id")).collect();
    assert_eq!(distinct.len(), 200, "distinct ids");
    let keys: HashSet<(u64, String)> = all
        .iter()
        .map(|m| {
            (
                id_of(m, "sender_id"),
                m["client_msg_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(keys.len(), 200, "every (sender, client_msg_id) once");
    // Per sender, its own messages keep their order.
    for (i, sender) in ids.iter().enumerate() {
        let own: Vec<String> = all
            .iter()
            .filter(|m| m["sender_id"] == json!(sender))
            .map(|m| m["text"].as_str().unwrap_or("").to_string())
            .collect();
        let want: Vec<String> = (0..25).map(|k| format!("{i}/{k}")).collect();
        assert_eq!(own, want, "sender {i}'s messages in order");
    }
    let ids_in_seq_order: Vec<u64> = all.iter().map(|m| id_of(m, "id")).collect();
    let mut sorted = ids_in_seq_order.clone();
    sorted.sort();
    assert_eq!(
        ids_in_seq_order, sorted,
        "ids increase with seq (insertion order)"
    );
    let chat_view = api
        .as_user(&users[0])
        .get(&format!("/v1/chats/{chat}"))
        .await;
    assert_eq!(chat_view.1["last_seq"], json!(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_retries_store_one_message() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let a = api.new_user("ra").await;
    let b = api.new_user("rb").await;
    let client = api.as_user(&a);
    let chat = id_of(&client.private_chat(b.id).await, "id");
    let path = format!("/v1/chats/{chat}/messages");
    let body = json!({"client_msg_id": "same-id", "text": "once"});
    let results = futures_util::future::join_all((0..8).map(|_| client.post(&path, &body))).await;
    let created = results.iter().filter(|r| r.0 == 201).count();
    let replayed = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(
        (created, replayed),
        (1, 7),
        "one 201 and seven 200: {:?}",
        results.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let ids: HashSet<u64> = results
        .iter()
        .map(|r| id_of(&r.1["message"], "id"))
        .collect();
    assert_eq!(ids.len(), 1, "all answers carry the same message");
    let all = client.all_messages(chat).await;
    assert_eq!(all.len(), 1, "one stored message");
    assert_status(&client.get(&format!("/v1/chats/{chat}")).await, 200, "chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_private_chat_creation_gives_one_chat() {
    let stack = Stack::start(StackOptions::gateways(0)).await;
    let api = stack.api();
    let a = api.new_user("pca").await;
    let b = api.new_user("pcb").await;
    let as_a = api.as_user(&a);
    let as_b = api.as_user(&b);
    let to_b = json!({"type": "private", "peer_id": b.id});
    let to_a = json!({"type": "private", "peer_id": a.id});
    let requests = (0..8).map(|i| {
        let (client, body) = if i % 2 == 0 {
            (&as_a, &to_b)
        } else {
            (&as_b, &to_a)
        };
        client.post("/v1/chats", body)
    });
    let results = futures_util::future::join_all(requests).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.0).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "exactly one creation: {statuses:?} {results:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "the rest get the existing chat: {statuses:?}"
    );
    let ids: HashSet<u64> = results.iter().map(|r| id_of(&r.1, "id")).collect();
    assert_eq!(ids.len(), 1, "one chat id: {ids:?}");
    let list = as_a.get("/v1/chats").await;
    assert_eq!(
        list.1["chats"].as_array().map(Vec::len),
        Some(1),
        "{}",
        list.1
    );
}
