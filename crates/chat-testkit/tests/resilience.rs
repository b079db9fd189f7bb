//! chat-api when MySQL or Redis goes away (through a TCP proxy the test cuts): `/readyz` says
//! 503, requests get 503 `unavailable` quickly, and everything works again once it is back.

use std::time::{Duration, Instant};

use chat_testkit::{ApiClient, Stack, StackOptions, assert_error, assert_status, id_of, json};

/// Polls `/readyz` until it answers `status`.
async fn wait_readyz(api: &ApiClient, status: u16, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let resp = api.get("/readyz").await;
        if resp.0 == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz still answers {} {} after {within:?} (want {status})",
            resp.0,
            resp.1
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs a request and checks that it answered within `limit` (no hanging on a dead backend).
async fn timed<F: std::future::Future<Output = chat_testkit::Resp>>(
    what: &str,
    limit: Duration,
    f: F,
) -> chat_testkit::Resp {
    let started = Instant::now();
    let resp = f.await;
    let took = started.elapsed();
    assert!(
        took <= limit,
        "{what} took {took:?} (limit {limit:?}): {resp:?}"
    );
    resp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_outage_gives_503_then_recovers() {
    let stack = Stack::start(StackOptions {
        gateways: 0,
        proxy_mysql: true,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let a = api.new_user("dba").await;
    let b = api.new_user("dbb").await;
    let as_a = api.as_user(&a);
    let chat = id_of(&as_a.private_chat(b.id).await, "id");
    as_a.send_text(chat, "before", "before the outage").await;

    stack.mysql_proxy().set_down(true);
    wait_readyz(&api, 503, Duration::from_secs(10)).await;
    let limit = Duration::from_secs(10);
    let resp = timed(
        "send during the outage",
        limit,
        as_a.post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "during", "text": "lost?"}),
        ),
    )
    .await;
    assert_error(&resp, 503, "unavailable", "send while MySQL is down");
    let resp = timed("list chats during the outage", limit, as_a.get("/v1/chats")).await;
    assert_error(&resp, 503, "unavailable", "list chats while MySQL is down");
    let resp = timed(
        "login during the outage",
        limit,
        api.post(
            "/v1/auth/login",
            &json!({"username": a.username, "password": a.password}),
        ),
    )
    .await;
    assert_error(&resp, 503, "unavailable", "login while MySQL is down");
    assert_status(
        &api.get("/healthz").await,
        200,
        "healthz stays 200 (the process runs)",
    );

    stack.mysql_proxy().set_down(false);
    wait_readyz(&api, 200, Duration::from_secs(15)).await;
    // The client retries with the same client_msg_id, as the contract suggests.
    let resp = as_a
        .post(
            &format!("/v1/chats/{chat}/messages"),
            &json!({"client_msg_id": "during", "text": "lost?"}),
        )
        .await;
    assert!(
        resp.0 == 201 || resp.0 == 200,
        "retry after the outage: {} {}",
        resp.0,
        resp.1
    );
    let all = as_a.all_messages(chat).await;
    let seqs: Vec<u64> = all.iter().map(|m| id_of(m, "seq")).collect();
    assert_eq!(seqs, vec![1, 2], "one message before, one after: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_gives_503_then_recovers() {
    let stack = Stack::start(StackOptions {
        gateways: 0,
        proxy_api_redis: true,
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let user = api.new_user("rdo").await;
    let as_user = api.as_user(&user);

    stack.redis_proxy().set_down(true);
    wait_readyz(&api, 503, Duration::from_secs(10)).await;
    // Logging out needs Redis (the revocation lives there): it must not pretend to succeed.
    let resp = timed(
        "logout during the outage",
        Duration::from_secs(10),
        as_user.post_empty("/v1/auth/logout"),
    )
    .await;
    assert_error(&resp, 503, "unavailable", "logout while Redis is down");

    stack.redis_proxy().set_down(false);
    wait_readyz(&api, 200, Duration::from_secs(15)).await;
    assert_status(&as_user.get("/v1/users/me").await, 200, "token still valid");
    assert_status(
        &as_user.post_empty("/v1/auth/logout").await,
        204,
        "logout after recovery",
    );
    assert_error(
        &as_user.get("/v1/users/me").await,
        401,
        "unauthorized",
        "revoked after recovery",
    );
}
