//! Offline push through chat-worker: chat-api queues a job per offline recipient's device token
//! on a Redis Stream, the worker posts it to a push endpoint (a real HTTP receiver in this test
//! process), retries while the endpoint fails, survives a SIGKILL mid-job (another worker
//! reclaims), never delivers a job twice, and dead-letters a job that keeps failing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chat_testkit::{
    ApiClient, PushReceiver, QUIET, Stack, StackOptions, TestUser, Value, WsClient, assert_status,
    id_of, json, metric_value, metrics_page, unique_client_msg_id,
};

const PUSH_AUTH: &str = "Bearer test-push-credential";

fn worker_env(receiver: &PushReceiver, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env = vec![
        ("CHAT_PUSH_URL".to_string(), receiver.url()),
        ("CHAT_PUSH_AUTH_HEADER".to_string(), PUSH_AUTH.to_string()),
    ];
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn register_token(api: &ApiClient, user: &TestUser, token: &str) {
    let resp = api
        .as_user(user)
        .put(
            "/v1/me/push-token",
            Some(&json!({"token": token, "platform": "android"})),
        )
        .await;
    assert_status(&resp, 204, "register a push token");
}

fn stream_key(stack: &Stack, name: &str) -> String {
    format!("{}:{{push}}:{name}", stack.redis_prefix())
}

/// Entries of the group `push` that were read and not acknowledged.
async fn pending_count(stack: &Stack) -> u64 {
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(stream_key(stack, "jobs")).arg("push");
    let reply: redis::Value = stack
        .redis()
        .query(&cmd)
        .await
        .unwrap_or_else(|e| panic!("XPENDING: {e:#}"));
    match reply {
        redis::Value::Array(items) => match items.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            other => panic!("XPENDING: unexpected count {other:?}"),
        },
        other => panic!("XPENDING: unexpected reply {other:?}"),
    }
}

/// The dead-letter stream as (field → value) maps.
async fn dead_letters(stack: &Stack) -> Vec<BTreeMap<String, String>> {
    let mut cmd = redis::cmd("XRANGE");
    cmd.arg(stream_key(stack, "dead")).arg("-").arg("+");
    let entries: Vec<(String, Vec<(String, String)>)> = stack
        .redis()
        .query(&cmd)
        .await
        .unwrap_or_else(|e| panic!("XRANGE dead: {e:#}"));
    entries
        .into_iter()
        .map(|(_, fields)| fields.into_iter().collect())
        .collect()
}

fn job_id(message_id: u64, user_id: u64) -> String {
    format!("m{message_id}-u{user_id}-t0")
}

