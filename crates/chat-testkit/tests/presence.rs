//! Presence across gateway nodes: first socket anywhere → online, last socket anywhere →
//! offline, to contacts (both directions) and private chat peers, not to fellow group members;
//! a crashed node's users go offline.

use std::time::{Duration, Instant};

use chat_testkit::{
    QUIET, Stack, StackOptions, Value, WAIT, WsClient, assert_error, assert_status, assert_time,
    id_of, json, service_token,
};

fn presence_of(user_id: u64, status: &'static str) -> impl Fn(&Value) -> bool {
    move |v: &Value| {
        v["type"] == json!("presence")
            && v["user_id"] == json!(user_id)
            && v["status"] == json!(status)
    }
}

/// Waits for `user_id`'s presence `status` on `ws` and checks the event's shape.
async fn expect_presence(
    ws: &mut WsClient,
    user_id: u64,
    status: &'static str,
    timeout: Duration,
) -> Value {
    let event = ws
        .recv_matching(
            timeout,
            &format!("presence {status} of {user_id}"),
            presence_of(user_id, status),
        )
        .await;
    check_last_seen(&event, status);
    event
}

/// Waits until `ws` has seen every one of `users` come online, in whatever order: their
/// gateways report them on separate lanes, so the events may cross.
async fn expect_online_in_any_order(ws: &mut WsClient, users: &[u64], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    let mut missing = users.to_vec();
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = ws
            .recv_matching(left, &format!("presence online of {missing:?}"), |v| {
                missing.iter().any(|&user| presence_of(user, "online")(v))
            })
            .await;
        check_last_seen(&event, "online");
        missing.retain(|&user| event["user_id"] != json!(user));
    }
}

fn check_last_seen(event: &Value, status: &str) {
    assert!(
        event.get("last_seen").is_some(),
        "presence without last_seen: {event}"
    );
    if status == "offline" {
        assert_time(&event["last_seen"], "last_seen of an offline presence");
    } else if !event["last_seen"].is_null() {
        assert_time(&event["last_seen"], "last_seen of an online presence");
    }
}

