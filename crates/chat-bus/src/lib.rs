//! The shared state between services: per-user pub/sub channels (publish from chat-api, subscribe
//! in gateways), the logout revocation list, the presence registry shared by all gateway nodes,
//! the cluster-wide abuse limits (message rate, login failures) and the push job queue.
//!
//! One API, two implementations. [`Bus`] is the only handle the services see; behind it sits
//! either Redis (a single server or a cluster), or an in-memory backend ([`Bus::memory`]) for the
//! embedded single-process mode, where chat-api, a gateway and the worker run as tasks of one
//! process and share one bus by cloning it. Each public method starts by handing the memory case
//! to `memory/`, whose modules mirror the Redis ones and keep the same contract (return values,
//! expiry, consumer-group semantics); the rest of each method is the Redis path.
//!
//! Every Redis key and channel is namespaced by a prefix (`CHAT_REDIS_PREFIX`), and per-user names
//! carry the user id as a Redis Cluster hash tag so one user's keys share a slot.

mod keys;
mod memory;
mod redis;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::{AsyncCommands, Cmd, FromRedisValue, RedisFuture, Value};
use bytes::Bytes;
use tokio::sync::OnceCell;

pub use keys::Keys;
pub use memory::DeadLetter;
pub use redis::jobs::{Delivery, PUSH_GROUP, PushConsumer, PushStats};
pub use redis::limits::{Bucket, Verdict};
pub use redis::subscriber::{BusMessage, Subscriber};
pub use redis::unannounced::UnannouncedSend;

pub type UserId = u64;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    #[error("redis configuration: {0}")]
    Config(String),
    /// A gateway's subscription connection (to a standalone Redis or a cluster master) is
    /// down or refused a request.
    #[error("redis subscription: {0}")]
    Subscription(String),
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
    /// No Redis: the in-memory bus of [`Bus::memory`]. Not accepted from `REDIS_MODE`, since a
    /// memory bus is shared only by the clones of one value inside one process.
    Memory,
}

impl FromStr for RedisMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "standalone" => Ok(Self::Standalone),
            "cluster" => Ok(Self::Cluster),
            other => Err(format!(
                "REDIS_MODE must be standalone or cluster, not {other:?}"
            )),
        }
    }
}

/// The Redis flags every binary shares (flatten into a clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (standalone) or comma-separated seed URLs (cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// standalone or cluster.
    #[arg(long, env = "REDIS_MODE", default_value = "standalone")]
    pub redis_mode: RedisMode,

    /// Namespace of every Redis key and channel.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,
}