/// Counts of 2xx deliveries per job id.
fn delivered_per_job(receiver: &PushReceiver) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in receiver.delivered() {
        *counts.entry(r.job_id).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_offline_recipients_with_a_token_get_one_fcm_shaped_push() {
    let receiver = PushReceiver::start().await;
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        worker_env: worker_env(&receiver, &[]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await; // offline, has a token
    let carol = api.new_user("carol").await; // online, has a token
    let dave = api.new_user("dave").await; // offline, no token
    register_token(&api, &bob, "tok-bob").await;
    register_token(&api, &carol, "tok-carol").await;
    register_token(&api, &alice, "tok-alice").await;

    // Token validation.
    let empty = api
        .as_user(&bob)
        .put("/v1/me/push-token", Some(&json!({"token": "  "})))
        .await;
    assert_status(&empty, 400, "an empty push token");
    let anonymous = api
        .put("/v1/me/push-token", Some(&json!({"token": "x"})))
        .await;
    assert_status(&anonymous, 401, "a push token without auth");

    let mut carol_ws = WsClient::authed(&stack.gateway_ws_url(0), &carol.token).await;
    let group = api
        .as_user(&alice)
        .group_chat("Hikers", &[bob.id, carol.id, dave.id])
        .await;
    let chat_id = id_of(&group, "id");
    let message = api
        .as_user(&alice)
        .send_text(
            chat_id,
            &unique_client_msg_id("push"),
            "  see you at the summit  ",
        )
        .await;
    let message_id = id_of(&message, "id");
    carol_ws
        .recv_until("new_message", Duration::from_secs(5))
        .await;

    let expected = job_id(message_id, bob.id);
    receiver
        .wait_until(Duration::from_secs(10), "bob's push", |seen| {
            seen.iter().any(|r| r.job_id == expected)
        })
        .await;
    tokio::time::sleep(QUIET * 2).await;
    let seen = receiver.received();
    assert_eq!(
        seen.len(),
        1,
        "exactly one push (bob): not carol (online), not dave (no token), not the sender: {seen:?}"
    );
    let push = &seen[0];
    assert_eq!(push.status, 200);
    assert_eq!(push.authorization.as_deref(), Some(PUSH_AUTH));
    let body = &push.body["message"];
    assert_eq!(body["token"], json!("tok-bob"), "{}", push.body);
    assert_eq!(
        body["notification"]["title"],
        json!(format!("{} in Hikers", alice.username))
    );
    assert_eq!(body["notification"]["body"], json!("see you at the summit"));
    let data = &body["data"];
    assert_eq!(data["job_id"], json!(expected));
    assert_eq!(data["chat_id"], json!(chat_id.to_string()));
    assert_eq!(data["message_id"], json!(message_id.to_string()));
    assert_eq!(data["sender_id"], json!(alice.id.to_string()));
    assert_eq!(data["type"], json!("text"));

    // Removing the token stops the pushes.
    let removed = api
        .as_user(&bob)
        .request(
            reqwest::Method::DELETE,
            "/v1/me/push-token",
            Some(&json!({"token": "tok-bob"})),
        )
        .await;
    assert_status(&removed, 204, "remove a push token");
    api.as_user(&alice)
        .send_text(chat_id, &unique_client_msg_id("push"), "second")
        .await;
    tokio::time::sleep(QUIET * 2).await;
    assert_eq!(
        receiver.received().len(),
        1,
        "no push after the token was removed"
    );

    assert_eq!(pending_count(&stack).await, 0, "everything acknowledged");
    let worker_metrics = metrics_page(&stack.worker_http_url(0)).await;
    assert_eq!(
        metric_value(&worker_metrics, "chat_worker_push_deliveries_total"),
        Some(1.0)
    );
    let api_metrics = metrics_page(&stack.api_url()).await;
    assert_eq!(
        metric_value(&api_metrics, "chat_push_skipped_no_token_total").unwrap_or(0.0),
        3.0,
        "dave twice, bob once (after removing his token)"
    );

    let status = stack.terminate_worker(0).await;
    assert!(
        status.success(),
        "worker exits cleanly on SIGTERM: {status:?}"
    );
}

/// Many messages at once, from two senders into a group and a private chat: the api looks
/// their recipients up together, and still each offline device gets exactly its own pushes,
/// titled for its chat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_messages_gets_exactly_its_pushes() {
    const PER_CHAT: usize = 30;
    let receiver = PushReceiver::start().await;
    let stack = Stack::start(StackOptions {
        workers: 1,
        worker_env: worker_env(&receiver, &[]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await; // offline, one token
    let bob = api.new_user("bob").await; // offline, two tokens
    let carol = api.new_user("carol").await; // online, has a token
    let dave = api.new_user("dave").await; // offline, no token
    register_token(&api, &alice, "tok-alice").await;
    register_token(&api, &bob, "tok-bob-1").await;
    register_token(&api, &bob, "tok-bob-2").await;
    register_token(&api, &carol, "tok-carol").await;
    let mut carol_ws = WsClient::authed(&stack.gateway_ws_url(0), &carol.token).await;
    let group = api
        .as_user(&alice)
        .group_chat("Climbers", &[bob.id, carol.id, dave.id])
        .await;
    let group_id = id_of(&group, "id");
    let private_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");

    // (sender, chat) of each message, all sent at once.
    let plan: Vec<(&TestUser, u64)> = (0..PER_CHAT)
        .flat_map(|_| [(&alice, group_id), (&bob, group_id), (&alice, private_id)])
        .collect();
    let sends = plan.iter().map(|&(sender, chat_id)| {
        let client = api.as_user(sender);
        async move {
            let message = client
                .send_text(chat_id, &unique_client_msg_id("burst"), "hello")
                .await;
            id_of(&message, "id")
        }
    });
    let message_ids = futures_util::future::join_all(sends).await;
    carol_ws
        .recv_until("new_message", Duration::from_secs(5))
        .await;

    // Expected: alice's group messages reach bob's two devices; bob's reach alice's one;
    // alice's private messages reach bob's two. Carol is online, dave has no token.
    let mut expected = BTreeMap::new();
    for (&(sender, chat_id), &message_id) in plan.iter().zip(&message_ids) {
        let title = match (sender.id == alice.id, chat_id == group_id) {
            (true, true) => format!("{} in Climbers", alice.username),
            (false, true) => format!("{} in Climbers", bob.username),
            (_, false) => alice.username.clone(),
        };
        let devices: &[&str] = if sender.id == alice.id {
            &["tok-bob-1", "tok-bob-2"]
        } else {
            &["tok-alice"]
        };
        let to = if sender.id == alice.id {
            bob.id
        } else {
            alice.id
        };
        for (index, token) in devices.iter().enumerate() {
            let job = format!("m{message_id}-u{to}-t{index}");
            expected.insert(job, (token.to_string(), title.clone()));
        }
    }
    receiver
        .wait_until(Duration::from_secs(30), "every push of the burst", |seen| {
            seen.len() >= expected.len()
        })
        .await;
    tokio::time::sleep(QUIET * 2).await;
    let seen = receiver.received();
    let got: BTreeMap<String, (String, String)> = seen
        .iter()
        .map(|push| {
            let body = &push.body["message"];
            (
                push.job_id.clone(),
                (
                    body["token"].as_str().unwrap_or_default().to_string(),
                    body["notification"]["title"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
            )
        })
        .collect();
    assert_eq!(seen.len(), expected.len(), "no push twice, none extra");
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_outage_and_worker_crash_deliver_every_push_exactly_once() {
    let receiver = PushReceiver::start().await;
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        worker_env: worker_env(
            &receiver,
            &[
                ("CHAT_PUSH_MAX_ATTEMPTS", "100"),
                ("CHAT_PUSH_BACKOFF_BASE_MS", "100"),
                ("CHAT_PUSH_BACKOFF_MAX_MS", "400"),
                ("CHAT_PUSH_TIMEOUT_MS", "1000"),
                ("CHAT_PUSH_RECLAIM_IDLE_MS", "2000"),
            ],
        ),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    register_token(&api, &bob, "tok-bob").await;
    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");

    receiver.set_failing(true);
    let mut expected = BTreeSet::new();
    for n in 0..6 {
        let message = api
            .as_user(&alice)
            .send_text(
                chat_id,
                &unique_client_msg_id("push"),
                &format!("message {n}"),
            )
            .await;
        expected.insert(job_id(id_of(&message, "id"), bob.id));
    }
    // The worker is mid-job: several jobs failed at least twice and wait for their next try.
    receiver
        .wait_until(
            Duration::from_secs(10),
            "retries during the outage",
            |seen| {
                let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
                for r in seen.iter().filter(|r| r.status == 500) {
                    *failed.entry(&r.job_id).or_insert(0) += 1;
                }
                failed.values().filter(|&&n| n >= 2).count() >= 2
            },
        )
        .await;
    stack.kill_worker(0);
    let failed_before_kill = receiver.received().len();
    assert!(
        receiver.delivered().is_empty(),
        "nothing delivered during the outage"
    );
    assert!(
        pending_count(&stack).await >= 1,
        "the killed worker left jobs pending"
    );

    receiver.set_failing(false);
    let second = stack.start_worker().await;
    receiver
        .wait_until(Duration::from_secs(20), "every job delivered", |seen| {
            let done: BTreeSet<&str> = seen
                .iter()
                .filter(|r| r.status == 200)
                .map(|r| r.job_id.as_str())
                .collect();
            expected.iter().all(|id| done.contains(id.as_str()))
        })
        .await;
    // Longer than the reclaim idle time: a duplicate would have had its chance.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = delivered_per_job(&receiver);
    let delivered: BTreeSet<String> = counts.keys().cloned().collect();
    assert_eq!(
        delivered, expected,
        "exactly the queued jobs were delivered"
    );
    for (id, n) in &counts {
        assert_eq!(*n, 1, "job {id} delivered {n} times: {counts:?}");
    }
    assert!(failed_before_kill >= 4, "the outage was exercised");
    assert_eq!(pending_count(&stack).await, 0, "everything acknowledged");
    let metrics = metrics_page(&stack.worker_http_url(second)).await;
    assert!(
        metric_value(&metrics, "chat_worker_push_reclaimed_total").unwrap_or(0.0) >= 1.0,
        "the second worker reclaimed the first one's jobs:\n{metrics}"
    );
    assert_eq!(
        metric_value(&metrics, "chat_worker_push_deliveries_total"),
        Some(6.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_always_fails_is_dead_lettered_after_max_attempts() {
    let receiver = PushReceiver::start().await;
    receiver.fail_token("tok-broken");
    let stack = Stack::start(StackOptions {
        workers: 1,
        worker_env: worker_env(
            &receiver,
            &[
                ("CHAT_PUSH_MAX_ATTEMPTS", "3"),
                ("CHAT_PUSH_BACKOFF_BASE_MS", "50"),
                ("CHAT_PUSH_BACKOFF_MAX_MS", "200"),
            ],
        ),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    let carol = api.new_user("carol").await;
    register_token(&api, &bob, "tok-broken").await;
    register_token(&api, &carol, "tok-carol").await;
    let chat_id = id_of(
        &api.as_user(&alice)
            .group_chat("Both", &[bob.id, carol.id])
            .await,
        "id",
    );
    let message = api
        .as_user(&alice)
        .send_text(chat_id, &unique_client_msg_id("push"), "hello")
        .await;
    let message_id = id_of(&message, "id");
    let broken = job_id(message_id, bob.id);

    let mut dead = Vec::new();
    for _ in 0..100 {
        dead = dead_letters(&stack).await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "one dead letter: {dead:?}");
    let entry = &dead[0];
    assert_eq!(entry.get("id"), Some(&broken));
    assert_eq!(entry.get("attempts").map(String::as_str), Some("3"));
    assert!(
        entry.get("reason").is_some_and(|r| r.contains("500")),
        "reason names the failure: {entry:?}"
    );
    let job: Value = serde_json::from_str(entry.get("job").map(String::as_str).unwrap_or(""))
        .unwrap_or(Value::Null);
    assert_eq!(
        job["token"],
        json!("tok-broken"),
        "the job is kept: {entry:?}"
    );

    tokio::time::sleep(QUIET).await;
    let tries: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.job_id == broken)
        .collect();
    assert_eq!(tries.len(), 3, "exactly max_attempts tries: {tries:?}");
    let counts = delivered_per_job(&receiver);
    assert_eq!(
        counts.get(&job_id(message_id, carol.id)),
        Some(&1),
        "the other recipient is not held up: {counts:?}"
    );
    assert_eq!(
        pending_count(&stack).await,
        0,
        "the dead job was acknowledged"
    );
    let metrics = metrics_page(&stack.worker_http_url(0)).await;
    assert_eq!(
        metric_value(&metrics, "chat_worker_push_dead_letters_total"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "chat_worker_push_retries_total"),
        Some(2.0)
    );
    // The gauges are sampled every 2 s: the dead-letter stream holds one, nothing waits.
    let mut gauges = String::new();
    for _ in 0..40 {
        gauges = metrics_page(&stack.worker_http_url(0)).await;
        if metric_value(&gauges, "chat_worker_push_dead_letter_length").unwrap_or(0.0) == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric_value(&gauges, "chat_worker_push_dead_letter_length").unwrap_or(0.0),
        1.0,
        "{gauges}"
    );
    assert_eq!(
        metric_value(&gauges, "chat_worker_push_queue_length").unwrap_or(0.0),
        0.0
    );
    assert_eq!(
        metric_value(&gauges, "chat_worker_push_stream_length").unwrap_or(0.0),
        2.0,
        "two jobs were queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reclaimed_job_that_was_already_delivered_is_acknowledged_not_resent() {
    let receiver = PushReceiver::start().await;
    // No worker yet: a "ghost" consumer plays a worker that died.
    let mut stack = Stack::start(StackOptions {
        workers: 0,
        worker_env: worker_env(
            &receiver,
            &[
                ("CHAT_PUSH_RECLAIM_IDLE_MS", "1500"),
                ("CHAT_PUSH_BACKOFF_MAX_MS", "200"),
                ("CHAT_PUSH_TIMEOUT_MS", "1000"),
            ],
        ),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    register_token(&api, &bob, "tok-bob").await;
    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");
    let first = id_of(
        &api.as_user(&alice)
            .send_text(chat_id, &unique_client_msg_id("push"), "one")
            .await,
        "id",
    );
    let second = id_of(
        &api.as_user(&alice)
            .send_text(chat_id, &unique_client_msg_id("push"), "two")
            .await,
        "id",
    );
    let jobs = stream_key(&stack, "jobs");
    let redis = stack.redis().clone();
    // chat-api queues the jobs just after answering the sends.
    let mut queued = 0;
    for _ in 0..50 {
        let mut len = redis::cmd("XLEN");
        len.arg(&jobs);
        queued = redis.query::<u64>(&len).await.unwrap_or(0);
        if queued == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued, 2, "both jobs queued");
    let mut create = redis::cmd("XGROUP");
    create
        .arg("CREATE")
        .arg(&jobs)
        .arg("push")
        .arg("0")
        .arg("MKSTREAM");
    let _: redis::Value = redis.query(&create).await.unwrap_or(redis::Value::Nil);
    let mut read = redis::cmd("XREADGROUP");
    read.arg("GROUP")
        .arg("push")
        .arg("ghost")
        .arg("COUNT")
        .arg(10)
        .arg("STREAMS")
        .arg(&jobs)
        .arg(">");
    let _: redis::Value = redis
        .query(&read)
        .await
        .unwrap_or_else(|e| panic!("XREADGROUP as ghost: {e:#}"));
    assert_eq!(
        pending_count(&stack).await,
        2,
        "both jobs held by the ghost"
    );
    // The ghost delivered the first job and died before XACK.
    let mut done = redis::cmd("SET");
    done.arg(format!(
        "{}:push:done:{}",
        stack.redis_prefix(),
        job_id(first, bob.id)
    ))
    .arg(1)
    .arg("EX")
    .arg(600);
    let _: redis::Value = redis
        .query(&done)
        .await
        .unwrap_or_else(|e| panic!("SET done: {e:#}"));

    let worker = stack.start_worker().await;
    let resent = job_id(second, bob.id);
    receiver
        .wait_until(Duration::from_secs(10), "the undelivered job", |seen| {
            seen.iter().any(|r| r.job_id == resent)
        })
        .await;
    let mut drained = false;
    for _ in 0..50 {
        if pending_count(&stack).await == 0 {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drained, "both reclaimed jobs acknowledged");
    tokio::time::sleep(QUIET).await;
    let counts = delivered_per_job(&receiver);
    assert_eq!(counts.get(&resent), Some(&1), "{counts:?}");
    assert_eq!(
        counts.get(&job_id(first, bob.id)),
        None,
        "the job marked done is not sent again: {counts:?}"
    );
    let metrics = metrics_page(&stack.worker_http_url(worker)).await;
    assert_eq!(
        metric_value(&metrics, "chat_worker_push_duplicates_skipped_total"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "chat_worker_push_reclaimed_total"),
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_worker_finish_the_job_in_flight() {
    let receiver = PushReceiver::start().await;
    receiver.set_delay(Duration::from_millis(1500));
    let mut stack = Stack::start(StackOptions {
        workers: 1,
        worker_env: worker_env(&receiver, &[]),
        ..StackOptions::default()
    })
    .await;
    let api = stack.api();
    let alice = api.new_user("alice").await;
    let bob = api.new_user("bob").await;
    register_token(&api, &bob, "tok-bob").await;
    let chat_id = id_of(&api.as_user(&alice).private_chat(bob.id).await, "id");
    let message = api
        .as_user(&alice)
        .send_text(chat_id, &unique_client_msg_id("push"), "slow")
        .await;
    let expected = job_id(id_of(&message, "id"), bob.id);
    receiver
        .wait_until(Duration::from_secs(10), "the request in flight", |seen| {
            seen.iter().any(|r| r.job_id == expected)
        })
        .await;
    // The endpoint holds its answer for 1.5 s; stop the worker meanwhile.
    let started = std::time::Instant::now();
    let status = stack.terminate_worker(0).await;
    assert!(status.success(), "clean exit: {status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "the worker waited for the answer before exiting ({:?})",
        started.elapsed()
    );
    assert_eq!(
        pending_count(&stack).await,
        0,
        "the job in flight was finished and acknowledged before the exit"
    );
    let mut done = redis::cmd("EXISTS");
    done.arg(format!("{}:push:done:{expected}", stack.redis_prefix()));
    let marked: i64 = stack
        .redis()
        .query(&done)
        .await
        .unwrap_or_else(|e| panic!("EXISTS: {e:#}"));
    assert_eq!(marked, 1, "and marked done");
    assert_eq!(receiver.received().len(), 1);
    let mut consumers = redis::cmd("XINFO");
    consumers
        .arg("CONSUMERS")
        .arg(stream_key(&stack, "jobs"))
        .arg("push");
    let left: Vec<redis::Value> = stack
        .redis()
        .query(&consumers)
        .await
        .unwrap_or_else(|e| panic!("XINFO CONSUMERS: {e:#}"));
    assert!(
        left.is_empty(),
        "a cleanly stopped worker leaves the group: {left:?}"
    );
}
