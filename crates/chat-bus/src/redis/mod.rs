//! The Redis backend of [`crate::Bus`]: a single server or a cluster.
//!
//! Commands go over one shared connection to one Redis, or one multiplexed cluster connection
//! (made on first use and routed by slot). One shared connection rather than a pool of exclusive
//! ones: the commands of concurrent requests then leave together (redis-rs queues them on the
//! socket and writes what is waiting at once), where a pool gives each request its own socket and
//! its own system calls. Measured about 15% more sends per second through chat-api
//! (docs/performance.md).
//!
//! Each concern implements its part of the contract in its own file; the gateways' subscription
//! connections are this crate's own (`subscriber/`). Each command touches keys of one slot, and
//! independent commands go out together through [`RedisBus::run_all`] (one pipeline on a single
//! Redis, concurrent commands on a cluster), so the same code runs on both.

pub(crate) mod announce;
pub(crate) mod jobs;
pub(crate) mod limits;
pub(crate) mod presence;
pub(crate) mod recent;
pub(crate) mod subscriber;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncCommands, Cmd, FromRedisValue, RedisFuture, Value};
use tokio::sync::{OnceCell, mpsc};

use crate::backend::{Backend, SubscriptionBackend};
use crate::keys::Keys;
use crate::{BusConfig, BusError, BusMessage, ChatId, RedisMode, Result, UserId};
use subscriber::RedisSubscription;

/// How long a connection attempt, and a reply, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a socket may go without an answer from Redis before the kernel fails it.
const SILENT_PEER: Duration = Duration::from_secs(5);

/// The Redis bus: where commands go, and the names of the keys.
#[derive(Clone)]
pub(crate) struct RedisBus {
    server: Server,
    keys: Arc<Keys>,
}

/// One shared connection to one Redis, or a cluster client and its connection; each with the
/// URL(s) it was made from, for the connections that are not shared (subscriptions, blocking
/// reads).
#[derive(Clone)]
enum Server {
    Standalone {
        shared: ConnectionManager,
        url: String,
    },
    Cluster(Arc<ClusterServer>),
}

struct ClusterServer {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
    seeds: Vec<String>,
}

/// A connection to either kind of server; it speaks `ConnectionLike`, so commands, pipelines
/// and scripts are written once. `S` is the standalone connection: the shared connection
/// manager, or a connection of its own for blocking reads (`jobs.rs`).
pub(crate) enum Conn<S = ConnectionManager> {
    Standalone(S),
    Cluster(ClusterConnection),
}

impl<S: ConnectionLike + Send> ConnectionLike for Conn<S> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

impl RedisBus {
    /// Builds the connection manager or cluster client; connections open on first use, so a
    /// service can start before Redis.
    pub(crate) fn new(config: &BusConfig) -> Result<Self> {
        let first = config
            .urls
            .first()
            .cloned()
            .ok_or_else(|| BusError::Config("REDIS_URL is empty".into()))?;
        let server = match config.mode {
            RedisMode::Standalone => Server::Standalone {
                shared: ConnectionManager::new_lazy_with_config(
                    standalone_client(&first)?,
                    ConnectionManagerConfig::new()
                        .set_connection_timeout(Some(CONNECT_TIMEOUT))
                        .set_response_timeout(Some(REPLY_TIMEOUT))
                        .set_number_of_retries(0),
                )?,
                url: first,
            },
            RedisMode::Cluster => Server::Cluster(Arc::new(ClusterServer {
                client: cluster_builder(&config.urls).build()?,
                conn: OnceCell::new(),
                seeds: config.urls.clone(),
            })),
        };
        Ok(Self {
            server,
            keys: Arc::new(Keys::new(&config.prefix)),
        })
    }