impl RedisArgs {
    /// For start-up logs: the configured URL(s) with passwords hidden, or a note that `bus` is
    /// the in-memory one (the embedded mode ignores `REDIS_URL`).
    pub fn url_for_log(&self, bus: &Bus) -> String {
        match bus.mode() {
            RedisMode::Memory => "(unused: in-memory bus)".into(),
            // Mask each seed of a cluster list, not only the first.
            _ => self
                .redis_url
                .split(',')
                .map(|url| chat_ops::mask_url(url.trim()))
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn bus_config(&self) -> BusConfig {
        BusConfig::new(self.redis_mode, &self.redis_url, &self.redis_prefix)
    }
}

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub mode: RedisMode,
    /// One URL in standalone mode; the seed nodes in cluster mode.
    pub urls: Vec<String>,
    pub prefix: String,
}

impl BusConfig {
    /// Splits a `REDIS_URL` value (comma-separated in cluster mode).
    pub fn new(mode: RedisMode, redis_url: &str, prefix: &str) -> Self {
        Self {
            mode,
            urls: redis_url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect(),
            prefix: prefix.to_string(),
        }
    }
}

/// Where commands go: one shared connection to one Redis, or one multiplexed cluster connection
/// (made on first use and routed by slot), or no Redis at all (the in-memory bus).
///
/// One shared connection rather than a pool of exclusive ones: the commands of concurrent
/// requests then leave together (redis-rs queues them on the socket and writes what is waiting
/// at once), where a pool gives each request its own socket and its own system calls. Measured
/// about 15% more sends per second through chat-api (docs/performance.md).
#[derive(Clone)]
enum Backend {
    Standalone(ConnectionManager),
    Cluster(Arc<ClusterBackend>),
    Memory(Arc<memory::MemoryBus>),
}

struct ClusterBackend {
    client: ClusterClient,
    conn: OnceCell<ClusterConnection>,
}

/// A connection of either kind; it speaks `ConnectionLike`, so commands, pipelines and scripts
/// are written once.
pub(crate) enum BusConn {
    Shared(ConnectionManager),
    Cluster(ClusterConnection),
    /// A connection of its own, not the shared one (blocking stream reads).
    Direct(::redis::aio::MultiplexedConnection),
}

impl ConnectionLike for BusConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Shared(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::Direct(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a ::redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Shared(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Direct(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Shared(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::Direct(conn) => conn.get_db(),
        }
    }
}

/// A cheap-to-clone handle for commands: publishing, revocation, presence.
#[derive(Clone)]
pub struct Bus {
    backend: Backend,
    keys: Arc<Keys>,
    urls: Vec<String>,
}

impl Bus {
    /// Builds the pool or cluster client; connections open on first use, so a service can start
    /// before Redis.
    pub fn new(config: &BusConfig) -> Result<Self> {
        let first = config
            .urls
            .first()
            .cloned()
            .ok_or_else(|| BusError::Config("REDIS_URL is empty".into()))?;
        let backend = match config.mode {
            RedisMode::Standalone => Backend::Standalone(ConnectionManager::new_lazy_with_config(
                standalone_client(&first)?,
                ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(REPLY_TIMEOUT))
                    .set_number_of_retries(0),
            )?),
            RedisMode::Cluster => Backend::Cluster(Arc::new(ClusterBackend {
                client: cluster_builder(&config.urls).build()?,
                conn: OnceCell::new(),
            })),
            // A second memory bus made from configuration would silently share nothing with
            // the first: the embedded mode makes one with Bus::memory and clones it.
            RedisMode::Memory => {
                return Err(BusError::Config(
                    "an in-memory bus is made with Bus::memory and shared by cloning".into(),
                ));
            }
        };
        Ok(Self {
            backend,
            keys: Arc::new(Keys::new(&config.prefix)),
            urls: config.urls.clone(),
        })
    }

    /// A fresh in-memory bus for the embedded single-process mode. Every clone of it shares the
    /// same state, so services running in one process must be handed clones of this one value.
    /// `prefix` only names things the way the Redis keys would be named; nothing is shared with
    /// another memory bus of the same prefix.
    pub fn memory(prefix: &str) -> Self {
        Self {
            backend: Backend::Memory(Arc::new(memory::MemoryBus::new())),
            keys: Arc::new(Keys::new(prefix)),
            urls: Vec::new(),
        }
    }

    pub fn mode(&self) -> RedisMode {
        match self.backend {
            Backend::Standalone(_) => RedisMode::Standalone,
            Backend::Cluster(_) => RedisMode::Cluster,
            Backend::Memory(_) => RedisMode::Memory,
        }
    }

    /// The in-memory backend, if this is a memory bus (each method hands it its work first).
    pub(crate) fn memory_backend(&self) -> Option<&memory::MemoryBus> {
        match &self.backend {
            Backend::Memory(memory) => Some(memory),
            Backend::Standalone(_) | Backend::Cluster(_) => None,
        }
    }

    pub(crate) async fn conn(&self) -> Result<BusConn> {
        // A dead Redis must not hang requests: bound the wait for a connection.
        let timed_out = || {
            BusError::Redis(::redis::RedisError::from((
                ::redis::ErrorKind::Io,
                "timed out waiting for a redis connection",
            )))
        };
        match &self.backend {
            // Lazy and self-healing: it connects on first use and again after a connection
            // error, one attempt at a time, each bounded by CONNECT_TIMEOUT.
            Backend::Standalone(shared) => Ok(BusConn::Shared(shared.clone())),
            Backend::Cluster(cluster) => {
                let connect = cluster
                    .conn
                    .get_or_try_init(|| cluster.client.get_async_connection());
                match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    Ok(conn) => Ok(BusConn::Cluster(conn?.clone())),
                    Err(_) => Err(timed_out()),
                }
            }
            // Every public method answers from memory before it would ask for a connection.
            Backend::Memory(_) => Err(no_redis()),
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
            // conn() never hands out a direct connection; treat one like the shared one.
            mut conn @ (BusConn::Shared(_) | BusConn::Direct(_)) => {
                let mut pipe = ::redis::pipe();
                for command in commands {
                    pipe.add_command(command.clone());
                }
                Ok(pipe.query_async(&mut conn).await?)
            }
            BusConn::Cluster(conn) => {
                let replies = futures_util::future::join_all(commands.iter().map(|command| {
                    let mut conn = conn.clone();
                    async move { command.query_async::<T>(&mut conn).await }
                }))
                .await;
                Ok(replies.into_iter().collect::<Result<Vec<T>, _>>()?)
            }
        }
    }

    pub async fn ping(&self) -> Result<()> {
        if self.memory_backend().is_some() {
            return Ok(());
        }
        let mut conn = self.conn().await?;
        let _: String = ::redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Publishes one payload to the channel of each user (sharded PUBLISH on a cluster, so each
    /// message goes only to the shard that owns the channel).
    pub async fn publish_to_users(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        match self.memory_backend() {
            Some(memory) => memory.pubsub.publish(users, payload),
            None => self.publish_to_redis(users, payload).await?,
        }
        metrics::histogram!("chat_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("chat_bus_published_total").increment(users.len() as u64);
        Ok(())
    }

    async fn publish_to_redis(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        let verb = match self.backend {
            Backend::Standalone(_) => "PUBLISH",
            Backend::Cluster(_) => "SPUBLISH",
            Backend::Memory(_) => return Err(no_redis()),
        };
        let commands: Vec<Cmd> = users
            .iter()
            .map(|&user| {
                let mut command = ::redis::cmd(verb);
                command
                    .arg(self.keys.user_channel(user))
                    .arg(payload.as_ref());
                command
            })
            .collect();
        let _: Vec<Value> = self.run_all(&commands).await?;
        Ok(())
    }

    /// Marks a token id as revoked until `ttl` has passed (the token's remaining lifetime).
    pub async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            memory.limits.revoke(jti, ttl, memory::now());
            return Ok(());
        }
        let millis = ttl.as_millis().max(1) as u64;
        let mut conn = self.conn().await?;
        let _: () = conn.pset_ex(self.keys.revoked(jti), 1u8, millis).await?;
        Ok(())
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.limits.is_revoked(jti, memory::now()));
        }
        let mut conn = self.conn().await?;
        Ok(conn.exists(self.keys.revoked(jti)).await?)
    }