/// Reads for `duration`; panics on a presence event of `user_id`. Other frames are kept.
async fn expect_no_presence(ws: &mut WsClient, user_id: u64, duration: Duration) {
    let frames = ws.collect_for(duration).await;
    let bad: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == json!("presence") && f["user_id"] == json!(user_id))
        .collect();
    assert!(
        bad.is_empty(),
        "[{}] unexpected presence of {user_id}: {bad:?}",
        ws.label()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_on_first_socket_offline_after_last_across_gateways() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let a = api.new_user("pra").await;
    let b = api.new_user("prb").await;
    api.as_user(&a).private_chat(b.id).await;

    let mut wa = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A@gw1");
    let b1 = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B1@gw2");
    expect_presence(&mut wa, b.id, "online", WAIT).await;

    // A second socket, on the other node: B is already online, no new event.
    let b2 = WsClient::authed(&stack.gateway_ws_url(0), &b.token)
        .await
        .labeled("B2@gw1");
    expect_no_presence(&mut wa, b.id, QUIET).await;

    // Closing one of two sockets: still online.
    b1.close().await;
    expect_no_presence(&mut wa, b.id, Duration::from_millis(1200)).await;

    // Closing the last one: offline.
    b2.close().await;
    expect_presence(&mut wa, b.id, "offline", WAIT).await;
    expect_no_presence(&mut wa, b.id, QUIET).await;

    // And online again on reconnect.
    let _b3 = WsClient::authed(&stack.gateway_ws_url(1), &b.token).await;
    expect_presence(&mut wa, b.id, "online", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_goes_to_contacts_both_ways_and_not_to_strangers() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let users = api.new_users("prc", 4).await;
    let (subject, watcher, watched, stranger) = (&users[0], &users[1], &users[2], &users[3]);
    // `watcher` has `subject` as a contact; `subject` has `watched` as a contact.
    let resp = api
        .as_user(watcher)
        .put(&format!("/v1/contacts/{}", subject.id), None)
        .await;
    assert_status(&resp, 204, "watcher adds subject");
    let resp = api
        .as_user(subject)
        .put(&format!("/v1/contacts/{}", watched.id), None)
        .await;
    assert_status(&resp, 204, "subject adds watched");

    let mut w1 = WsClient::authed(&stack.gateway_ws_url(0), &watcher.token)
        .await
        .labeled("watcher");
    let mut w2 = WsClient::authed(&stack.gateway_ws_url(1), &watched.token)
        .await
        .labeled("watched");
    let mut w3 = WsClient::authed(&stack.gateway_ws_url(0), &stranger.token)
        .await
        .labeled("stranger");

    let ws = WsClient::authed(&stack.gateway_ws_url(1), &subject.token).await;
    expect_presence(&mut w1, subject.id, "online", WAIT).await;
    expect_presence(&mut w2, subject.id, "online", WAIT).await;
    ws.close().await;
    expect_presence(&mut w1, subject.id, "offline", WAIT).await;
    expect_presence(&mut w2, subject.id, "offline", WAIT).await;
    expect_no_presence(&mut w3, subject.id, Duration::from_millis(100)).await;
}

/// A group links its members for its events only: presence would make a group of n coming
/// online cost n² events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_skips_members_of_a_shared_group_only() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let users = api.new_users("prg", 3).await;
    let (subject, fellow, peer) = (&users[0], &users[1], &users[2]);
    api.as_user(subject)
        .group_chat("shared", &[fellow.id, peer.id])
        .await;
    api.as_user(subject).private_chat(peer.id).await;
    let mut fellow_ws = WsClient::authed(&stack.gateway_ws_url(0), &fellow.token)
        .await
        .labeled("fellow");
    let mut peer_ws = WsClient::authed(&stack.gateway_ws_url(1), &peer.token)
        .await
        .labeled("peer");

    let _subject_ws = WsClient::authed(&stack.gateway_ws_url(1), &subject.token).await;
    expect_presence(&mut peer_ws, subject.id, "online", WAIT).await;
    expect_no_presence(&mut fellow_ws, subject.id, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_users_go_offline() {
    let mut stack = Stack::start(StackOptions {
        gateways: 2,
        presence_ttl_ms: Some(3000),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let a = api.new_user("kla").await;
    let b = api.new_user("klb").await;
    let chat = id_of(&api.as_user(&a).private_chat(b.id).await, "id");
    let mut wa = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A@gw1");
    let _wb = WsClient::authed(&stack.gateway_ws_url(1), &b.token)
        .await
        .labeled("B@gw2");
    expect_presence(&mut wa, b.id, "online", WAIT).await;

    let killed_at = Instant::now();
    stack.kill_gateway(1);
    expect_presence(&mut wa, b.id, "offline", Duration::from_secs(10)).await;
    let took = killed_at.elapsed();
    eprintln!("offline reported {took:?} after SIGKILL");

    // The survivor keeps working, and B's contact view says offline.
    let ack = wa
        .request(
            &json!({"type": "send", "id": "after", "chat_id": chat, "client_msg_id": "k", "text": "still here"}),
            WAIT,
        )
        .await;
    assert_eq!(ack["type"], json!("ack"), "{ack}");
    let resp = api
        .as_user(&a)
        .put(&format!("/v1/contacts/{}", b.id), None)
        .await;
    assert_status(&resp, 204, "add b");
    let resp = api.as_user(&a).get("/v1/contacts").await;
    assert_eq!(resp.1["contacts"][0]["online"], json!(false), "{}", resp.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_presence_event_per_change_even_with_many_links() {
    let stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let a = api.new_user("dupa").await;
    let b = api.new_user("dupb").await;
    let as_a = api.as_user(&a);
    // A and B are linked four times: contacts both ways, a private chat and two groups.
    assert_status(
        &as_a.put(&format!("/v1/contacts/{}", b.id), None).await,
        204,
        "a→b",
    );
    let resp = api
        .as_user(&b)
        .put(&format!("/v1/contacts/{}", a.id), None)
        .await;
    assert_status(&resp, 204, "b→a");
    as_a.private_chat(b.id).await;
    as_a.group_chat("g1", &[b.id]).await;
    as_a.group_chat("g2", &[b.id]).await;

    let mut wa = WsClient::authed(&stack.gateway_ws_url(0), &a.token)
        .await
        .labeled("A");
    let wb = WsClient::authed(&stack.gateway_ws_url(1), &b.token).await;
    expect_presence(&mut wa, b.id, "online", WAIT).await;
    expect_no_presence(&mut wa, b.id, QUIET).await;
    wb.close().await;
    expect_presence(&mut wa, b.id, "offline", WAIT).await;
    expect_no_presence(&mut wa, b.id, QUIET).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_gateway_shutdown_moves_presence_correctly() {
    let mut stack = Stack::start(StackOptions::gateways(2)).await;
    let api = stack.api();
    let users = api.new_users("gs", 3).await;
    let (watcher, both, only2) = (&users[0], &users[1], &users[2]);
    let as_watcher = api.as_user(watcher);
    as_watcher.private_chat(both.id).await;
    as_watcher.private_chat(only2.id).await;

    let mut ww = WsClient::authed(&stack.gateway_ws_url(0), &watcher.token)
        .await
        .labeled("W");
    let _both1 = WsClient::authed(&stack.gateway_ws_url(0), &both.token).await;
    let mut both2 = WsClient::authed(&stack.gateway_ws_url(1), &both.token)
        .await
        .labeled("both@gw2");
    let mut only = WsClient::authed(&stack.gateway_ws_url(1), &only2.token)
        .await
        .labeled("only@gw2");
    expect_online_in_any_order(&mut ww, &[both.id, only2.id], WAIT).await;

    // SIGTERM gw2: its sockets get 1012; `only2` goes offline at once (no TTL wait), `both`
    // stays online through its socket on gw1.
    let started = Instant::now();
    let (status, _, _) = tokio::join!(
        stack.terminate_gateway(1),
        both2.expect_close(1012, Duration::from_secs(10)),
        only.expect_close(1012, Duration::from_secs(10)),
    );
    assert!(status.success(), "gw2 exit status {status}");
    let frames = ww.collect_for(Duration::from_secs(2)).await;
    let presence: Vec<&Value> = frames
        .iter()
        .filter(|f| f["type"] == json!("presence"))
        .collect();
    let offline_only = presence
        .iter()
        .any(|p| p["user_id"] == json!(only2.id) && p["status"] == json!("offline"));
    assert!(
        offline_only,
        "no offline for a user whose only node shut down ({:?} after SIGTERM): {presence:?}",
        started.elapsed()
    );
    assert!(
        !presence.iter().any(|p| p["user_id"] == json!(both.id)),
        "presence of a user still connected to gw1: {presence:?}"
    );
}

/// The gateways' batch endpoint: only for a service, at most 256 changes, and a batch's changes
/// reach the audience in the batch's order (a user's online before the offline behind it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_batches_are_checked_and_announced_in_order() {
    let stack = Stack::start(StackOptions::gateways(1)).await;
    let api = stack.api();
    let users = api.new_users("pbat", 3).await;
    let (watcher, first, second) = (&users[0], &users[1], &users[2]);
    let as_watcher = api.as_user(watcher);
    as_watcher.private_chat(first.id).await;
    as_watcher.private_chat(second.id).await;
    let mut ww = WsClient::authed(&stack.gateway_ws_url(0), &watcher.token)
        .await
        .labeled("W");

    let change = |user: u64, status: &str| json!({"user_id": user, "status": status});
    let batch = json!({"changes": [
        change(first.id, "online"),
        change(second.id, "online"),
        change(first.id, "offline"),
    ]});
    let path = "/internal/v1/presence/batch";
    let resp = api.as_user(watcher).post(path, &batch).await;
    assert_error(
        &resp,
        401,
        "unauthorized",
        "a presence batch with a user token",
    );
    let service = api.with_token(&service_token(stack.jwt_secret(), "gw-test"));
    let too_long: Vec<Value> = (0..257).map(|_| change(first.id, "online")).collect();
    let resp = service.post(path, &json!({ "changes": too_long })).await;
    assert_error(&resp, 400, "invalid_input", "a batch of 257 changes");
    let resp = service
        .post(path, &json!({"changes": [change(first.id, "away")]}))
        .await;
    assert_error(&resp, 400, "invalid_input", "an unknown status in a batch");
    expect_no_presence(&mut ww, first.id, QUIET).await;

    let resp = service.post(path, &batch).await;
    assert_status(&resp, 204, "a presence batch with a service token");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let event = ww
            .recv_matching(WAIT, "the batch's presence events", |v: &Value| {
                v["type"] == json!("presence")
                    && (v["user_id"] == json!(first.id) || v["user_id"] == json!(second.id))
            })
            .await;
        seen.push((event["user_id"].clone(), event["status"].clone()));
    }
    assert_eq!(
        seen,
        vec![
            (json!(first.id), json!("online")),
            (json!(second.id), json!("online")),
            (json!(first.id), json!("offline")),
        ],
        "the batch's order"
    );
}
