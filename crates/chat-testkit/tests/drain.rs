//! Graceful drain: on SIGTERM a gateway turns not ready, refuses new sockets and closes its
//! sockets with 1012 spread over CHAT_DRAIN_SECS (so reconnects don't stampede), then exits.

use std::time::{Duration, Instant};

use chat_testkit::{Stack, StackOptions, WsClient};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_spreads_1012_closes_over_the_drain_window() {
    let mut stack = Stack::start(StackOptions {
        gateways: 1,
        gateway_env: vec![("CHAT_DRAIN_SECS".into(), "2".into())],
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let users = api.new_users("dr", 10).await;
    let mut sockets = Vec::new();
    for user in &users {
        sockets.push(WsClient::authed(&stack.gateway_ws_url(0), &user.token).await);
    }
    let ws_url = stack.gateway_ws_url(0);
    let readyz = format!(
        "{}/readyz",
        ws_url.replace("ws://", "http://").trim_end_matches("/ws")
    );

    let started = Instant::now();
    let closes = tokio::spawn(futures_util::future::join_all(sockets.into_iter().map(
        move |mut ws| async move {
            let code = ws.expect_close(1012, Duration::from_secs(10)).await;
            (code, started.elapsed())
        },
    )));
    let terminate = tokio::spawn(async move { stack.terminate_gateway(0).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = reqwest::get(&readyz)
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert!(
        status == 503 || status == 0,
        "a draining gateway is not ready (got {status})"
    );

    let closes = closes.await.expect("close watcher");
    assert!(
        terminate.await.expect("terminate").success(),
        "the gateway exits cleanly"
    );
    assert!(closes.iter().all(|(code, _)| *code == 1012), "{closes:?}");
    let first = closes.iter().map(|(_, at)| *at).min().unwrap_or_default();
    let last = closes.iter().map(|(_, at)| *at).max().unwrap_or_default();
    assert!(
        last - first >= Duration::from_millis(1500),
        "closes should spread over the 2 s window, got {first:?}..{last:?}"
    );
}