    /// Which of these token ids are revoked, in order (one pipeline, or concurrent commands on
    /// a cluster).
    pub async fn revoked_among(&self, jtis: &[String]) -> Result<Vec<bool>> {
        if let Some(memory) = self.memory_backend() {
            let now = memory::now();
            return Ok(jtis
                .iter()
                .map(|jti| memory.limits.is_revoked(jti, now))
                .collect());
        }
        let commands: Vec<Cmd> = jtis
            .iter()
            .map(|jti| {
                let mut command = ::redis::cmd("EXISTS");
                command.arg(self.keys.revoked(jti));
                command
            })
            .collect();
        self.run_all(&commands).await
    }

    /// A dedicated subscription connection for a gateway (see [`Subscriber`]).
    pub async fn subscriber(
        &self,
    ) -> Result<(Subscriber, tokio::sync::mpsc::UnboundedReceiver<BusMessage>)> {
        if let Some(memory) = self.memory_backend() {
            let (subscription, rx) = memory.pubsub.subscribe();
            return Ok((Subscriber::memory(subscription, self.keys.clone()), rx));
        }
        Subscriber::connect(self.mode(), &self.urls, self.keys.clone()).await
    }
}

/// How long a connection attempt, and a reply, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a socket may go without an answer from Redis before the kernel fails it.
const SILENT_PEER: Duration = Duration::from_secs(5);

/// A client for one Redis whose sockets notice a peer gone silent. A reply timeout does not
/// make the connection manager reconnect, so without this a connection whose packets vanish
/// (a partition, a dead host) would fail every command until the kernel gives up on it, after
/// minutes; with TCP_USER_TIMEOUT and keepalive it fails within seconds and is replaced.
fn standalone_client(url: &str) -> Result<::redis::Client> {
    use ::redis::IntoConnectionInfo;
    use ::redis::io::tcp::socket2::TcpKeepalive;
    let info = url.into_connection_info()?;
    let keepalive = TcpKeepalive::new()
        .with_time(SILENT_PEER)
        .with_interval(Duration::from_secs(1));
    let tcp = info.tcp_settings().clone().set_keepalive(keepalive);
    #[cfg(target_os = "linux")]
    let tcp = tcp.set_user_timeout(SILENT_PEER);
    Ok(::redis::Client::open(info.set_tcp_settings(tcp))?)
}

/// The error of a Redis-only operation reached on the in-memory bus (a bug: every public method
/// handles the memory case first).
pub(crate) fn no_redis() -> BusError {
    BusError::Config("the in-memory bus has no Redis connection".into())
}

/// A cluster client builder from seed URLs, with the timeouts every cluster connection uses.
pub(crate) fn cluster_builder(urls: &[String]) -> ::redis::cluster::ClusterClientBuilder {
    ::redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(Duration::from_secs(2))
        .response_timeout(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, mode: RedisMode) -> RedisArgs {
        RedisArgs {
            redis_url: url.into(),
            redis_mode: mode,
            redis_prefix: "chat".into(),
        }
    }

    #[test]
    fn logged_urls_hide_every_password_of_a_seed_list() {
        let args = args(
            "redis://u:s3cret@10.0.0.1:7000, redis://u:s3cret@10.0.0.2:7001",
            RedisMode::Cluster,
        );
        let bus = Bus::new(&args.bus_config()).expect("a cluster client builds without I/O");
        let logged = args.url_for_log(&bus);
        assert!(!logged.contains("s3cret"), "{logged}");
        assert!(logged.contains("10.0.0.1:7000") && logged.contains("10.0.0.2:7001"));
    }

    #[test]
    fn the_memory_bus_says_redis_url_is_unused() {
        let args = args("redis://:s3cret@127.0.0.1:6379", RedisMode::Standalone);
        let logged = args.url_for_log(&Bus::memory("chat"));
        assert!(
            logged.contains("in-memory") && !logged.contains("s3cret"),
            "{logged}"
        );
    }
}
