//! The subscription connection to one Redis server: one RESP2 connection in subscribed mode,
//! owned by one task, that turns every pushed message into a [`BusMessage`]. A standalone Redis
//! has one, with SUBSCRIBE; a cluster has one per master, with SSUBSCRIBE (see `cluster`).
//!
//! Why not redis-rs's connection manager, as for every other command: it parses each push into a
//! tree of owned values with a general-purpose parser, and that was about a fifth of a gateway's
//! CPU while it fanned a group's messages out (docs/performance.md). Here redis-protocol's codec
//! decodes a push without copying: the payload handed on is a slice of the read buffer.
//!
//! Redis confirms SUBSCRIBE and UNSUBSCRIBE once per channel, in order, so a request is done when
//! its last confirmation arrives. SSUBSCRIBE takes channels of one slot only, so a sharded request
//! is sent as one command per channel, and an error (a `MOVED`) answers one of those commands.
//! When the connection breaks, the requests in flight fail, the gateway hears `Disconnected` (its
//! registry then subscribes its users again), and the task reconnects with backoff; a request
//! made while it is down fails at once. A PING every `PING_EVERY` finds a connection that died
//! without a word (a host gone, a dropped route), which would otherwise go on delivering nothing.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use redis::{ConnectionAddr, IntoConnectionInfo};
use redis_protocol::codec::Resp2;
use redis_protocol::resp2::types::BytesFrame;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::BusMessage;
use crate::keys::Keys;
use crate::{BusError, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to confirm a (un)subscribe or answer AUTH before the connection is
/// taken for dead.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const PING_EVERY: Duration = Duration::from_secs(10);
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(50);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

type Connection = Framed<TcpStream, Resp2>;

/// A handle on the subscription task; the task ends when the last clone is dropped.
#[derive(Clone)]
pub(crate) struct NodeSubscription {
    requests: mpsc::UnboundedSender<Request>,
    sharded: bool,
}

impl NodeSubscription {
    /// Connects to a standalone Redis (an unreachable Redis is an error here, as it is for every
    /// other connection) and starts the task that forwards pushed messages to `messages`.
    pub(crate) async fn connect(
        url: &str,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        Self::open(Endpoint::parse(url)?, false, keys, messages).await
    }

    /// Connects to one master of a cluster, for shard channels (SSUBSCRIBE).
    pub(crate) async fn connect_sharded(
        endpoint: Endpoint,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        Self::open(endpoint, true, keys, messages).await
    }

    async fn open(
        endpoint: Endpoint,
        sharded: bool,
        keys: Arc<Keys>,
        messages: mpsc::UnboundedSender<BusMessage>,
    ) -> Result<Self> {
        let connection = endpoint.open(&keys.subscriber_name()).await?;
        let (requests, waiting) = mpsc::unbounded_channel();
        let task = Task {
            endpoint,
            keys,
            messages,
            requests: waiting,
            timing: Timing::default(),
        };
        tokio::spawn(task.run(connection));
        Ok(Self { requests, sharded })
    }

    /// Subscribes to `channels`; resolves once Redis confirmed every one of them.
    pub(crate) async fn subscribe(&self, channels: Vec<String>) -> Result<()> {
        let command = if self.sharded {
            Command::ShardSubscribe
        } else {
            Command::Subscribe
        };
        self.request(command, channels).await
    }

    pub(crate) async fn unsubscribe(&self, channels: Vec<String>) -> Result<()> {
        let command = if self.sharded {
            Command::ShardUnsubscribe
        } else {
            Command::Unsubscribe
        };
        self.request(command, channels).await
    }

    async fn request(&self, command: Command, channels: Vec<String>) -> Result<()> {
        let (done, answer) = oneshot::channel();
        let request = Request {
            command,
            channels,
            done,
        };
        self.requests
            .send(request)
            .map_err(|_| unavailable("the subscription task has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(unavailable("the subscription task has stopped")))
    }
}

fn unavailable(why: &str) -> BusError {
    BusError::Subscription(why.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Subscribe,
    Unsubscribe,
    ShardSubscribe,
    ShardUnsubscribe,
    /// The task's own liveness check.
    Ping,
}

impl Command {
    fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::ShardSubscribe => "SSUBSCRIBE",
            Self::ShardUnsubscribe => "SUNSUBSCRIBE",
            Self::Ping => "PING",
        }
    }

    /// The kind of the pushes that confirm this command, one per channel (one for PING).
    fn confirmation(self) -> &'static [u8] {
        match self {
            Self::Subscribe => b"subscribe",
            Self::Unsubscribe => b"unsubscribe",
            Self::ShardSubscribe => b"ssubscribe",
            Self::ShardUnsubscribe => b"sunsubscribe",
            Self::Ping => b"pong",
        }
    }

    /// How many channels one command of this kind may carry: shard channels must share a slot,
    /// and those of different users do not.
    fn channels_per_command(self) -> usize {
        match self {
            Self::ShardSubscribe | Self::ShardUnsubscribe => 1,
            Self::Subscribe | Self::Unsubscribe | Self::Ping => usize::MAX,
        }
    }
}

struct Request {
    command: Command,
    channels: Vec<String>,
    done: oneshot::Sender<Result<()>>,
}

/// A request sent to Redis as one or more commands, waiting for their answers.
struct Pending {
    command: Command,
    /// Per command sent, in order: the confirmations it still waits for.
    unconfirmed: VecDeque<usize>,
    /// The first error a command of the request was answered with.
    refused: Option<String>,
    deadline: tokio::time::Instant,
    done: oneshot::Sender<Result<()>>,
}

impl Pending {
    fn new(
        command: Command,
        unconfirmed: VecDeque<usize>,
        deadline: tokio::time::Instant,
        done: oneshot::Sender<Result<()>>,
    ) -> Self {
        Self {
            command,
            unconfirmed,
            refused: None,
            deadline,
            done,
        }
    }

    fn answered(&self) -> bool {
        self.unconfirmed.is_empty()
    }

    fn finish(self) {
        let outcome = match self.refused {
            None => Ok(()),
            Some(e) => Err(BusError::Subscription(format!("redis: {e}"))),
        };
        let _ = self.done.send(outcome);
    }
}

/// Where to connect, from a `redis://` URL or a cluster's slot map.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) struct Endpoint {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
}

