//! The recent-event log through the public API, on memory, standalone Redis
//! (`CHAT_TEST_REDIS_URL`) and the local test cluster (`CHAT_TEST_CLUSTER_URL`; `make cluster`):
//! a logged publish still reaches subscribers, and a read answers "covered from here" exactly
//! (a channel never written, a new log, a count trim, an invalidation); the late publishes that
//! keep chat-api's syncs off the log are counted until cleared, and a replica's pending changes
//! are kept until cleared or forgotten. The coverage rules in detail
//! are unit-tested on the memory model (`src/recent/tests.rs`), which the Redis scripts follow.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chat_bus::{
    Bus, BusConfig, BusError, BusMessage, PendingChange, RECENT_LOG_SKEW_MS, RecentLogConfig,
    RedisMode, Topic,
};

type TestResult = Result<(), BusError>;

const BOUNDS: RecentLogConfig = RecentLogConfig {
    window: Duration::from_secs(120),
    max_len: 3,
};

fn bus(mode: RedisMode, url: &str) -> Bus {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("t{}-{nanos}", std::process::id());
    Bus::new(&BusConfig::new(mode, url, &prefix).with_recent_log(BOUNDS))
        .expect("a bus from the test's configuration")
}

fn standalone() -> Bus {
    let url =
        std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    bus(RedisMode::Standalone, &url)
}