    pub(crate) async fn conn(&self) -> Result<Conn> {
        match &self.server {
            // Lazy and self-healing: it connects on first use and again after a connection
            // error, one attempt at a time, each bounded by CONNECT_TIMEOUT.
            Server::Standalone { shared, .. } => Ok(Conn::Standalone(shared.clone())),
            Server::Cluster(cluster) => {
                // A dead Redis must not hang requests: bound the wait for a connection.
                let connect = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection());
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(conn) => Ok(Conn::Cluster(conn?.clone())),
                    Err(_) => Err(BusError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "timed out waiting for a redis connection",
                    )))),
                }
            }
        }
    }

    /// Runs independent commands and returns their replies in order: one pipeline on a single
    /// Redis; on a cluster, where a pipeline must stay inside one slot, concurrent commands on the
    /// multiplexed connection (which still share round trips).
    pub(crate) async fn run_all<T: FromRedisValue>(&self, commands: &[Cmd]) -> Result<Vec<T>> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self.conn().await? {
            mut conn @ Conn::Standalone(_) => {
                let mut pipe = redis::pipe();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                Ok(pipe.query_async(&mut conn).await?)
            }
            Conn::Cluster(conn) => {
                let replies = futures_util::future::join_all(commands.iter().map(|command| {
                    let mut conn = conn.clone();
                    async move { command.query_async::<T>(&mut conn).await }
                }))
                .await;
                Ok(replies.into_iter().collect::<Result<Vec<T>, _>>()?)
            }
        }
    }
}

#[async_trait]
impl Backend for RedisBus {
    fn name(&self) -> &'static str {
        match self.server {
            Server::Standalone { .. } => "standalone",
            Server::Cluster(_) => "cluster",
        }
    }

    async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    async fn publish(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        let verb = match self.server {
            Server::Standalone { .. } => "PUBLISH",
            Server::Cluster(_) => "SPUBLISH",
        };
        let commands: Vec<Cmd> = users
            .iter()
            .map(|&user| {
                let mut command = redis::cmd(verb);
                command
                    .arg(self.keys.user_channel(user))
                    .arg(payload.as_ref());
                command
            })
            .collect();
        let _: Vec<Value> = self.run_all(&commands).await?;
        Ok(())
    }

    async fn publish_chat(&self, chat: ChatId, payload: &Bytes) -> Result<()> {
        let verb = match self.server {
            Server::Standalone { .. } => "PUBLISH",
            Server::Cluster(_) => "SPUBLISH",
        };
        let mut conn = self.conn().await?;
        let _: Value = redis::cmd(verb)
            .arg(self.keys.chat_channel(chat))
            .arg(payload.as_ref())
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()> {
        let millis = ttl.as_millis().max(1) as u64;
        let mut conn = self.conn().await?;
        let _: () = conn.pset_ex(self.keys.revoked(jti), 1u8, millis).await?;
        Ok(())
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(conn.exists(self.keys.revoked(jti)).await?)
    }

    async fn revoked_among(&self, jtis: &[String]) -> Result<Vec<bool>> {
        let commands: Vec<Cmd> = jtis
            .iter()
            .map(|jti| {
                let mut command = redis::cmd("EXISTS");
                command.arg(self.keys.revoked(jti));
                command
            })
            .collect();
        self.run_all(&commands).await
    }

    async fn subscriber(
        &self,
    ) -> Result<(
        Arc<dyn SubscriptionBackend>,
        mpsc::UnboundedReceiver<BusMessage>,
    )> {
        let keys = self.keys.clone();
        let (subscription, rx) = match &self.server {
            Server::Standalone { url, .. } => RedisSubscription::standalone(url, keys).await?,
            Server::Cluster(cluster) => RedisSubscription::cluster(&cluster.seeds, keys).await?,
        };
        Ok((Arc::new(subscription), rx))
    }
}

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The cluster slot of a key or channel: CRC16 (XMODEM) of its hash tag, or of all of it.
pub(crate) fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            Some(&rest[..close])
        })
        .filter(|tag| !tag.is_empty())
        .unwrap_or(key);
    crc16::State::<crc16::XMODEM>::calculate(hashed) % SLOTS
}

/// A client for one Redis whose sockets notice a peer gone silent. A reply timeout does not
/// make the connection manager reconnect, so without this a connection whose packets vanish
/// (a partition, a dead host) would fail every command until the kernel gives up on it, after
/// minutes; with TCP_USER_TIMEOUT and keepalive it fails within seconds and is replaced.
fn standalone_client(url: &str) -> Result<redis::Client> {
    use redis::IntoConnectionInfo;
    use redis::io::tcp::socket2::TcpKeepalive;
    let info = url.into_connection_info()?;
    let keepalive = TcpKeepalive::new()
        .with_time(SILENT_PEER)
        .with_interval(Duration::from_secs(1));
    let tcp = info.tcp_settings().clone().set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(SILENT_PEER);
    Ok(redis::Client::open(info.set_tcp_settings(tcp))?)
}

/// A cluster client builder from seed URLs, with the timeouts every cluster connection uses.
fn cluster_builder(urls: &[String]) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
}