/// The address only: the password stays out of logs.
impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Endpoint {
    pub(crate) fn parse(url: &str) -> Result<Self> {
        let info = url.into_connection_info()?;
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(BusError::Config(format!(
                "the subscription connection needs a redis:// URL over TCP, not {}",
                info.addr()
            )));
        };
        let settings = info.redis_settings();
        Ok(Self {
            host: host.clone(),
            port: *port,
            username: settings.username().map(str::to_string),
            password: settings.password().map(str::to_string),
        })
    }

    /// Another server of the same cluster, reached with the same credentials.
    pub(crate) fn at(&self, host: &str, port: u16) -> Self {
        Self {
            host: host.to_string(),
            port,
            ..self.clone()
        }
    }

    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// Asks one command on a connection of its own, closed after the answer.
    pub(crate) async fn query(&self, words: &[&str]) -> Result<BytesFrame> {
        let mut connection = self.open("").await?;
        ask(&mut connection, words).await
    }

    /// A new connection, authenticated when the URL carries a password and named `name` (so
    /// that CLIENT LIST tells the gateways' subscriptions apart). The database number does not
    /// matter: channels are the same in every database.
    async fn open(&self, name: &str) -> Result<Connection> {
        let connect = TcpStream::connect((self.host.as_str(), self.port));
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("connecting to Redis timed out"))?
            .map_err(|e| BusError::Subscription(format!("connecting to Redis: {e}")))?;
        // Confirmations are small writes that a subscribe waits for.
        stream.set_nodelay(true).map_err(io_error)?;
        let mut connection = Framed::new(stream, Resp2::default());
        if let Some(password) = &self.password {
            let mut auth = vec!["AUTH"];
            auth.extend(self.username.as_deref());
            auth.push(password);
            if let BytesFrame::Error(e) = ask(&mut connection, &auth).await? {
                return Err(BusError::Subscription(format!("AUTH refused: {e}")));
            }
        }
        // Only a convenience: a server that refuses it (an ACL, a name it rejects) is still used.
        if !name.is_empty()
            && let BytesFrame::Error(e) = ask(&mut connection, &["CLIENT", "SETNAME", name]).await?
        {
            tracing::debug!(error = %e, "CLIENT SETNAME refused");
        }
        Ok(connection)
    }
}

/// Sends one command before subscribing and waits for its answer.
async fn ask(connection: &mut Connection, words: &[&str]) -> Result<BytesFrame> {
    connection
        .send(command_frame(words))
        .await
        .map_err(protocol_error)?;
    match tokio::time::timeout(REPLY_TIMEOUT, connection.next()).await {
        Err(_) => Err(unavailable("Redis did not answer")),
        Ok(None) => Err(unavailable("Redis closed the connection")),
        Ok(Some(answer)) => answer.map_err(protocol_error),
    }
}

