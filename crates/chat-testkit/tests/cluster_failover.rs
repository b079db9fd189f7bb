//! Redis Cluster failover: the master that owns the receiver's channel is shut down while the
//! sender keeps sending. Its replica is promoted, the gateway resubscribes and tells its sockets
//! to `resync`; a client that refills from history on `resync` ends up with every acked message.
//! (Its own binary, so no other test shares the cluster while a master is down.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chat_testkit::redis_target::{cluster_script, connect, master_of};
use chat_testkit::{ApiClient, RedisTarget, Stack, StackOptions, Value, WsClient, id_of, json};

/// Restarts the stopped node (it rejoins as a replica) even when the test fails.
struct RestartOnDrop(String);

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        if let Err(e) =
            cluster_script(&["restart-node", &self.0]).and_then(|()| cluster_script(&["start"]))
        {
            eprintln!("could not restore the cluster node {}: {e:#}", self.0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_master_failover_loses_no_acked_message() {
    let cluster = RedisTarget::cluster();
    let stack = Stack::start(StackOptions {
        gateways: 2,
        redis: Some(cluster.clone()),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("fo_a").await;
    let bob = api.new_user("fo_b").await;
    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");
    let bob_channel = format!("{}:u:{{{}}}", stack.redis_prefix(), bob.id);
    let victim = master_of(cluster.first_url(), &bob_channel)
        .await
        .expect("owner of bob's channel");
    let victim_port = victim.rsplit(':').next().unwrap_or_default().to_string();

    let bob_ws = WsClient::authed(&stack.gateway_ws_url(1), &bob.token)
        .await
        .labeled("bob@gw2");
    let receiver = tokio::spawn(receive(
        bob_ws,
        api.as_user(&bob),
        chat_id,
        Duration::from_secs(16),
    ));

    let sender = api.as_user(&alice);
    let started = Instant::now();
    let mut acked = BTreeSet::new();
    let mut guard = None;
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(9) {
        if guard.is_none() && started.elapsed() > Duration::from_secs(2) {
            shutdown_node(&victim).await;
            guard = Some(RestartOnDrop(victim_port.clone()));
        }
        acked.insert(send_until_acked(&sender, chat_id, &format!("fo-{i}")).await);
        i += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(guard.is_some(), "the master was never stopped");
    let (received, resyncs) = receiver.await.expect("receiver task");

    let lost: Vec<_> = acked.difference(&received).collect();
    println!(
        "failover of {victim}: acked {}, received {}, resyncs {resyncs}, lost {}",
        acked.len(),
        received.len(),
        lost.len()
    );
    // Enough traffic on both sides of the failover for the test to mean something. Sends
    // block while the slot's master is gone (each is retried until acked), so how many fit in
    // the 9 s varies with how long the promotion takes: 75 to 150 here.
    assert!(
        acked.len() > 50,
        "too few messages were sent: {}",
        acked.len()
    );
    assert!(resyncs >= 1, "the gateway never told the socket to resync");
    assert!(lost.is_empty(), "acked but never received: {lost:?}");
}

/// Sends with one client_msg_id until chat-api acks it (503s while a master is down are retried,
/// and the retries are idempotent); returns the message id.
async fn send_until_acked(api: &ApiClient, chat_id: u64, client_msg_id: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api
            .post(
                &format!("/v1/chats/{chat_id}/messages"),
                &json!({"client_msg_id": client_msg_id, "text": client_msg_id}),
            )
            .await;
        if status == 201 || status == 200 {
            return id_of(&body["message"], "id");
        }
        assert!(
            status == 503,
            "send {client_msg_id}: unexpected {status} {body}"
        );
        assert!(
            Instant::now() < deadline,
            "send {client_msg_id} kept failing: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Collects message ids from live events; on `resync`, refills from history after the last seq
/// it has without a gap before it. Returns the ids and how many resyncs came.
async fn receive(
    mut ws: WsClient,
    api: ApiClient,
    chat_id: u64,
    for_how_long: Duration,
) -> (BTreeSet<u64>, usize) {
    let mut ids = BTreeSet::new();
    let mut seqs = BTreeSet::new();
    let mut resyncs = 0;
    let deadline = Instant::now() + for_how_long;
    while Instant::now() < deadline {
        let Some(frame) = ws.recv_json_opt(Duration::from_millis(200)).await else {
            continue;
        };
        match frame["type"].as_str() {
            Some("new_message") => {
                ids.insert(id_of(&frame["message"], "id"));
                seqs.insert(id_of(&frame["message"], "seq"));
            }
            Some("resync") => {
                resyncs += 1;
                let contiguous = (1..)
                    .take_while(|seq| seqs.contains(seq))
                    .last()
                    .unwrap_or(0);
                for message in history_after(&api, chat_id, contiguous).await {
                    ids.insert(id_of(&message, "id"));
                    seqs.insert(id_of(&message, "seq"));
                }
            }
            _ => {}
        }
    }
    (ids, resyncs)
}

async fn history_after(api: &ApiClient, chat_id: u64, after: u64) -> Vec<Value> {
    api.all_messages(chat_id)
        .await
        .into_iter()
        .filter(|m| id_of(m, "seq") > after)
        .collect()
}

async fn shutdown_node(addr: &str) {
    let mut conn = connect(&format!("redis://{addr}"))
        .await
        .expect("connect to the victim");
    // The node exits without answering, so the command "fails".
    let _: Result<(), _> = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async(&mut conn)
        .await;
}
