//! The subscription connection's requests, confirmations and frames against a scripted server,
//! and the tests named `live_*` against the real Redis of the test machine
//! (`CHAT_TEST_REDIS_URL`, default redis://127.0.0.1:6379), each on channels of its own prefix.
//! `make unit` skips the `live_*` ones (it needs no services); `make test` runs them all.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redis::AsyncCommands;
use redis_protocol::codec::Resp2;
use redis_protocol::resp2::types::BytesFrame;
use tokio_util::codec::Framed;

use super::connection::{Connection, REPLY_TIMEOUT};
use super::requests::{Pending, confirm, refuse};
use super::*;
use crate::redis::subscriber::test_keys as unique_keys;

fn redis_url() -> String {
    std::env::var("CHAT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn publisher() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers (start it, or set CHAT_TEST_REDIS_URL)")
}

async fn start(keys: &Arc<Keys>) -> (NodeSubscription, mpsc::UnboundedReceiver<BusMessage>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let subscription = NodeSubscription::connect(&redis_url(), keys.clone(), tx)
        .await
        .expect("Redis answers (start it, or set CHAT_TEST_REDIS_URL)");
    (subscription, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<BusMessage>) -> BusMessage {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("a message within 5 s")
        .expect("the subscription is running")
}

async fn publish(
    redis: &mut redis::aio::MultiplexedConnection,
    channel: &str,
    payload: &str,
) -> i64 {
    redis.publish(channel, payload).await.expect("PUBLISH")
}

#[tokio::test]
async fn live_a_confirmed_subscription_receives_and_an_unsubscribed_channel_does_not() {
    let keys = unique_keys("confirm");
    let mut redis = publisher().await;
    let (subscription, mut rx) = start(&keys).await;
    let (one, two) = (keys.user_channel(1), keys.user_channel(2));
    subscription
        .subscribe(vec![one.clone(), two.clone(), one.clone()])
        .await
        .expect("subscribed");
    // Resolved only after Redis confirmed: a PUBLISH right now already reaches us.
    assert_eq!(publish(&mut redis, &one, "first").await, 1);
    assert_eq!(
        next(&mut rx).await,
        BusMessage::Payload {
            user: 1,
            payload: Bytes::from_static(b"first")
        }
    );
    subscription
        .unsubscribe(vec![one.clone()])
        .await
        .expect("unsubscribed");
    assert_eq!(publish(&mut redis, &one, "gone").await, 0);
    assert_eq!(publish(&mut redis, &two, "second").await, 1);
    assert_eq!(
        next(&mut rx).await,
        BusMessage::Payload {
            user: 2,
            payload: Bytes::from_static(b"second")
        }
    );
    subscription
        .subscribe(Vec::new())
        .await
        .expect("nothing to subscribe is done");
}

#[tokio::test]
async fn live_a_killed_connection_reports_disconnected_and_comes_back() {
    let keys = unique_keys("kill");
    let mut redis = publisher().await;
    let (subscription, mut rx) = start(&keys).await;
    let channel = keys.user_channel(7);
    subscription
        .subscribe(vec![channel.clone()])
        .await
        .expect("subscribed");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("ID")
        .arg(client_id(&mut redis, &keys.subscriber_name()).await)
        .query_async(&mut redis)
        .await
        .expect("CLIENT KILL");
    assert_eq!(killed, 1);
    assert_eq!(next(&mut rx).await, BusMessage::Disconnected);
    // The new connection subscribes nothing by itself (the gateway's registry does that),
    // and a subscribe made while it reconnects may be refused: retry as the registry does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while subscription.subscribe(vec![channel.clone()]).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reconnect within 5 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(publish(&mut redis, &channel, "back").await, 1);
    assert_eq!(
        next(&mut rx).await,
        BusMessage::Payload {
            user: 7,
            payload: Bytes::from_static(b"back")
        }
    );
}

/// The id of the one client named `name`.
async fn client_id(redis: &mut redis::aio::MultiplexedConnection, name: &str) -> u64 {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(redis)
        .await
        .expect("CLIENT LIST");
    let ids: Vec<u64> = list
        .lines()
        .filter(|line| line.split(' ').any(|field| field == format!("name={name}")))
        .filter_map(|line| {
            line.split(' ')
                .find_map(|f| f.strip_prefix("id=")?.parse().ok())
        })
        .collect();
    assert_eq!(ids.len(), 1, "one client named {name}: {ids:?}");
    ids[0]
}

#[tokio::test]
async fn an_unreachable_redis_fails_the_connect() {
    let (tx, _rx) = mpsc::unbounded_channel();
    // Port 1 on loopback: nothing listens there.
    let refused = NodeSubscription::connect("redis://127.0.0.1:1", unique_keys("down"), tx).await;
    assert!(matches!(refused, Err(BusError::Subscription(_))));
}

fn pending(command: Command, channels: usize) -> (Pending, oneshot::Receiver<Result<()>>) {
    let (done, answer) = oneshot::channel();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let pending = Pending::new(command, VecDeque::from([channels]), deadline, done);
    (pending, answer)
}

#[tokio::test]
async fn a_sharded_request_is_done_when_each_of_its_commands_is_answered() {
    let mut queue = VecDeque::new();
    let (done, mut answer) = oneshot::channel();
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    let three = VecDeque::from([1, 1, 1]);
    queue.push_back(Pending::new(Command::ShardSubscribe, three, deadline, done));
    let (after, mut after_answer) = pending(Command::ShardUnsubscribe, 1);
    queue.push_back(after);
    assert_eq!(confirm(&mut queue, b"ssubscribe"), Ok(()));
    // The second channel's slot is served elsewhere: its command alone is refused.
    assert_eq!(
        refuse(&mut queue, "MOVED 15495 127.0.0.1:7002".into()),
        Ok(())
    );
    assert!(
        answer.try_recv().is_err(),
        "the third command is unanswered"
    );
    assert_eq!(confirm(&mut queue, b"ssubscribe"), Ok(()));
    assert!(
        matches!(answer.try_recv(), Ok(Err(BusError::Subscription(why))) if why.contains("MOVED"))
    );
    assert!(after_answer.try_recv().is_err());
    assert_eq!(confirm(&mut queue, b"sunsubscribe"), Ok(()));
    assert!(matches!(after_answer.try_recv(), Ok(Ok(()))));
    assert!(
        confirm(&mut queue, b"sunsubscribe").is_err(),
        "a sunsubscribe Redis sent by itself breaks the connection"
    );
}

#[tokio::test]
async fn confirmations_complete_requests_in_order_and_a_stray_one_breaks_the_connection() {
    let mut queue = VecDeque::new();
    let (first, mut first_answer) = pending(Command::Subscribe, 2);
    let (second, mut second_answer) = pending(Command::Unsubscribe, 1);
    queue.extend([first, second]);
    assert_eq!(confirm(&mut queue, b"subscribe"), Ok(()));
    assert!(first_answer.try_recv().is_err(), "one of two confirmations");
    assert_eq!(confirm(&mut queue, b"subscribe"), Ok(()));
    assert!(matches!(first_answer.try_recv(), Ok(Ok(()))));
    assert!(
        confirm(&mut queue, b"subscribe").is_err(),
        "a subscribe confirmation while an unsubscribe waits"
    );
    assert!(second_answer.try_recv().is_err());
    assert_eq!(confirm(&mut queue, b"unsubscribe"), Ok(()));
    assert!(matches!(second_answer.try_recv(), Ok(Ok(()))));
    assert!(
        confirm(&mut queue, b"unsubscribe").is_err(),
        "nothing waits"
    );
}

fn bulk(text: &str) -> BytesFrame {
    BytesFrame::BulkString(Bytes::copy_from_slice(text.as_bytes()))
}

#[tokio::test]
async fn frames_are_forwarded_counted_or_dropped() {
    let keys = unique_keys("frames");
    let (messages, mut rx) = mpsc::unbounded_channel();
    let (_requests, waiting) = mpsc::unbounded_channel();
    let task = Task {
        endpoint: Endpoint::parse("redis://127.0.0.1:1").expect("url"),
        keys: keys.clone(),
        messages,
        requests: waiting,
        timing: Timing::default(),
    };
    let mut queue = VecDeque::new();
    let message =
        |channel: &str| BytesFrame::Array(vec![bulk("message"), bulk(channel), bulk("payload")]);
    assert_eq!(
        task.take(message(&keys.user_channel(9)), &mut queue),
        Ok(())
    );
    assert_eq!(
        rx.try_recv(),
        Ok(BusMessage::Payload {
            user: 9,
            payload: Bytes::from_static(b"payload")
        })
    );
    // A channel of another prefix is not for the gateway.
    assert_eq!(task.take(message("other:u:{9}"), &mut queue), Ok(()));
    assert!(rx.try_recv().is_err());
    // A pong answers the task's PING, and only that.
    let pong = || BytesFrame::Array(vec![bulk("pong"), bulk("")]);
    let (ping, mut ping_answer) = pending(Command::Ping, 1);
    queue.push_back(ping);
    assert_eq!(task.take(pong(), &mut queue), Ok(()));
    assert!(matches!(ping_answer.try_recv(), Ok(Ok(()))));
    assert!(
        task.take(pong(), &mut queue).is_err(),
        "a pong nothing asked for"
    );
    let (ping, mut ping_answer) = pending(Command::Ping, 1);
    queue.push_back(ping);
    let plain_pong = BytesFrame::SimpleString(Bytes::from_static(b"PONG"));
    assert_eq!(task.take(plain_pong, &mut queue), Ok(()));
    assert!(matches!(ping_answer.try_recv(), Ok(Ok(()))));
    // An error answers the oldest request; one that nothing asked for breaks the connection.
    let (request, mut answer) = pending(Command::Subscribe, 3);
    queue.push_back(request);
    let refused = BytesFrame::Error("NOPERM no channels".into());
    assert_eq!(task.take(refused.clone(), &mut queue), Ok(()));
    assert!(
        matches!(answer.try_recv(), Ok(Err(BusError::Subscription(why))) if why.contains("NOPERM"))
    );
    assert!(task.take(refused, &mut queue).is_err());
}

/// Starts the task on an open connection with fast pings.
fn start_pinging(
    url: &str,
    keys: Arc<Keys>,
    connection: Connection,
) -> (NodeSubscription, mpsc::UnboundedReceiver<BusMessage>) {
    let (messages, rx) = mpsc::unbounded_channel();
    let (requests, waiting) = mpsc::unbounded_channel();
    let task = Task {
        endpoint: Endpoint::parse(url).expect("url"),
        keys,
        messages,
        requests: waiting,
        timing: Timing {
            ping_every: Duration::from_millis(50),
            reply_timeout: Duration::from_millis(300),
        },
    };
    tokio::spawn(task.run(connection));
    (
        NodeSubscription {
            requests,
            sharded: false,
        },
        rx,
    )
}

#[tokio::test]
async fn live_pings_answered_keep_the_connection_and_a_silent_server_is_dropped() {
    // The real Redis answers every PING: a second of them breaks nothing.
    let keys = unique_keys("ping");
    let endpoint = Endpoint::parse(&redis_url()).expect("url");
    let connection = endpoint
        .open(&keys.subscriber_name())
        .await
        .expect("Redis answers (start it, or set CHAT_TEST_REDIS_URL)");
    let (subscription, mut rx) = start_pinging(&redis_url(), keys.clone(), connection);
    let channel = keys.user_channel(5);
    subscription
        .subscribe(vec![channel.clone()])
        .await
        .expect("subscribed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rx.try_recv().is_err(),
        "no Disconnected while pings are answered"
    );
    let mut redis = publisher().await;
    assert_eq!(publish(&mut redis, &channel, "still").await, 1);
    assert!(matches!(
        next(&mut rx).await,
        BusMessage::Payload { user: 5, .. }
    ));
    // With nothing subscribed Redis answers `+PONG`, not a push: that answers a PING too.
    subscription
        .unsubscribe(vec![channel.clone()])
        .await
        .expect("unsubscribed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rx.try_recv().is_err(),
        "no Disconnected while nothing is subscribed"
    );

    // A server that answers the handshake and then nothing, as a vanished host would.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("redis://{}", listener.local_addr().expect("address"));
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        let mut framed = Framed::new(socket, Resp2::default());
        let _setname = framed.next().await;
        framed
            .send(BytesFrame::SimpleString(Bytes::from_static(b"OK")))
            .await
            .expect("answer");
        // Read on, answer nothing.
        while framed.next().await.is_some() {}
    });
    let silent = Endpoint::parse(&url).expect("url");
    let connection = silent.open("silent").await.expect("the handshake");
    let (_subscription, mut rx) = start_pinging(&url, keys, connection);
    let disconnected = tokio::time::timeout(Duration::from_secs(3), rx.recv()).await;
    assert!(
        matches!(disconnected, Ok(Some(BusMessage::Disconnected))),
        "an unanswered PING breaks the connection: {disconnected:?}"
    );
    server.abort();
}