fn io_error(e: std::io::Error) -> BusError {
    BusError::Subscription(e.to_string())
}

fn protocol_error(e: redis_protocol::error::RedisProtocolError) -> BusError {
    BusError::Subscription(e.to_string())
}

/// A command as Redis reads it: an array of bulk strings.
fn command_frame<S: AsRef<str>>(words: &[S]) -> BytesFrame {
    BytesFrame::Array(
        words
            .iter()
            .map(|word| BytesFrame::BulkString(Bytes::copy_from_slice(word.as_ref().as_bytes())))
            .collect(),
    )
}

/// Why a connection stopped being served.
enum Ended {
    /// Every handle was dropped: the task is done.
    Dropped,
    /// The connection broke; the reason is logged.
    Broken(String),
}

struct Task {
    endpoint: Endpoint,
    keys: Arc<Keys>,
    messages: mpsc::UnboundedSender<BusMessage>,
    requests: mpsc::UnboundedReceiver<Request>,
    timing: Timing,
}

/// How often the task pings, and how long Redis may take to answer a request or a ping.
#[derive(Clone, Copy)]
struct Timing {
    ping_every: Duration,
    reply_timeout: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ping_every: PING_EVERY,
            reply_timeout: REPLY_TIMEOUT,
        }
    }
}

impl Task {
    async fn run(mut self, mut connection: Connection) {
        loop {
            match self.serve(&mut connection).await {
                Ended::Dropped => return,
                Ended::Broken(why) => {
                    tracing::warn!(error = %why, "redis subscription connection lost; reconnecting");
                    // The receiver is gone only while the gateway shuts down.
                    let _ = self.messages.send(BusMessage::Disconnected);
                }
            }
            match self.reconnect().await {
                Some(new) => connection = new,
                None => return,
            }
        }
    }

    /// Sends requests and reads pushes until the connection breaks or every handle is gone.
    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        let mut pending = VecDeque::new();
        let Timing {
            ping_every,
            reply_timeout,
        } = self.timing;
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
        let ended = loop {
            let deadline = pending.front().map(|p: &Pending| p.deadline);
            let overdue = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = connection.next() => match frame {
                    Some(Ok(frame)) => {
                        if let Err(why) = self.take(frame, &mut pending) {
                            break Ended::Broken(why);
                        }
                    }
                    Some(Err(e)) => break Ended::Broken(e.to_string()),
                    None => break Ended::Broken("closed by the server".into()),
                },
                request = self.requests.recv() => {
                    let Some(request) = request else { break Ended::Dropped };
                    if request.channels.is_empty() {
                        let _ = request.done.send(Ok(()));
                        continue;
                    }
                    let command = request.command;
                    let mut unconfirmed = VecDeque::new();
                    let mut written = Ok(());
                    for channels in request.channels.chunks(command.channels_per_command()) {
                        let mut words = Vec::with_capacity(channels.len() + 1);
                        words.push(command.name());
                        words.extend(channels.iter().map(String::as_str));
                        written = connection.feed(command_frame(&words)).await;
                        if written.is_err() {
                            break;
                        }
                        unconfirmed.push_back(channels.len());
                    }
                    if written.is_ok() {
                        written = SinkExt::<BytesFrame>::flush(connection).await;
                    }
                    if let Err(e) = written {
                        let _ = request.done.send(Err(protocol_error(e)));
                        break Ended::Broken("writing a request failed".into());
                    }
                    let deadline = tokio::time::Instant::now() + reply_timeout;
                    pending.push_back(Pending::new(command, unconfirmed, deadline, request.done));
                }
                _ = ping.tick(), if pending.is_empty() => {
                    if let Err(e) = connection.send(command_frame(&[Command::Ping.name()])).await {
                        break Ended::Broken(format!("writing a PING failed: {e}"));
                    }
                    // Nobody waits for the answer but the deadline.
                    let (done, _) = oneshot::channel();
                    let deadline = tokio::time::Instant::now() + reply_timeout;
                    let ping = Pending::new(Command::Ping, VecDeque::from([1]), deadline, done);
                    pending.push_back(ping);
                }
                () = overdue => break Ended::Broken("Redis did not answer in time".into()),
            }
        };
        for request in pending {
            let _ = request
                .done
                .send(Err(unavailable("the subscription connection was lost")));
        }
        ended
    }

    /// Handles one frame from Redis: a message is forwarded, a confirmation counted, an error
    /// answers the oldest request's next command. An answer the requests do not explain breaks
    /// the connection: so does a `sunsubscribe` Redis sends by itself when a slot moves to
    /// another master, and the gateway then subscribes again where the slot now is.
    fn take(
        &self,
        frame: BytesFrame,
        pending: &mut VecDeque<Pending>,
    ) -> std::result::Result<(), String> {
        match frame {
            BytesFrame::Array(parts) => {
                let mut parts = parts.into_iter();
                let (Some(BytesFrame::BulkString(kind)), Some(BytesFrame::BulkString(channel))) =
                    (parts.next(), parts.next())
                else {
                    return Ok(());
                };
                match &kind[..] {
                    b"message" | b"smessage" => {
                        if let (Some(BytesFrame::BulkString(payload)), Some(user)) =
                            (parts.next(), self.keys.user_of_channel(&channel))
                        {
                            let _ = self.messages.send(BusMessage::Payload { user, payload });
                        }
                        Ok(())
                    }
                    b"subscribe" | b"unsubscribe" | b"ssubscribe" | b"sunsubscribe" | b"pong" => {
                        confirm(pending, &kind)
                    }
                    // Kinds this connection never asks for.
                    _ => Ok(()),
                }
            }
            // Out of subscribed mode (nothing subscribed yet, or no longer) Redis answers a PING
            // as it would any client's.
            BytesFrame::SimpleString(answer) if &answer[..] == b"PONG" => confirm(pending, b"pong"),
            BytesFrame::Error(e) => refuse(pending, e.to_string()),
            _ => Ok(()),
        }
    }

    /// Opens a new connection, waiting longer after each failure; requests made meanwhile are
    /// refused. `None` once every handle is gone.
    async fn reconnect(&mut self) -> Option<Connection> {
        let mut delay = RECONNECT_FIRST_DELAY;
        loop {
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    request = self.requests.recv() => {
                        let request = request?;
                        let _ = request
                            .done
                            .send(Err(unavailable("the subscription connection is down")));
                    }
                }
            }
            match self.endpoint.open(&self.keys.subscriber_name()).await {
                Ok(connection) => {
                    tracing::info!("redis subscription connection re-established");
                    return Some(connection);
                }
                Err(e) => {
                    tracing::debug!(error = %e, "redis subscription reconnect failed");
                    delay = (delay * 2).min(RECONNECT_MAX_DELAY);
                }
            }
        }
    }
}

