use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use axum::middleware;
use axum::routing::get;
use tower::ServiceExt;

use super::*;

fn gate(concurrency: usize, queue: usize, wait_ms: u64) -> Arc<Gate> {
    Arc::new(Gate::new(
        Class::Sync,
        ClassLimits {
            concurrency,
            queue,
            wait: Duration::from_millis(wait_ms),
        },
        Duration::from_secs(2),
    ))
}

#[tokio::test]
async fn a_waiter_gets_the_permit_released_within_its_deadline() {
    let gate = gate(1, 4, 10_000);
    let first = gate.admit().await.expect("a free permit");
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(gate.waiting(), 1);
    drop(first);
    assert_eq!(waiter.await.expect("joined"), Ok(()));
    assert_eq!(gate.waiting(), 0);
}

#[tokio::test]
async fn a_waiter_is_refused_at_its_deadline_and_leaves_the_queue() {
    let gate = gate(1, 4, 100);
    let _held = gate.admit().await.expect("a free permit");
    let started = tokio::time::Instant::now();
    assert_eq!(gate.admit().await.err(), Some(Refused::Deadline));
    assert!(started.elapsed() >= Duration::from_millis(100));
    assert_eq!(gate.waiting(), 0);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_and_waiters_are_served_in_order() {
    let gate = gate(1, 2, 10_000);
    let held = gate.admit().await.expect("a free permit");
    let (order_tx, mut order_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for n in 0..2 {
        let (gate, order_tx) = (gate.clone(), order_tx.clone());
        waiters.push(tokio::spawn(async move {
            let permit = gate.admit().await.expect("served in time");
            order_tx.send(n).expect("send");
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(permit);
        }));
        // Each joins the queue before the next one arrives.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(gate.waiting(), 2);
    let started = tokio::time::Instant::now();
    assert_eq!(gate.admit().await.err(), Some(Refused::QueueFull));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting for the 10 s deadline"
    );
    drop(held);
    for waiter in waiters {
        waiter.await.expect("joined");
    }
    assert_eq!(order_rx.recv().await, Some(0));
    assert_eq!(order_rx.recv().await, Some(1));
}

#[tokio::test]
async fn a_dropped_waiter_frees_its_place_in_the_queue() {
    let gate = gate(1, 1, 10_000);
    let _held = gate.admit().await.expect("a free permit");
    let waiter = tokio::spawn({
        let gate = gate.clone();
        async move { gate.admit().await.map(drop) }
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(gate.waiting(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(
        gate.waiting(),
        0,
        "the client hung up: its place is free again"
    );
}

#[tokio::test]
async fn concurrency_zero_admits_everything() {
    let gate = gate(0, 0, 0);
    let permits: Vec<_> = futures_util::future::join_all((0..100).map(|_| gate.admit())).await;
    assert!(permits.iter().all(Result::is_ok));
}

#[tokio::test]
async fn a_refused_request_gets_503_unavailable_with_retry_after_and_its_handler_never_runs() {
    let gate = gate(1, 0, 0);
    let ran = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/",
            get({
                let ran = ran.clone();
                move || async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    "ok"
                }
            }),
        )
        .route_layer(middleware::from_fn_with_state(gate.clone(), admit));
    let ok = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(ok.status(), StatusCode::OK);

    let _held = gate.admit().await.expect("the only permit");
    let refused = app
        .oneshot(Request::get("/").body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        refused.headers().get(header::RETRY_AFTER),
        Some(&HeaderValue::from_static("2"))
    );
    let body = axum::body::to_bytes(refused.into_body(), 4096)
        .await
        .expect("body");
    let body: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(body["error"]["code"], "unavailable");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "only the admitted request ran"
    );
}

#[test]
fn the_default_turns_come_from_the_database_pool() {
    use clap::Parser;
    let parse = |args: &[&str]| {
        crate::Config::try_parse_from(
            ["chat-api", "--database-url", "mysql://root@127.0.0.1/x"]
                .iter()
                .chain(args),
        )
        .expect("valid flags")
        .admission()
    };
    let limits = parse(&[]);
    // 32 connections, one kept by the send writer: half of the 31 others.
    assert_eq!(limits.sync.concurrency, 15);
    assert_eq!(limits.write.concurrency, 128);
    assert_eq!(limits.retry_after, Duration::from_secs(1));
    let small = parse(&["--db-max-connections", "2", "--send-writers", "1"]);
    assert_eq!(small.sync.concurrency, 1, "never no turn at all");
    let set = parse(&["--sync-concurrency", "0", "--write-concurrency", "7"]);
    assert_eq!((set.sync.concurrency, set.write.concurrency), (0, 7));
}
