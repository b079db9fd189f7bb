//! The in-memory bus through its public API, as the embedded mode uses it: several clones of one
//! `Bus` (chat-api, gateways, the worker) seeing each other's effects. Expiry is tested on
//! paused tokio time, so the tests are exact and instant.

use std::time::Duration;

use bytes::Bytes;
use chat_bus::{Bucket, Bus, BusConfig, BusError, BusMessage, RedisMode, Verdict};
use chat_proto::PushJob;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::{Instant, advance};

type TestResult = Result<(), BusError>;

const TTL: Duration = Duration::from_secs(30);

fn payload_for(user: u64, payload: &Bytes) -> BusMessage {
    BusMessage::Payload {
        user,
        payload: payload.clone(),
    }
}

fn job(n: u64) -> PushJob {
    PushJob {
        id: PushJob::job_id(n, 7, 0),
        user_id: 7,
        token: format!("token-{n}"),
        chat_id: 1,
        message_id: n,
        sender_id: 2,
        kind: "text".into(),
        title: "Ann".into(),
        body: format!("message {n}"),
    }
}

fn job_ids(deliveries: &[chat_bus::Delivery]) -> Vec<String> {
    deliveries.iter().map(|d| d.job_id.clone()).collect()
}

#[tokio::test]
async fn is_its_own_backend_and_not_configurable() -> TestResult {
    let bus = Bus::memory("t");
    assert!(bus.is_memory());
    assert_eq!(bus.backend_name(), "memory");
    bus.ping().await?;
    assert!("memory".parse::<RedisMode>().is_err());
    assert_eq!("cluster".parse::<RedisMode>(), Ok(RedisMode::Cluster));
    // Redis connections open on first use: nothing listens here, and nothing is asked.
    let redis = Bus::new(&BusConfig::new(
        RedisMode::Standalone,
        "redis://127.0.0.1:1",
        "t",
    ))?;
    assert!(!redis.is_memory());
    assert_eq!(redis.backend_name(), "standalone");
    Ok(())
}

