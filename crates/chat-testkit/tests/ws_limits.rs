//! Gateway limits that need tuned settings to test quickly: the idle timeout (1001) and the
//! outbound queue of a client that does not read (4008). The settings are the gateway's env
//! twins of its flags (`CHAT_IDLE_TIMEOUT_SECS`, `CHAT_PING_INTERVAL_SECS`, `CHAT_OUTBOUND_QUEUE`).

use std::time::Duration;

use chat_testkit::{Stack, StackOptions, WAIT, WsClient, env_vars, id_of, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_socket_closes_1001_and_client_frames_keep_it_alive() {
    // The server pings every 20 s (default), so within the 2 s idle timeout the silent socket
    // gets nothing to answer: it is idle.
    let stack = Stack::start(StackOptions {
        gateways: 1,
        gateway_env: env_vars(&[("CHAT_IDLE_TIMEOUT_SECS", "2")]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("idle").await;
    let url = stack.gateway_ws_url(0);
    let started = std::time::Instant::now();
    let mut silent = WsClient::authed(&url, &user.token).await.labeled("silent");
    let mut chatty = WsClient::authed(&url, &user.token).await.labeled("chatty");
    for i in 0..7 {
        let pong = chatty
            .request(&json!({"type": "ping", "id": i}), WAIT)
            .await;
        assert_eq!(
            pong["type"],
            json!("pong"),
            "chatty socket alive after {i} pings"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    silent.expect_close(1001, WAIT).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1900),
        "closed before the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_pongs_count_as_activity() {
    let stack = Stack::start(StackOptions {
        gateways: 1,
        gateway_env: env_vars(&[
            ("CHAT_IDLE_TIMEOUT_SECS", "2"),
            ("CHAT_PING_INTERVAL_SECS", "1"),
        ]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("pongs").await;
    // The client only reads; tungstenite answers each server ping with a pong on its own.
    let mut reader = WsClient::authed(&stack.gateway_ws_url(0), &user.token)
        .await
        .labeled("reader");
    let frames = reader.collect_for(Duration::from_millis(3500)).await;
    assert!(
        !reader.is_ended(),
        "a socket answering pings was closed as idle (frames: {frames:?})"
    );
    let pong = reader
        .request(&json!({"type": "ping", "id": "alive"}), WAIT)
        .await;
    assert_eq!(pong["type"], json!("pong"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_that_does_not_read_is_closed_4008() {
    let stack = Stack::start(StackOptions {
        gateways: 1,
        gateway_env: env_vars(&[("CHAT_OUTBOUND_QUEUE", "16")]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let a = api.new_user("fast").await;
    let b = api.new_user("slow").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let mut slow = WsClient::connect_small_buffer(&stack.gateway_ws_url(0), &b.token)
        .await
        .expect("connect the slow reader")
        .labeled("slow");
    let mut healthy = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A");

    // About 6 MB of events (20 KB each): more than the kernel buffers plus 16 queued frames.
    let text = "😀".repeat(5000);
    let sender = api.as_user(&a);
    let tasks: Vec<_> = (0..4)
        .map(|t| {
            let sender = sender.clone();
            let text = text.clone();
            tokio::spawn(async move {
                for k in 0..75 {
                    sender.send_text(chat, &format!("big-{t}-{k}"), &text).await;
                }
            })
        })
        .collect();
    // Meanwhile the sender's own socket reads normally and must not be affected.
    let drain = tokio::spawn(async move {
        let frames = healthy.collect_for(Duration::from_secs(30)).await;
        (healthy, frames)
    });
    for task in tasks {
        task.await.expect("sender task");
    }
    slow.expect_close(4008, Duration::from_secs(15)).await;
    drain.abort();
}