fn cluster() -> Bus {
    let seeds = std::env::var("CHAT_TEST_CLUSTER_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:7000,redis://127.0.0.1:7001".into());
    bus(RedisMode::Cluster, &seeds)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn event(n: u32) -> Bytes {
    Bytes::from(format!("event {n}"))
}

fn sorted(mut entries: Vec<Bytes>) -> Vec<Bytes> {
    entries.sort();
    entries
}

/// Waits until the Redis servers behind these URLs have been up for longer than the clock
/// allowance (a cluster started a moment ago), so that logs count as complete from before now.
async fn wait_until_up_longer_than_the_allowance(urls: &[&str]) {
    let needed = RECENT_LOG_SKEW_MS / 1000 + 2;
    for url in urls {
        let client = redis::Client::open(*url).expect("a redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("Redis at {url} is reachable: {e}"));
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .expect("INFO server");
        let up: i64 = info
            .lines()
            .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("an uptime in INFO");
        if up < needed {
            tokio::time::sleep(Duration::from_secs((needed - up) as u64)).await;
        }
    }
}

/// `old_store`: the store (Redis, or the memory bus) started more than the clock allowance ago,
/// so a channel never written is complete from before now; a memory bus created for the test
/// is not.
async fn coverage_is_exact(bus: Bus, old_store: bool) -> TestResult {
    bus.ping().await?;
    let (subscriber, mut rx) = bus.subscriber().await?;
    subscriber
        .subscribe_topics(&[Topic::User(1), Topic::Chat(71)])
        .await?;
    let t0 = now_ms();
    // A channel never written: complete, and empty, from the store's start plus the allowance.
    let never_written = bus.recent_events(1, &[], t0).await?;
    assert_eq!(never_written, old_store.then(Vec::new), "no log yet");

    // A new log starts there too: its first events are served for earlier cursors.
    let at = t0 + RECENT_LOG_SKEW_MS + 1_000;
    bus.publish_logged_to_users(&[1], &event(1), at).await?;
    bus.publish_logged_to_chat(71, &event(2), at).await?;
    assert_eq!(
        bus.recent_events(1, &[71], t0).await?.map(sorted),
        old_store.then(|| vec![event(1), event(2)])
    );
    let from = at - 500;
    assert_eq!(
        bus.recent_events(1, &[71], from).await?.map(sorted),
        Some(vec![event(1), event(2)])
    );
    assert_eq!(
        bus.recent_events(1, &[72], from).await?,
        Some(vec![event(1)]),
        "chat 72 has no log: nothing of it since the store started"
    );

    // The logged publishes reached the subscriber too. Order holds per channel only: on a
    // cluster the two channels may live on different shards, read by different connections.
    let mut got = Vec::new();
    for _ in 0..2 {
        let message = tokio::time::timeout(Duration::from_secs(2), rx.recv()).await;
        got.push(message.ok().flatten());
    }
    let user_event = Some(BusMessage::Payload {
        user: 1,
        payload: event(1),
    });
    let chat_event = Some(BusMessage::ChatPayload {
        chat: 71,
        payload: event(2),
    });
    assert!(
        got == [user_event.clone(), chat_event.clone()] || got == [chat_event, user_event],
        "each logged publish reached the subscriber once: {got:?}"
    );

    // A count trim: four events in a log of three drop the first; the log is complete only
    // above its score.
    for n in 3..=5 {
        bus.publish_logged_to_users(&[1], &event(n), at + i64::from(n) - 2)
            .await?;
    }
    assert_eq!(bus.recent_events(1, &[], from).await?, None);
    assert_eq!(bus.recent_events(1, &[], at).await?, None);
    assert_eq!(
        bus.recent_events(1, &[], at + 1).await?,
        Some(vec![event(3), event(4), event(5)])
    );
    assert_eq!(
        bus.recent_events(1, &[], at + 3).await?,
        Some(vec![event(5)])
    );

    // An invalidation (a publish that failed) makes the log incomplete before now plus the
    // allowance.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    bus.invalidate_recent(&[Topic::Chat(71)]).await?;
    assert_eq!(bus.recent_events(1, &[71], at + 3).await?, None);
    let later = now_ms() + RECENT_LOG_SKEW_MS + 100;
    assert_eq!(
        bus.recent_events(1, &[71], later).await?,
        Some(vec![]),
        "nothing logged that late"
    );
    // Invalidating a channel never written gives it a meta that covers only from then on.
    bus.invalidate_recent(&[Topic::Chat(73)]).await?;
    assert_eq!(bus.recent_events(1, &[73], at + 3).await?, None);
    assert_eq!(
        bus.recent_events(1, &[73], later).await?,
        Some(vec![]),
        "a never-written channel after its invalidation"
    );
    Ok(())
}

#[tokio::test]
async fn memory_coverage_is_exact() -> TestResult {
    coverage_is_exact(Bus::memory("t").with_recent_log(BOUNDS), false).await
}

#[tokio::test]
async fn standalone_coverage_is_exact() -> TestResult {
    let url =
        std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    wait_until_up_longer_than_the_allowance(&[&url]).await;
    coverage_is_exact(standalone(), true).await
}

#[tokio::test]
async fn cluster_coverage_is_exact() -> TestResult {
    let nodes: Vec<String> = (7000..=7005)
        .map(|port| format!("redis://127.0.0.1:{port}"))
        .collect();
    let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
    wait_until_up_longer_than_the_allowance(&nodes).await;
    coverage_is_exact(cluster(), true).await
}

#[tokio::test]
async fn a_disabled_log_covers_nothing_and_still_publishes() -> TestResult {
    let bus = Bus::memory("t").with_recent_log(RecentLogConfig {
        window: Duration::ZERO,
        max_len: 1000,
    });
    let (subscriber, mut rx) = bus.subscriber().await?;
    subscriber.subscribe_many(&[1]).await?;
    bus.publish_logged_to_users(&[1], &event(1), now_ms())
        .await?;
    assert_eq!(
        rx.recv().await,
        Some(BusMessage::Payload {
            user: 1,
            payload: event(1)
        })
    );
    assert_eq!(bus.recent_events(1, &[], 0).await?, None);
    Ok(())
}

/// The late publishes that keep syncs off the log: counted across replicas until cleared, gone
/// when they expire, and a forgotten (dead) replica's go with it.
async fn late_publishes_are_counted_until_cleared(bus: Bus) -> TestResult {
    assert_eq!(bus.late_publishes().await?, 0);
    bus.mark_late("a", 1, Duration::from_secs(60)).await?;
    bus.mark_late("a", 2, Duration::from_secs(60)).await?;
    bus.mark_late("ab", 1, Duration::from_secs(60)).await?;
    bus.mark_late("b", 1, Duration::from_millis(1)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        bus.late_publishes().await?,
        3,
        "b's entry expired; a's two and ab's one remain"
    );
    bus.clear_late("a", 1).await?;
    assert_eq!(bus.late_publishes().await?, 2);
    bus.forget_replica("a").await?;
    assert_eq!(
        bus.late_publishes().await?,
        1,
        "a's entries went with it, not ab's"
    );
    bus.clear_late("ab", 1).await?;
    assert_eq!(bus.late_publishes().await?, 0);
    Ok(())
}

#[tokio::test]
async fn memory_late_publishes_are_counted_until_cleared() -> TestResult {
    late_publishes_are_counted_until_cleared(Bus::memory("t").with_recent_log(BOUNDS)).await
}

#[tokio::test]
async fn standalone_late_publishes_are_counted_until_cleared() -> TestResult {
    late_publishes_are_counted_until_cleared(standalone()).await
}

#[tokio::test]
async fn cluster_late_publishes_are_counted_until_cleared() -> TestResult {
    late_publishes_are_counted_until_cleared(cluster()).await
}

async fn pending_changes_are_kept_until_cleared_or_forgotten(bus: Bus) -> TestResult {
    let delete = PendingChange {
        chat_id: 7,
        message_id: 70,
        edit: None,
    };
    let edit = PendingChange {
        chat_id: 7,
        message_id: 71,
        edit: Some("new: text".into()),
    };
    bus.mark_change("a", 1, &delete).await?;
    bus.mark_change("a", 2, &edit).await?;
    bus.mark_change("ab", 1, &delete).await?;
    let mut pending = bus.pending_changes("a").await?;
    pending.sort_by_key(|(id, _)| *id);
    assert_eq!(pending, [(1, delete.clone()), (2, edit.clone())]);
    bus.clear_change("a", 1).await?;
    assert_eq!(bus.pending_changes("a").await?, [(2, edit)]);
    bus.forget_replica("a").await?;
    assert!(bus.pending_changes("a").await?.is_empty());
    assert_eq!(
        bus.pending_changes("ab").await?,
        [(1, delete)],
        "another replica's changes stay"
    );
    Ok(())
}

#[tokio::test]
async fn memory_pending_changes_are_kept_until_cleared_or_forgotten() -> TestResult {
    pending_changes_are_kept_until_cleared_or_forgotten(Bus::memory("t").with_recent_log(BOUNDS))
        .await
}

#[tokio::test]
async fn standalone_pending_changes_are_kept_until_cleared_or_forgotten() -> TestResult {
    pending_changes_are_kept_until_cleared_or_forgotten(standalone()).await
}

#[tokio::test]
async fn cluster_pending_changes_are_kept_until_cleared_or_forgotten() -> TestResult {
    pending_changes_are_kept_until_cleared_or_forgotten(cluster()).await
}