#[tokio::test]
async fn publish_reaches_every_subscriber_of_the_user_and_no_other() -> TestResult {
    let api = Bus::memory("t");
    let gateway = api.clone();
    let (first, mut first_rx) = gateway.subscriber().await?;
    let (second, mut second_rx) = gateway.clone().subscriber().await?;
    let (third, mut third_rx) = gateway.subscriber().await?;
    first.subscribe_many(&[1]).await?;
    // Subscribing twice delivers once, as SUBSCRIBE does.
    first.subscribe_many(&[1]).await?;
    second.subscribe_many(&[1, 2]).await?;
    third.subscribe_many(&[2]).await?;

    let payload = Bytes::from_static(b"hello");
    api.publish_to_users(&[1], &payload).await?;

    let got = first_rx.try_recv();
    assert_eq!(got, Ok(payload_for(1, &payload)));
    if let Ok(BusMessage::Payload { payload: got, .. }) = got {
        assert_eq!(got.as_ptr(), payload.as_ptr(), "the bytes are shared");
    }
    assert_eq!(first_rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(second_rx.try_recv(), Ok(payload_for(1, &payload)));
    assert_eq!(second_rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(third_rx.try_recv(), Err(TryRecvError::Empty));

    api.publish_to_users(&[2, 3], &payload).await?;
    assert_eq!(first_rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(second_rx.try_recv(), Ok(payload_for(2, &payload)));
    assert_eq!(third_rx.try_recv(), Ok(payload_for(2, &payload)));
    Ok(())
}

#[tokio::test]
async fn unsubscribe_stops_delivery() -> TestResult {
    let bus = Bus::memory("t");
    let (subscriber, mut rx) = bus.subscriber().await?;
    subscriber.subscribe_many(&[1, 2]).await?;
    subscriber.unsubscribe_many(&[1]).await?;
    let payload = Bytes::from_static(b"x");
    bus.publish_to_users(&[1, 2], &payload).await?;
    assert_eq!(rx.try_recv(), Ok(payload_for(2, &payload)));
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));

    // Subscribing again brings delivery back.
    subscriber.subscribe_many(&[1]).await?;
    bus.publish_to_users(&[1], &payload).await?;
    assert_eq!(rx.try_recv(), Ok(payload_for(1, &payload)));
    Ok(())
}

#[tokio::test]
async fn a_dropped_subscriber_is_unregistered() -> TestResult {
    let bus = Bus::memory("t");
    let (subscriber, mut rx) = bus.subscriber().await?;
    let clone = subscriber.clone();
    subscriber.subscribe_many(&[1]).await?;
    drop(subscriber);
    let payload = Bytes::from_static(b"x");
    bus.publish_to_users(&[1], &payload).await?;
    assert_eq!(rx.try_recv(), Ok(payload_for(1, &payload)), "a clone lives");
    drop(clone);
    // The registry held the last sender: with it gone the channel ends.
    assert_eq!(rx.recv().await, None);
    bus.publish_to_users(&[1], &payload).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn presence_reports_first_and_last_socket_across_nodes() -> TestResult {
    let bus = Bus::memory("t");
    let node_b = bus.clone();
    assert!(bus.presence_connect(1, "a", TTL).await?, "first socket");
    assert!(!node_b.presence_connect(1, "b", TTL).await?, "second node");
    assert_eq!(bus.online(&[1, 2]).await?, vec![true, false]);
    assert!(!bus.presence_disconnect(1, "a").await?, "still on b");
    assert_eq!(bus.online(&[1]).await?, vec![true]);
    assert!(node_b.presence_disconnect(1, "b").await?, "last socket");
    assert_eq!(bus.online(&[1]).await?, vec![false]);
    // Disconnecting again is not a second "went offline".
    assert!(!node_b.presence_disconnect(1, "b").await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn presence_entries_expire_and_dead_nodes_are_reaped_once() -> TestResult {
    let bus = Bus::memory("t");
    assert!(bus.presence_connect(1, "a", TTL).await?);
    assert!(bus.presence_connect(2, "a", TTL).await?);
    assert!(!bus.presence_connect(2, "b", TTL).await?);
    bus.presence_heartbeat("a", &[1, 2], TTL).await?;
    bus.presence_heartbeat("b", &[2], TTL).await?;
    assert!(
        bus.reap_dead_nodes().await?.is_empty(),
        "nobody is late yet"
    );

    // Only b keeps beating; a's deadline (30 s) passes.
    advance(Duration::from_secs(20)).await;
    bus.presence_heartbeat("b", &[2], TTL).await?;
    advance(Duration::from_secs(15)).await;
    assert_eq!(bus.online(&[1, 2]).await?, vec![false, true]);
    assert_eq!(bus.reap_dead_nodes().await?, vec![1], "2 is still on b");
    assert!(
        bus.reap_dead_nodes().await?.is_empty(),
        "a node is reaped once"
    );
    assert_eq!(bus.online(&[1, 2]).await?, vec![false, true]);

    // A user whose only entry expired counts as new when they connect again.
    advance(Duration::from_secs(40)).await;
    assert_eq!(bus.online(&[2]).await?, vec![false]);
    assert!(bus.presence_connect(2, "c", TTL).await?);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn heartbeat_refreshes_but_never_recreates_and_leave_forgets_the_node() -> TestResult {
    let bus = Bus::memory("t");
    assert!(bus.presence_connect(1, "a", TTL).await?);
    bus.presence_heartbeat("a", &[1], TTL).await?;
    advance(Duration::from_secs(20)).await;
    bus.presence_heartbeat("a", &[1], TTL).await?;
    advance(Duration::from_secs(20)).await;
    assert_eq!(bus.online(&[1]).await?, vec![true], "refreshed at 20 s");

    assert!(bus.presence_disconnect(1, "a").await?);
    bus.presence_heartbeat("a", &[1], TTL).await?;
    assert_eq!(bus.online(&[1]).await?, vec![false], "not re-created");

    bus.presence_leave("a").await?;
    advance(Duration::from_secs(60)).await;
    assert!(bus.reap_dead_nodes().await?.is_empty(), "a left cleanly");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn revocations_expire() -> TestResult {
    let api = Bus::memory("t");
    let gateway = api.clone();
    api.revoke("j1", Duration::from_secs(10)).await?;
    assert!(gateway.is_revoked("j1").await?);
    assert!(!gateway.is_revoked("j2").await?);
    let jtis = ["j1".to_string(), "j2".to_string()];
    assert_eq!(gateway.revoked_among(&jtis).await?, vec![true, false]);
    advance(Duration::from_millis(9_999)).await;
    assert!(gateway.is_revoked("j1").await?);
    advance(Duration::from_millis(1)).await;
    assert!(!gateway.is_revoked("j1").await?);
    assert_eq!(gateway.revoked_among(&jtis).await?, vec![false, false]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_token_bucket_denies_after_the_burst_and_refills() -> TestResult {
    let bus = Bus::memory("t");
    let bucket = Bucket {
        burst: 3,
        per_sec: 2.0,
    };
    for _ in 0..3 {
        assert_eq!(bus.take_message_token(1, bucket).await?, Verdict::Allowed);
    }
    assert_eq!(
        bus.take_message_token(1, bucket).await?,
        Verdict::Limited {
            retry_after: Duration::from_millis(500)
        }
    );
    assert_eq!(
        bus.take_message_token(2, bucket).await?,
        Verdict::Allowed,
        "buckets are per user"
    );
    advance(Duration::from_millis(200)).await;
    // 0.4 tokens now: 0.6 missing at 2/s.
    assert_eq!(
        bus.take_message_token(1, bucket).await?,
        Verdict::Limited {
            retry_after: Duration::from_millis(300)
        }
    );
    advance(Duration::from_millis(300)).await;
    assert_eq!(bus.take_message_token(1, bucket).await?, Verdict::Allowed);
    assert!(matches!(
        bus.take_message_token(1, bucket).await?,
        Verdict::Limited { .. }
    ));
    // A pause refills up to the burst, not beyond: 2 s would be 4 tokens (the bucket lives
    // 2.5 s after its last use, so this is the refill, not a fresh bucket).
    advance(Duration::from_secs(2)).await;
    for _ in 0..3 {
        assert_eq!(bus.take_message_token(1, bucket).await?, Verdict::Allowed);
    }
    assert!(matches!(
        bus.take_message_token(1, bucket).await?,
        Verdict::Limited { .. }
    ));
    // Long unused, the bucket is gone and starts full again.
    advance(Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(bus.take_message_token(1, bucket).await?, Verdict::Allowed);
    }
    assert!(matches!(
        bus.take_message_token(1, bucket).await?,
        Verdict::Limited { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn a_disabled_bucket_always_allows() -> TestResult {
    let bus = Bus::memory("t");
    for bucket in [
        Bucket {
            burst: 3,
            per_sec: 0.0,
        },
        Bucket {
            burst: 0,
            per_sec: 5.0,
        },
    ] {
        for _ in 0..100 {
            assert_eq!(bus.take_message_token(1, bucket).await?, Verdict::Allowed);
        }
    }
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn login_failures_block_within_the_window_of_the_first() -> TestResult {
    let bus = Bus::memory("t");
    let window = Duration::from_secs(60);
    assert_eq!(bus.login_blocked("ann", "1.2.3.4", 3).await?, None);
    bus.note_login_failure("ann", "1.2.3.4", window).await?;
    advance(Duration::from_secs(50)).await;
    bus.note_login_failure("ann", "1.2.3.4", window).await?;
    assert_eq!(bus.login_blocked("ann", "1.2.3.4", 3).await?, None);
    bus.note_login_failure("ann", "1.2.3.4", window).await?;
    assert_eq!(
        bus.login_blocked("ann", "1.2.3.4", 3).await?,
        Some(Duration::from_secs(10)),
        "blocked until the window of the first failure ends"
    );
    assert_eq!(bus.login_blocked("ann", "5.6.7.8", 3).await?, None);
    assert_eq!(bus.login_blocked("bob", "1.2.3.4", 3).await?, None);
    assert_eq!(
        bus.login_blocked("ann", "1.2.3.4", 0).await?,
        None,
        "0: off"
    );

    advance(Duration::from_secs(10)).await;
    assert_eq!(bus.login_blocked("ann", "1.2.3.4", 3).await?, None);

    for _ in 0..3 {
        bus.note_login_failure("ann", "1.2.3.4", window).await?;
    }
    assert!(bus.login_blocked("ann", "1.2.3.4", 3).await?.is_some());
    bus.clear_login_failures("ann", "1.2.3.4").await?;
    assert_eq!(bus.login_blocked("ann", "1.2.3.4", 3).await?, None);
    Ok(())
}

#[tokio::test]
async fn push_jobs_are_read_once_and_acknowledged() -> TestResult {
    let api = Bus::memory("t");
    let worker = api.clone();
    let mut consumer = worker.push_consumer("w1");
    let no_group = consumer.read_new(1, Duration::ZERO).await;
    assert!(
        matches!(&no_group, Err(e) if e.to_string().contains("NOGROUP")),
        "reading before the group exists fails as on Redis: {no_group:?}"
    );

    // Jobs enqueued before the group exists are delivered (the group starts at 0).
    api.enqueue_push(&[job(1), job(2)], 100).await?;
    worker.push_ensure_group().await?;
    worker.push_ensure_group().await?;
    let stats = worker.push_stats().await?;
    assert_eq!((stats.length, stats.pending, stats.lag), (2, 0, 2));

    let first = consumer.read_new(1, Duration::ZERO).await?;
    assert_eq!(job_ids(&first), vec![job(1).id]);
    assert_eq!(first[0].job.as_ref().ok(), Some(&job(1)));
    let raw: PushJob = serde_json::from_str(&first[0].raw)
        .map_err(|e| BusError::Config(format!("the raw job is the JSON of the job: {e}")))?;
    assert_eq!(raw, job(1));
    let stats = worker.push_stats().await?;
    assert_eq!((stats.length, stats.pending, stats.lag), (2, 1, 1));

    worker.push_ack(&first[0].entry_id).await?;
    let stats = worker.push_stats().await?;
    assert_eq!((stats.length, stats.pending, stats.lag), (2, 0, 1));

    let mut other = worker.push_consumer("w2");
    let second = other.read_new(10, Duration::ZERO).await?;
    assert_eq!(job_ids(&second), vec![job(2).id]);
    assert!(second[0].entry_id > first[0].entry_id);
    assert!(consumer.read_new(10, Duration::ZERO).await?.is_empty());
    assert!(other.read_new(10, Duration::ZERO).await?.is_empty());
    let stats = worker.push_stats().await?;
    assert_eq!((stats.pending, stats.lag), (1, 0));
    assert!(worker.push_ack("not-an-id").await.is_err());
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_unacknowledged_job_is_reclaimed_after_min_idle() -> TestResult {
    let bus = Bus::memory("t");
    bus.push_ensure_group().await?;
    bus.enqueue_push(&[job(1)], 100).await?;
    let mut dead_worker = bus.push_consumer("w1");
    let mut survivor = bus.push_consumer("w2");
    let min_idle = Duration::from_secs(30);
    let read = dead_worker.read_new(1, Duration::ZERO).await?;
    assert_eq!(job_ids(&read), vec![job(1).id]);
    assert!(!bus.push_forget_consumer("w1").await?, "w1 holds a job");

    advance(Duration::from_secs(29)).await;
    assert!(
        survivor.reclaim(min_idle, 1).await?.is_empty(),
        "not idle yet"
    );
    advance(Duration::from_secs(1)).await;
    let claimed = survivor.reclaim(min_idle, 1).await?;
    assert_eq!(job_ids(&claimed), vec![job(1).id]);
    assert_eq!(claimed[0].entry_id, read[0].entry_id);
    assert!(bus.push_forget_consumer("w1").await?, "the job moved to w2");
    // Claiming resets the idle time: nobody can take it straight back.
    assert!(dead_worker.reclaim(min_idle, 1).await?.is_empty());

    bus.push_ack(&claimed[0].entry_id).await?;
    assert_eq!(bus.push_stats().await?.pending, 0);
    advance(min_idle).await;
    assert!(survivor.reclaim(min_idle, 1).await?.is_empty(), "acked");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn touching_a_job_keeps_it_from_being_reclaimed() -> TestResult {
    let bus = Bus::memory("t");
    bus.push_ensure_group().await?;
    bus.enqueue_push(&[job(1)], 100).await?;
    let mut retrying = bus.push_consumer("w1");
    let mut other = bus.push_consumer("w2");
    let min_idle = Duration::from_secs(30);
    let read = retrying.read_new(1, Duration::ZERO).await?;
    advance(Duration::from_secs(20)).await;
    bus.push_touch("w1", &read[0].entry_id).await?;
    advance(Duration::from_secs(20)).await;
    assert!(other.reclaim(min_idle, 1).await?.is_empty());
    advance(Duration::from_secs(10)).await;
    assert_eq!(job_ids(&other.reclaim(min_idle, 1).await?), vec![job(1).id]);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn reclaim_walks_the_pending_list_page_by_page() -> TestResult {
    let bus = Bus::memory("t");
    bus.push_ensure_group().await?;
    bus.enqueue_push(&[job(1), job(2), job(3)], 100).await?;
    let mut reader = bus.push_consumer("w1");
    assert_eq!(reader.read_new(0, Duration::ZERO).await?.len(), 3, "0: all");
    advance(Duration::from_secs(60)).await;
    let mut claimer = bus.push_consumer("w2");
    let min_idle = Duration::from_secs(30);
    let mut claimed = Vec::new();
    for _ in 0..3 {
        let page = claimer.reclaim(min_idle, 1).await?;
        assert_eq!(page.len(), 1);
        claimed.extend(job_ids(&page));
    }
    assert_eq!(claimed, vec![job(1).id, job(2).id, job(3).id]);
    assert!(claimer.reclaim(min_idle, 1).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn failed_jobs_go_to_the_dead_letters() -> TestResult {
    let bus = Bus::memory("t");
    bus.push_ensure_group().await?;
    bus.enqueue_push(&[job(1), job(2)], 100).await?;
    let mut consumer = bus.push_consumer("w1");
    let read = consumer.read_new(1, Duration::ZERO).await?;
    bus.push_dead_letter(&read[0], "push endpoint answered 400", 1)
        .await?;
    let stats = bus.push_stats().await?;
    assert_eq!((stats.length, stats.pending, stats.dead), (2, 0, 1));
    let dead = bus.memory_dead_letters().unwrap_or_default();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].delivery.job_id, job(1).id);
    assert_eq!(dead[0].delivery.entry_id, read[0].entry_id);
    assert_eq!(dead[0].reason, "push endpoint answered 400");
    assert_eq!(dead[0].attempts, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn done_markers_and_attempt_counters_expire() -> TestResult {
    let bus = Bus::memory("t");
    let ttl = Duration::from_secs(100);
    assert!(!bus.push_is_done("j").await?);
    assert!(bus.push_mark_done("j", ttl).await?);
    assert!(!bus.push_mark_done("j", ttl).await?, "NX: already there");
    assert!(bus.push_is_done("j").await?);
    advance(ttl).await;
    assert!(!bus.push_is_done("j").await?);

    assert_eq!(bus.push_attempt("k", ttl).await?, 1);
    assert_eq!(bus.push_attempt("k", ttl).await?, 2);
    advance(Duration::from_secs(99)).await;
    assert_eq!(bus.push_attempt("k", ttl).await?, 3, "each attempt extends");
    advance(Duration::from_secs(99)).await;
    assert_eq!(bus.push_attempt("k", ttl).await?, 4);
    advance(ttl).await;
    assert_eq!(bus.push_attempt("k", ttl).await?, 1);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn the_stream_is_trimmed_to_max_len() -> TestResult {
    let bus = Bus::memory("t");
    bus.push_ensure_group().await?;
    let mut consumer = bus.push_consumer("w1");
    bus.enqueue_push(&[job(1)], 3).await?;
    let held = consumer.read_new(1, Duration::ZERO).await?;
    assert_eq!(job_ids(&held), vec![job(1).id]);

    bus.enqueue_push(&[job(2), job(3), job(4), job(5)], 3)
        .await?;
    let stats = bus.push_stats().await?;
    assert_eq!(stats.length, 3);
    assert_eq!(stats.pending, 1, "a trimmed pending entry stays pending");
    assert_eq!(stats.lag, 4, "lag is entries added minus entries read");
    let read = consumer.read_new(10, Duration::ZERO).await?;
    assert_eq!(job_ids(&read), vec![job(3).id, job(4).id, job(5).id]);
    assert_eq!(bus.push_stats().await?.lag, 0);

    // The trimmed entry is dropped from the pending list when a reclaim finds it gone.
    advance(Duration::from_secs(60)).await;
    let mut claimer = bus.push_consumer("w2");
    let claimed = claimer.reclaim(Duration::from_secs(30), 10).await?;
    assert_eq!(job_ids(&claimed), vec![job(3).id, job(4).id, job(5).id]);
    assert_eq!(bus.push_stats().await?.pending, 3);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_blocked_read_returns_as_soon_as_a_job_arrives() -> TestResult {
    let api = Bus::memory("t");
    let worker = api.clone();
    worker.push_ensure_group().await?;
    let started = Instant::now();
    let reader = tokio::spawn(async move {
        let mut consumer = worker.push_consumer("w1");
        consumer.read_new(1, Duration::from_secs(5)).await
    });
    // Let the reader start waiting, then enqueue a little later. Paused time only moves when
    // every task waits, so a reader that missed the wake-up would sit until its 5 s deadline.
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.enqueue_push(&[job(1)], 100).await?;
    let read = reader
        .await
        .map_err(|e| BusError::Config(format!("reader panicked: {e}")))??;
    assert_eq!(job_ids(&read), vec![job(1).id]);
    assert_eq!(started.elapsed(), Duration::from_millis(100));

    // With nothing to read, it waits for the whole block (capped at 5 s) and returns nothing.
    let mut consumer = api.push_consumer("w2");
    let started = Instant::now();
    assert!(
        consumer
            .read_new(1, Duration::from_secs(2))
            .await?
            .is_empty()
    );
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    let started = Instant::now();
    assert!(
        consumer
            .read_new(1, Duration::from_secs(60))
            .await?
            .is_empty()
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_share_the_jobs_without_duplicates() -> TestResult {
    let api = Bus::memory("t");
    api.push_ensure_group().await?;
    let mut readers = Vec::new();
    for n in 0..4 {
        let bus = api.clone();
        readers.push(tokio::spawn(async move {
            let mut consumer = bus.push_consumer(&format!("w{n}"));
            let mut got = Vec::new();
            loop {
                let read = consumer.read_new(1, Duration::from_millis(300)).await?;
                if read.is_empty() {
                    return Ok::<_, BusError>(got);
                }
                got.extend(job_ids(&read));
            }
        }));
    }
    for n in 0..50 {
        api.enqueue_push(&[job(n)], 1000).await?;
        if n % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
    let mut all = Vec::new();
    for reader in readers {
        all.extend(
            reader
                .await
                .map_err(|e| BusError::Config(format!("reader panicked: {e}")))??,
        );
    }
    all.sort();
    let mut expected: Vec<String> = (0..50).map(|n| job(n).id).collect();
    expected.sort();
    assert_eq!(all, expected);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn announce_watermarks_rise_and_dead_replicas_keep_their_pending_chats() -> TestResult {
    let bus = Bus::memory("t");
    assert_eq!(bus.announced(7).await?, None);
    bus.advance_announced(7, 5).await?;
    bus.advance_announced(7, 3).await?;
    assert_eq!(
        bus.announced(7).await?,
        Some(5),
        "a watermark never goes back"
    );

    bus.replica_heartbeat("a", Duration::from_secs(3)).await?;
    bus.replica_heartbeat("b", Duration::from_secs(3)).await?;
    for chat in [7, 7, 8] {
        bus.mark_pending("a", chat).await?;
    }
    bus.clear_pending("a", 7).await?;
    bus.clear_pending("a", 8).await?;
    assert_eq!(
        bus.pending_chats("a").await?,
        [7],
        "one send into 7 is still pending"
    );
    assert!(bus.dead_replicas().await?.is_empty());

    tokio::time::advance(Duration::from_secs(2)).await;
    bus.replica_heartbeat("b", Duration::from_secs(3)).await?;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(bus.dead_replicas().await?, ["a"], "b kept beating");
    bus.forget_replica("a").await?;
    assert!(bus.dead_replicas().await?.is_empty());
    assert!(bus.pending_chats("a").await?.is_empty());
    Ok(())
}
