//! The presence registry on real Redis, standalone (`CHAT_TEST_REDIS_URL`, default
//! redis://127.0.0.1:6379) and the local test cluster (`deploy/local/redis-cluster.sh start`,
//! which `make test` runs first; `CHAT_TEST_CLUSTER_URL` overrides its seeds). Gateways register
//! whole batches of users in one round of commands; each user's answer must still be its own.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_bus::{Bus, BusConfig, BusError, RedisMode};
use tokio::time::Instant;

type TestResult = Result<(), BusError>;

const TTL: Duration = Duration::from_secs(30);
/// A heartbeat of this lifetime lapses soon, while the users' keys (kept twice as long from
/// each one's refresh) are still there for the reaper to clear.
const SHORT_TTL: Duration = Duration::from_secs(2);

/// Beats for `users` with `SHORT_TTL` and waits until the node's deadline has passed.
async fn beat_and_lapse(bus: &Bus, node: &str, users: &[u64]) -> TestResult {
    let beat = Instant::now();
    bus.presence_heartbeat(node, users, SHORT_TTL).await?;
    tokio::time::sleep_until(beat + SHORT_TTL + Duration::from_millis(100)).await;
    Ok(())
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

/// A bus on a prefix of its own, so runs and tests never see each other's keys.
fn bus(mode: RedisMode, url: &str) -> Bus {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let prefix = format!("t{}-{nanos}", std::process::id());
    Bus::new(&BusConfig::new(mode, url, &prefix)).expect("a bus from the test's configuration")
}

/// Fails with a clear message when the server is not there, rather than with a command error.
async fn reachable(bus: &Bus, what: &str) {
    if let Err(e) = bus.ping().await {
        panic!(
            "{what} does not answer ({e}); `make test` starts it (scripts/services.sh, deploy/local/redis-cluster.sh)"
        );
    }
}

async fn batches_answer_per_user(bus: Bus) -> TestResult {
    assert_eq!(
        bus.presence_connect_many(&[1, 2, 3], "a", TTL).await?,
        vec![true, true, true],
        "nobody was anywhere"
    );
    assert_eq!(
        bus.presence_connect_many(&[2, 3, 4], "b", TTL).await?,
        vec![false, false, true],
        "2 and 3 are on a already"
    );
    assert_eq!(
        bus.online(&[1, 2, 3, 4, 5]).await?,
        vec![true, true, true, true, false]
    );
    assert_eq!(
        bus.presence_disconnect_many(&[1, 2, 4], "a").await?,
        vec![true, false, false],
        "1 was only on a; 2 is still on b; 4 never was on a"
    );
    assert_eq!(
        bus.presence_disconnect_many(&[2, 3, 4], "b").await?,
        vec![true, false, true],
        "3 is still on a"
    );
    assert_eq!(
        bus.online(&[1, 2, 3, 4]).await?,
        vec![false, false, true, false]
    );

    // a's user set must hold exactly who is left there (3): when a's heartbeat lapses, reaping
    // it reports 3 and nobody else.
    beat_and_lapse(&bus, "a", &[3]).await?;
    assert_eq!(bus.reap_dead_nodes().await?, vec![3]);
    assert_eq!(bus.online(&[3]).await?, vec![false]);
    Ok(())
}

/// More users than one round of commands holds (1,000), and a dead node holding them all.
async fn big_batches_span_rounds(bus: Bus) -> TestResult {
    let users: Vec<u64> = (1..=2_500).collect();
    let came_online = bus.presence_connect_many(&users, "big", TTL).await?;
    assert_eq!(came_online.len(), users.len());
    assert!(came_online.iter().all(|&b| b), "every one is new");
    let half: Vec<u64> = users.iter().copied().filter(|u| u % 2 == 0).collect();
    let went_offline = bus.presence_disconnect_many(&half, "big").await?;
    assert!(went_offline.len() == half.len() && went_offline.iter().all(|&b| b));

    beat_and_lapse(&bus, "big", &users).await?;
    let mut reaped = bus.reap_dead_nodes().await?;
    reaped.sort_unstable();
    let odd: Vec<u64> = users.iter().copied().filter(|u| u % 2 == 1).collect();
    assert_eq!(
        reaped, odd,
        "the users still held by the dead node, once each"
    );
    Ok(())
}

#[tokio::test]
async fn standalone_batches_answer_per_user() -> TestResult {
    let bus = standalone();
    reachable(&bus, "Redis").await;
    batches_answer_per_user(bus).await
}

#[tokio::test]
async fn standalone_big_batches_span_rounds() -> TestResult {
    let bus = standalone();
    reachable(&bus, "Redis").await;
    big_batches_span_rounds(bus).await
}

#[tokio::test]
async fn cluster_batches_answer_per_user() -> TestResult {
    let bus = cluster();
    reachable(&bus, "the test Redis Cluster").await;
    batches_answer_per_user(bus).await
}

#[tokio::test]
async fn cluster_big_batches_span_rounds() -> TestResult {
    let bus = cluster();
    reachable(&bus, "the test Redis Cluster").await;
    big_batches_span_rounds(bus).await
}
