//! The parsing and routing, and (the tests named `live_*`, which `make unit` skips) subscribing
//! on the local test cluster (`deploy/local/redis-cluster.sh start`, which `make test` runs first;
//! `CHAT_TEST_CLUSTER_URL` overrides its seeds), across a stale map and a slot that moves
//! (moved back at the end). A failover is the end-to-end suite's
//! (`chat-testkit/tests/cluster_failover.rs`).

use super::*;
use crate::redis::subscriber::test_keys as unique_keys;
use bytes::Bytes;
use std::time::Duration;

fn cluster_seeds() -> Vec<String> {
    std::env::var("CHAT_TEST_CLUSTER_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:7000,redis://127.0.0.1:7001".into())
        .split(',')
        .map(|url| url.trim().to_string())
        .collect()
}

async fn start(keys: &Arc<Keys>) -> (ClusterSubscription, mpsc::UnboundedReceiver<BusMessage>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = ClusterSubscription::connect(&cluster_seeds(), keys.clone(), tx)
        .await
        .expect("the test cluster answers (start it: deploy/local/redis-cluster.sh start)");
    (subscription, rx)
}

async fn spublish(channel: &str, payload: &str) -> i64 {
    let client = redis::cluster::ClusterClient::new(cluster_seeds()).expect("seeds");
    let mut conn = client
        .get_async_connection()
        .await
        .expect("the test cluster answers");
    redis::cmd("SPUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .expect("SPUBLISH")
}

async fn received(
    rx: &mut mpsc::UnboundedReceiver<BusMessage>,
    count: usize,
) -> Vec<UserIdPayload> {
    let mut got = Vec::new();
    while got.len() < count {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(BusMessage::Payload { user, payload })) => got.push((user, payload)),
            other => panic!("a message within 5 s, got {other:?} after {got:?}"),
        }
    }
    got.sort();
    got
}

type UserIdPayload = (crate::UserId, Bytes);

/// Users whose channels are on `masters` different masters of `slots`.
fn users_on_distinct_masters(keys: &Keys, slots: &[SlotRange], masters: usize) -> Vec<u64> {
    let mut seen: Vec<Endpoint> = Vec::new();
    let mut users = Vec::new();
    for user in 1..10_000u64 {
        let channel = keys.user_channel(user);
        let master = master_of(slots, slot_of(channel.as_bytes())).expect("served");
        if !seen.contains(master) {
            seen.push(master.clone());
            users.push(user);
        }
        if users.len() == masters {
            break;
        }
    }
    assert_eq!(
        users.len(),
        masters,
        "the test cluster has {masters} masters"
    );
    users
}

#[tokio::test]
async fn live_channels_on_every_master_are_delivered_until_unsubscribed() {
    let keys = unique_keys("every");
    let (subscription, mut rx) = start(&keys).await;
    let slots = subscription.shards.lock().await.slots.clone();
    let users = users_on_distinct_masters(&keys, &slots, 3);
    let channels: Vec<String> = users.iter().map(|&u| keys.user_channel(u)).collect();
    subscription
        .subscribe(channels.clone())
        .await
        .expect("subscribed");
    for channel in &channels {
        assert_eq!(spublish(channel, "hello").await, 1, "{channel}");
    }
    let got = received(&mut rx, 3).await;
    let want: Vec<UserIdPayload> = users
        .iter()
        .map(|&u| (u, Bytes::from_static(b"hello")))
        .collect();
    assert_eq!(got, want);
    subscription
        .unsubscribe(channels[..1].to_vec())
        .await
        .expect("unsubscribed");
    assert_eq!(spublish(&channels[0], "gone").await, 0);
    assert_eq!(spublish(&channels[1], "still").await, 1);
    assert_eq!(
        received(&mut rx, 1).await,
        vec![(users[1], Bytes::from_static(b"still"))]
    );
}

#[tokio::test]
async fn live_a_stale_slot_map_is_read_again_after_moved() {
    let keys = unique_keys("moved");
    let (subscription, mut rx) = start(&keys).await;
    let users = {
        let mut shards = subscription.shards.lock().await;
        let users = users_on_distinct_masters(&keys, &shards.slots, 3);
        // As if every slot had stayed on the first master.
        let first = shards.slots[0].master.clone();
        shards.slots = vec![SlotRange {
            first: 0,
            last: SLOTS - 1,
            master: first,
        }];
        users
    };
    let channels: Vec<String> = users.iter().map(|&u| keys.user_channel(u)).collect();
    subscription
        .subscribe(channels.clone())
        .await
        .expect("subscribed after MOVED");
    assert!(
        subscription.shards.lock().await.slots.len() >= 3,
        "the map was read again"
    );
    for channel in &channels {
        assert_eq!(spublish(channel, "moved").await, 1, "{channel}");
    }
    assert_eq!(received(&mut rx, 3).await.len(), 3);
}

fn bulk(text: &str) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(text.as_bytes()))
}

/// A plain connection to one master, for the CLUSTER commands of a slot migration.
async fn admin(master: &Endpoint) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{master:?}"))
        .expect("address")
        .get_multiplexed_async_connection()
        .await
        .expect("the master answers")
}

async fn cluster_command(conn: &mut redis::aio::MultiplexedConnection, args: &[&str]) -> String {
    let mut command = redis::cmd("CLUSTER");
    for arg in args {
        command.arg(*arg);
    }
    command.query_async(conn).await.expect("CLUSTER command")
}

