//! Resumes and syncs served from the bus's recent-event log instead of the database: a recent
//! cursor is replayed from the log (the gateway counts `chat_gateway_replays_total{source="log"}`,
//! chat-api `chat_sync_total{source="log"}`) with exactly the events the database gives from
//! that cursor; a cursor older than the log, or a log trimmed by count, falls back to the
//! database; a group the user left is not replayed; after its subscription was lost, a gateway
//! trusts the log only from the reconnection on (a private Redis; skipped by
//! `make test-embedded`); while a write is late to publish, syncs stay on the database (MySQL's
//! chat lock; skipped there too).
//!
//! A channel's log covers events from a few seconds after the store started on (the clock
//! allowance of `chat_bus`'s `recent` module); the tests wait that long where the store may
//! have just started (the embedded process's memory bus).

use std::time::Duration;

use chat_testkit::{
    Auth, Format, QUIET, Stack, StackOptions, TestUser, Value, WAIT, WsClient, assert_status,
    id_of, json, metric_value, metrics_page,
};

/// Longer than the log's clock allowance (`RECENT_LOG_SKEW_MS`, 5 s).
const SETTLE: Duration = Duration::from_millis(5_500);

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The value of one series on a `/metrics` page (0 when absent).
async fn series_value(base: &str, series: &str) -> f64 {
    metric_value(&metrics_page(base).await, series).unwrap_or(0.0)
}

/// `chat_gateway_replays_total{source=...}` of gateway 0.
async fn replays(stack: &Stack, source: &str) -> f64 {
    let series = format!("chat_gateway_replays_total{{source=\"{source}\"}}");
    series_value(&stack.gateway_http_url(0), &series).await
}

/// `chat_sync_total{source=...}` of chat-api.
async fn syncs(stack: &Stack, source: &str) -> f64 {
    let series = format!("chat_sync_total{{source=\"{source}\"}}");
    series_value(&stack.api_url(), &series).await
}

/// What the database gives from `cursor`: a sync from the beginning (older than any log),
/// without the events before the cursor (an event's own cursor lies the overlap before it).
async fn database_events_since(stack: &Stack, user: &TestUser, cursor: &str) -> Vec<Value> {
    let since: i64 = cursor
        .strip_prefix('c')
        .and_then(|c| c.parse().ok())
        .expect("a cursor");
    let before = syncs(stack, "database").await;
    let all = sync_events(stack, user, "c0").await;
    assert!(
        syncs(stack, "database").await > before,
        "a sync from c0 is the database's"
    );
    all.into_iter()
        .filter(|event| {
            let at = event["cursor"]
                .as_str()
                .and_then(|c| c.strip_prefix('c'))
                .and_then(|c| c.parse::<i64>().ok())
                .expect("an event's cursor")
                + 5_000;
            at >= since
        })
        .collect()
}

/// Connects `user` with `?since=cursor` and reads the replay up to `synced`.
async fn resume(stack: &Stack, user: &TestUser, cursor: &str) -> (WsClient, Vec<Value>, Value) {
    let url = format!("{}?since={cursor}", stack.gateway_ws_url(0));
    let mut ws = WsClient::connect(&url, Auth::Query(&user.token), Format::Json)
        .await
        .expect("connect");
    assert_eq!(ws.recv_json(WAIT).await["type"], json!("auth_ok"));
    let mut replayed = Vec::new();
    loop {
        let frame = ws.recv_json(WAIT).await;
        match frame["type"].as_str() {
            Some("synced") => return (ws, replayed, frame),
            Some("presence" | "typing") => {}
            _ => replayed.push(frame),
        }
    }
}