/// Counts one confirmation against the oldest request, which must be of its kind.
fn confirm(pending: &mut VecDeque<Pending>, kind: &[u8]) -> std::result::Result<(), String> {
    let Some(oldest) = pending.front_mut() else {
        return Err("a confirmation nothing asked for".into());
    };
    if oldest.command.confirmation() != kind {
        return Err(format!(
            "a {} confirmation while a {} was waiting",
            String::from_utf8_lossy(kind),
            oldest.command.name()
        ));
    }
    let Some(command) = oldest.unconfirmed.front_mut() else {
        return Err("a confirmation nothing asked for".into());
    };
    *command -= 1;
    if *command == 0 {
        oldest.unconfirmed.pop_front();
    }
    finish_answered(pending);
    Ok(())
}

/// An error answers the oldest request's next command as a whole (Redis refused all of it).
fn refuse(pending: &mut VecDeque<Pending>, error: String) -> std::result::Result<(), String> {
    let Some(oldest) = pending.front_mut() else {
        return Err(format!("an error nothing asked for: {error}"));
    };
    oldest.unconfirmed.pop_front();
    oldest.refused.get_or_insert(error);
    finish_answered(pending);
    Ok(())
}

fn finish_answered(pending: &mut VecDeque<Pending>) {
    if pending.front().is_some_and(Pending::answered)
        && let Some(done) = pending.pop_front()
    {
        done.finish();
    }
}

#[cfg(test)]
mod tests {
    //! Against the real Redis of the test machine (`CHAT_TEST_REDIS_URL`, default
    //! redis://127.0.0.1:6379), each test on channels of its own prefix.

    use super::*;
    use crate::redis::subscriber::test_keys as unique_keys;
    use redis::AsyncCommands;

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
    async fn a_confirmed_subscription_receives_and_an_unsubscribed_channel_does_not() {
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
    async fn a_killed_connection_reports_disconnected_and_comes_back() {
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
        let refused =
            NodeSubscription::connect("redis://127.0.0.1:1", unique_keys("down"), tx).await;
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
        let message = |channel: &str| {
            BytesFrame::Array(vec![bulk("message"), bulk(channel), bulk("payload")])
        };
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
    async fn pings_answered_keep_the_connection_and_a_silent_server_is_dropped() {
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
}