/// Moves an empty slot (channels are not keys) from one master to another, as a resharding
/// does.
async fn move_slot(slot: u16, from: &Endpoint, to: &Endpoint) {
    let (mut source, mut target) = (admin(from).await, admin(to).await);
    let source_id = cluster_command(&mut source, &["MYID"]).await;
    let target_id = cluster_command(&mut target, &["MYID"]).await;
    let slot = slot.to_string();
    cluster_command(&mut target, &["SETSLOT", &slot, "IMPORTING", &source_id]).await;
    cluster_command(&mut source, &["SETSLOT", &slot, "MIGRATING", &target_id]).await;
    cluster_command(&mut target, &["SETSLOT", &slot, "NODE", &target_id]).await;
    cluster_command(&mut source, &["SETSLOT", &slot, "NODE", &target_id]).await;
}

#[tokio::test]
async fn live_a_channel_whose_slot_moves_is_subscribed_again_on_its_new_master() {
    let keys = unique_keys("reshard");
    let (subscription, mut rx) = start(&keys).await;
    // A user far from the small ids the other tests of this binary use at the same time.
    let user = 7_000_001;
    let channel = keys.user_channel(user);
    let slot = slot_of(channel.as_bytes());
    let slots = subscription.shards.lock().await.slots.clone();
    let from = master_of(&slots, slot).expect("served").clone();
    let to = slots
        .iter()
        .map(|range| &range.master)
        .find(|master| **master != from)
        .expect("a second master")
        .clone();
    for other in users_on_distinct_masters(&keys, &slots, 3) {
        assert_ne!(slot_of(keys.user_channel(other).as_bytes()), slot);
    }
    subscription
        .subscribe(vec![channel.clone()])
        .await
        .expect("subscribed");

    move_slot(slot, &from, &to).await;
    // The old master unsubscribes the channel by itself; the connection reports it, as the
    // gateway's registry needs to subscribe again.
    let reported = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
    let resubscribed = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while let Err(e) = subscription.subscribe(vec![channel.clone()]).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not resubscribed: {e}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        spublish(&channel, "after").await
    };
    let outcome = (
        matches!(reported, Ok(Some(BusMessage::Disconnected))),
        resubscribed.await,
    );
    let delivered = received(&mut rx, 1).await;
    move_slot(slot, &to, &from).await;
    assert_eq!(outcome, (true, 1), "reported {reported:?}");
    assert_eq!(delivered, vec![(user, Bytes::from_static(b"after"))]);
}

fn entry(first: i64, last: i64, host: &str, port: i64) -> BytesFrame {
    BytesFrame::Array(vec![
        BytesFrame::Integer(first),
        BytesFrame::Integer(last),
        BytesFrame::Array(vec![bulk(host), BytesFrame::Integer(port), bulk("id")]),
        // A replica, which a subscription does not use.
        BytesFrame::Array(vec![
            bulk("10.0.0.9"),
            BytesFrame::Integer(7005),
            bulk("id"),
        ]),
    ])
}

fn seed() -> Endpoint {
    Endpoint::parse("redis://:pw@10.0.0.1:7000").expect("url")
}

#[test]
fn slots_are_those_redis_computes() {
    // Values from CLUSTER KEYSLOT on Redis 7.
    assert_eq!(slot_of(b"foo"), 12182);
    assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
    assert_eq!(slot_of(b"chat:u:{42}"), slot_of(b"42"));
    // An empty tag hashes the whole key.
    assert_eq!(
        slot_of(b"a{}b"),
        crc16::State::<crc16::XMODEM>::calculate(b"a{}b") % SLOTS
    );
}

#[test]
fn the_map_routes_each_slot_to_its_master() {
    let reply = BytesFrame::Array(vec![
        entry(10923, 16383, "10.0.0.3", 7002),
        entry(0, 5460, "", 7000),
        entry(5461, 10922, "10.0.0.2", 7001),
    ]);
    let slots = parse_slots(reply, &seed()).expect("a map");
    let port_of = |slot| {
        let master = master_of(&slots, slot).expect("served");
        (master.host().to_string(), master.clone())
    };
    // The empty host is the server that answered; credentials carry over.
    assert_eq!(port_of(0).1, seed().at("10.0.0.1", 7000));
    assert_eq!(port_of(5460).0, "10.0.0.1");
    assert_eq!(port_of(5461).1, seed().at("10.0.0.2", 7001));
    assert_eq!(port_of(16383).0, "10.0.0.3");
}

#[test]
fn unserved_slots_and_malformed_replies_route_nowhere() {
    let reply = BytesFrame::Array(vec![
        entry(0, 99, "10.0.0.1", 7000),
        entry(200, 299, "?", 7001),
    ]);
    let slots = parse_slots(reply, &seed()).expect("a map");
    assert!(master_of(&slots, 50).is_some());
    assert_eq!(master_of(&slots, 150), None);
    assert_eq!(master_of(&slots, 250), None, "an unknown endpoint");
    assert_eq!(master_of(&slots, 16000), None);
    assert_eq!(parse_slots(bulk("ERR"), &seed()), None);
    let bad_port = BytesFrame::Array(vec![entry(0, 10, "h", 70000)]);
    assert_eq!(parse_slots(bad_port, &seed()), None);
    let bad_slot = BytesFrame::Array(vec![entry(0, 16384, "h", 7000)]);
    assert_eq!(parse_slots(bad_slot, &seed()), None);
}