/// Every event of `GET /v1/sync` from `cursor`, all pages.
async fn sync_events(stack: &Stack, user: &TestUser, cursor: &str) -> Vec<Value> {
    let api = stack.api().as_user(user);
    let mut cursor = cursor.to_string();
    let mut events = Vec::new();
    loop {
        let resp = api.get(&format!("/v1/sync?since={cursor}")).await;
        assert_status(&resp, 200, "sync");
        events.extend(resp.1["events"].as_array().cloned().unwrap_or_default());
        cursor = resp.1["cursor"].as_str().expect("cursor").to_string();
        if resp.1["has_more"] != json!(true) {
            return events;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recent_cursor_is_replayed_from_the_log_as_sync_gives_it() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let (a, b, c) = (
        api.new_user("la").await,
        api.new_user("lb").await,
        api.new_user("lc").await,
    );
    let alice = api.as_user(&a);
    let bob = api.as_user(&b);
    let carol = api.as_user(&c);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    let group = id_of(&alice.group_chat("log", &[b.id, c.id]).await, "id");
    let p0 = alice.send_text(private, "p0", "before").await;
    let g0 = carol.send_text(group, "g0", "before").await;
    tokio::time::sleep(SETTLE).await;

    // Bob is away from here on.
    let cursor = format!("c{}", now_ms());
    alice.send_text(private, "p1", "private").await;
    carol.send_text(group, "g1", "group").await;
    let edited = alice
        .patch(
            &format!("/v1/chats/{private}/messages/{}", id_of(&p0, "id")),
            &json!({"text": "edited"}),
        )
        .await;
    assert_status(&edited, 200, "edit");
    let deleted = carol
        .delete(&format!("/v1/chats/{group}/messages/{}", id_of(&g0, "id")))
        .await;
    assert_status(&deleted, 204, "delete");
    for (who, chat, seq) in [(&bob, private, 2), (&alice, group, 2)] {
        let read = who
            .post(
                &format!("/v1/chats/{chat}/read"),
                &json!({"up_to_seq": seq}),
            )
            .await;
        assert_status(&read, 204, "read");
    }
    assert_status(
        &carol.post_empty(&format!("/v1/chats/{group}/typing")).await,
        204,
        "typing",
    );
    let mut alice_ws = WsClient::authed(&stack.gateway_ws_url(0), &a.token).await;
    let ack = alice_ws
        .request(
            &json!({"type": "delivered", "id": "d1", "chat_id": group, "up_to_seq": 2}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    alice_ws.close().await;

    let (mut ws, replayed, synced) = resume(&stack, &b, &cursor).await;
    assert_eq!(replays(&stack, "log").await, 1.0, "served from the log");
    assert_eq!(replays(&stack, "api").await, 0.0);
    let expected = database_events_since(&stack, &b, &cursor).await;
    assert_eq!(
        expected.len(),
        6,
        "two messages, two updates, two reads: {expected:?}"
    );
    assert_eq!(
        replayed, expected,
        "the log replays what the database gives"
    );
    let synced_from_log = sync_events(&stack, &b, &cursor).await;
    assert_eq!(syncs(&stack, "log").await, 1.0, "the sync is the log's");
    assert_eq!(synced_from_log, expected, "and gives the same");
    let synced_ms: u64 = synced["cursor"]
        .as_str()
        .and_then(|c| c.strip_prefix('c'))
        .and_then(|c| c.parse().ok())
        .expect("synced cursor");
    assert!(
        synced_ms + 10_000 > now_ms(),
        "synced points near now: {synced}"
    );

    // Live after the replay, nothing repeated.
    alice.send_text(private, "p2", "live").await;
    let live = ws.recv_until("new_message", WAIT).await;
    assert_eq!(id_of(&live["message"], "seq"), 3);
    ws.expect_no_frame_of_type("new_message", QUIET).await;

    // The resume frame goes through the log too.
    ws.send_json(&json!({"type": "resume", "since": cursor}))
        .await;
    loop {
        if ws.recv_json(WAIT).await["type"] == json!("synced") {
            break;
        }
    }
    assert_eq!(replays(&stack, "log").await, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_cursor_or_a_trimmed_log_falls_back_to_the_api() {
    let stack = Stack::start(StackOptions {
        api_env: vec![("CHAT_RECENT_LOG_MAX".into(), "3".into())],
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let (a, b) = (api.new_user("ta").await, api.new_user("tb").await);
    let alice = api.as_user(&a);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    alice.send_text(private, "t0", "before").await;
    tokio::time::sleep(SETTLE).await;

    // Within the log's bounds: served from it.
    let cursor = format!("c{}", now_ms());
    alice.send_text(private, "t1", "one").await;
    let (ws, replayed, _) = resume(&stack, &b, &cursor).await;
    ws.close().await;
    assert_eq!(replays(&stack, "log").await, 1.0);
    assert_eq!(replayed.len(), 1);

    // Four more events in a log of three: the first is trimmed, the cursor is no longer covered.
    for i in 2..=5 {
        alice.send_text(private, &format!("t{i}"), "more").await;
    }
    let (ws, replayed, _) = resume(&stack, &b, &cursor).await;
    ws.close().await;
    assert_eq!(
        replays(&stack, "api").await,
        1.0,
        "a trimmed log is not used"
    );
    let seqs: Vec<u64> = replayed
        .iter()
        .map(|e| id_of(&e["message"], "seq"))
        .collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6], "the api replays everything");

    // Older than the log.
    let (ws, replayed, _) = resume(&stack, &b, "c0").await;
    ws.close().await;
    assert_eq!(replays(&stack, "api").await, 2.0);
    assert_eq!(replayed.len(), 6);
    assert_eq!(replays(&stack, "log").await, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chats_first_messages_are_replayed_from_the_log() {
    let stack = Stack::start(StackOptions::default()).await;
    // The store (Redis, or the embedded process's memory bus) up for longer than the clock
    // allowance: a channel never written counts as complete from its start plus the allowance.
    tokio::time::sleep(SETTLE).await;
    let api = stack.api();
    let (a, b, c) = (
        api.new_user("na").await,
        api.new_user("nb").await,
        api.new_user("nc").await,
    );
    let alice = api.as_user(&a);
    let cursor = format!("c{}", now_ms());
    let private = id_of(&alice.private_chat(b.id).await, "id");
    let group = id_of(&alice.group_chat("new", &[b.id, c.id]).await, "id");
    alice.send_text(private, "n1", "first").await;
    alice.send_text(group, "n2", "first in the group").await;

    let (ws, replayed, _) = resume(&stack, &b, &cursor).await;
    ws.close().await;
    assert_eq!(
        (replays(&stack, "log").await, replays(&stack, "api").await),
        (1.0, 0.0),
        "channels first written after the cursor are served from the log"
    );
    let texts: Vec<&str> = replayed
        .iter()
        .filter_map(|e| e["message"]["text"].as_str())
        .collect();
    assert_eq!(texts, vec!["first", "first in the group"]);
    let synced = sync_events(&stack, &b, &cursor).await;
    assert_eq!(syncs(&stack, "log").await, 1.0, "the sync is the log's");
    let from_database = database_events_since(&stack, &b, &cursor).await;
    assert_eq!(synced, from_database, "the database gives the same");
    let synced: Vec<&str> = synced
        .iter()
        .filter_map(|e| e["message"]["text"].as_str())
        .collect();
    assert_eq!(synced, texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_the_user_left_is_not_replayed() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let (a, b) = (api.new_user("ga").await, api.new_user("gb").await);
    let alice = api.as_user(&a);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    let group = id_of(&alice.group_chat("left", &[b.id]).await, "id");
    alice.send_text(private, "q0", "before").await;
    alice.send_text(group, "h0", "before").await;
    tokio::time::sleep(SETTLE).await;

    let cursor = format!("c{}", now_ms());
    alice.send_text(group, "h1", "while a member").await;
    let removed = alice
        .delete(&format!("/v1/chats/{group}/members/{}", b.id))
        .await;
    assert!(removed.0 == 204 || removed.0 == 200, "remove: {removed:?}");
    alice.send_text(group, "h2", "after").await;
    alice.send_text(private, "q1", "private").await;

    let (_ws, replayed, _) = resume(&stack, &b, &cursor).await;
    assert_eq!(replays(&stack, "log").await, 1.0);
    let chats: Vec<u64> = replayed
        .iter()
        .map(|e| id_of(&e["message"], "chat_id"))
        .collect();
    assert_eq!(chats, vec![private], "only the private chat: {replayed:?}");
    assert_eq!(replayed, sync_events(&stack, &b, &cursor).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_from_the_log_while_messages_flow_has_no_gap_and_no_repeat() {
    let stack = Stack::start(StackOptions::default()).await;
    let api = stack.api();
    let (a, b) = (api.new_user("fa").await, api.new_user("fb").await);
    let alice = api.as_user(&a);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    alice.send_text(private, "x0", "before").await;
    tokio::time::sleep(SETTLE).await;

    let cursor = format!("c{}", now_ms());
    let total = 60u64;
    let sender = tokio::spawn(async move {
        for i in 1..=total {
            alice.send_text(private, &format!("x{i}"), "flow").await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut ws, replayed, _) = resume(&stack, &b, &cursor).await;
    let mut seen: Vec<u64> = replayed
        .iter()
        .map(|e| id_of(&e["message"], "seq"))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while (seen.len() as u64) < total && tokio::time::Instant::now() < deadline {
        if let Some(frame) = ws.recv_json_opt(Duration::from_secs(2)).await
            && frame["type"] == json!("new_message")
        {
            seen.push(id_of(&frame["message"], "seq"));
        }
    }
    sender.await.expect("sender");
    let extra = ws.collect_for(QUIET).await;
    seen.extend(
        extra
            .iter()
            .filter(|f| f["type"] == json!("new_message"))
            .map(|f| id_of(&f["message"], "seq")),
    );
    assert_eq!(replays(&stack, "log").await, 1.0, "served from the log");
    let expected: Vec<u64> = (2..=total + 1).collect();
    assert_eq!(
        seen, expected,
        "every message exactly once, in order, across the seam"
    );
}

/// Sends a `resume` frame and reads up to its `synced`.
async fn resume_frame(ws: &mut WsClient, cursor: &str) {
    ws.send_json(&json!({"type": "resume", "since": cursor}))
        .await;
    ws.recv_until("synced", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_subscription_is_back_a_gateway_trusts_the_log_only_from_then() {
    // A private Redis, so dropping its pub/sub connections touches no one else's test.
    let redis = chat_testkit::chaos::PrivateRedis::start()
        .await
        .expect("private redis-server");
    let stack = Stack::start(StackOptions {
        redis: Some(redis.target()),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let (a, b) = (api.new_user("sa").await, api.new_user("sb").await);
    let alice = api.as_user(&a);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    alice.send_text(private, "s0", "before").await;
    tokio::time::sleep(SETTLE).await;
    let before = format!("c{}", now_ms());
    alice.send_text(private, "s1", "one").await;
    let (mut ws, _) = WsClient::connect_ok(
        &stack.gateway_ws_url(0),
        Auth::Header(&b.token),
        Format::Json,
    )
    .await;
    resume_frame(&mut ws, &before).await;
    assert_eq!(replays(&stack, "log").await, 1.0, "trusted before the drop");

    let mut conn = chat_testkit::redis_target::connect(&redis.url())
        .await
        .expect("redis");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(&mut conn)
        .await
        .expect("CLIENT KILL");
    ws.recv_until("resync", Duration::from_secs(10)).await;
    let back = now_ms();
    resume_frame(&mut ws, &before).await;
    assert_eq!(
        replays(&stack, "api").await,
        1.0,
        "not trusted from before the drop"
    );

    // From the reconnection (plus the clock allowance) on, the log serves again.
    tokio::time::sleep(SETTLE).await;
    let after = format!("c{}", back + 5_100);
    alice.send_text(private, "s2", "two").await;
    resume_frame(&mut ws, &after).await;
    assert_eq!(
        replays(&stack, "log").await,
        2.0,
        "trusted again after the drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_pages_from_the_log_and_an_old_cursor_goes_to_the_database() {
    let stack = Stack::start(StackOptions::default()).await;
    tokio::time::sleep(SETTLE).await;
    let api = stack.api();
    let (a, b) = (api.new_user("sa").await, api.new_user("sb").await);
    let alice = api.as_user(&a);
    let bob = api.as_user(&b);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    let cursor = format!("c{}", now_ms());
    for i in 0..7 {
        alice.send_text(private, &format!("s{i}"), "paged").await;
        // Distinct milliseconds, so that every page can end at one.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut pages = 0;
    let mut seqs = Vec::new();
    let mut next = cursor.clone();
    loop {
        let page = bob.get(&format!("/v1/sync?since={next}&limit=3")).await;
        assert_status(&page, 200, "sync");
        pages += 1;
        let events = page.1["events"].as_array().cloned().unwrap_or_default();
        assert!(events.len() <= 3, "at most the limit: {}", page.1);
        seqs.extend(events.iter().map(|e| id_of(&e["message"], "seq")));
        next = page.1["cursor"].as_str().expect("cursor").to_string();
        if page.1["has_more"] != json!(true) {
            break;
        }
    }
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<u64>>(),
        "every message once, in order"
    );
    assert!(pages >= 3, "seven events in pages of three: {pages} pages");
    assert_eq!(
        syncs(&stack, "log").await,
        pages as f64,
        "every page from the log"
    );
    assert_eq!(syncs(&stack, "database").await, 0.0);

    let from_database = database_events_since(&stack, &b, &cursor).await;
    assert_eq!(from_database.len(), 7);
    assert_eq!(
        syncs(&stack, "database").await,
        1.0,
        "c0 is older than the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_a_write_is_late_to_publish_syncs_stay_on_the_database() {
    let stack = Stack::start(StackOptions::default()).await;
    tokio::time::sleep(SETTLE).await;
    let api = stack.api();
    let (a, b) = (api.new_user("wa").await, api.new_user("wb").await);
    let alice = api.as_user(&a);
    let bob = api.as_user(&b);
    let private = id_of(&alice.private_chat(b.id).await, "id");
    alice.send_text(private, "w0", "first").await;
    let cursor = format!("c{}", now_ms());

    // The chat's send lock (a MySQL named lock) held from outside: the next send waits for it.
    let mut holder = stack.db().connect().await.expect("a database connection");
    let lock = format!("SELECT GET_LOCK(LEFT(CONCAT(DATABASE(), '/chat/{private}'), 64), 5)");
    let (granted,): (Option<i64>,) = sqlx::query_as(&lock)
        .fetch_one(&mut holder)
        .await
        .expect("GET_LOCK");
    assert_eq!(granted, Some(1), "the test holds the chat's lock");
    let sender = {
        let alice = stack.api().as_user(&a);
        tokio::spawn(async move { alice.send_text(private, "w1", "late").await })
    };
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let during = sync_events(&stack, &b, &cursor).await;
    assert!(during.is_empty(), "nothing new is stored yet: {during:?}");
    assert_eq!(
        (syncs(&stack, "log").await, syncs(&stack, "database").await),
        (0.0, 1.0),
        "a write past its deadline keeps syncs on the database"
    );

    sqlx::query(&format!(
        "DO RELEASE_LOCK(LEFT(CONCAT(DATABASE(), '/chat/{private}'), 64))"
    ))
    .execute(&mut holder)
    .await
    .expect("RELEASE_LOCK");
    let late = sender.await.expect("the send");
    assert_eq!(id_of(&late, "seq"), 2);
    // Once the write is published and the replicas' sweep has seen it, syncs are the log's.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let page = bob.get(&format!("/v1/sync?since={cursor}")).await;
        assert_status(&page, 200, "sync");
        if syncs(&stack, "log").await >= 1.0 {
            let seqs: Vec<u64> = page.1["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|e| id_of(&e["message"], "seq"))
                .collect();
            assert_eq!(seqs, vec![2], "the late write, from the log");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "syncs never went back to the log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
