//! The Redis side of the system: per-user pub/sub channels (publish from chat-api, subscribe in
//! gateways), the logout revocation list, and the presence registry shared by all gateway nodes.
//!
//! Every key and channel is namespaced by a prefix (`CHAT_REDIS_PREFIX`), and per-user names carry
//! the user id as a Redis Cluster hash tag so one user's keys share a slot.

mod keys;
mod presence;
mod subscriber;

use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use deadpool_redis::{Pool, PoolConfig, Runtime};
use redis::AsyncCommands;

pub use keys::Keys;
pub use subscriber::{BusMessage, Subscriber};

pub type UserId = u64;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis pool: {0}")]
    Pool(#[from] deadpool_redis::PoolError),
    #[error("redis configuration: {0}")]
    Config(String),
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
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

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub mode: RedisMode,
    /// One URL in standalone mode; the seed nodes in cluster mode.
    pub urls: Vec<String>,
    pub prefix: String,
    pub pool_size: usize,
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
            pool_size: 32,
        }
    }
}

/// A cheap-to-clone handle for commands: publishing, revocation, presence.
#[derive(Clone)]
pub struct RedisBus {
    pool: Pool,
    keys: Arc<Keys>,
    url: String,
}

impl RedisBus {
    /// Builds the pool; connections open on first use, so a service can start before Redis.
    pub fn new(config: &BusConfig) -> Result<Self> {
        if config.mode == RedisMode::Cluster {
            return Err(BusError::Config(
                "REDIS_MODE=cluster is not supported by this build yet; use standalone".into(),
            ));
        }
        let url = config
            .urls
            .first()
            .cloned()
            .ok_or_else(|| BusError::Config("REDIS_URL is empty".into()))?;
        let mut pool_config = deadpool_redis::Config::from_url(url.clone());
        pool_config.pool = Some(PoolConfig::new(config.pool_size));
        let pool = pool_config
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| BusError::Config(e.to_string()))?;
        Ok(Self {
            pool,
            keys: Arc::new(Keys::new(&config.prefix)),
            url,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) async fn conn(&self) -> Result<deadpool_redis::Connection> {
        // A dead Redis must not hang requests: bound the wait for a connection.
        match tokio::time::timeout(Duration::from_secs(2), self.pool.get()).await {
            Ok(conn) => Ok(conn?),
            Err(_) => Err(BusError::Redis(redis::RedisError::from((
                redis::ErrorKind::Io,
                "timed out waiting for a redis connection",
            )))),
        }
    }

    pub async fn ping(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Publishes one payload to the channel of each user, in one pipelined round trip.
    pub async fn publish_to_users(&self, users: &[UserId], payload: &Bytes) -> Result<()> {
        if users.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut pipe = redis::pipe();
        for &user in users {
            pipe.publish(self.keys.user_channel(user), payload.as_ref())
                .ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await?;
        metrics::histogram!("chat_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("chat_bus_published_total").increment(users.len() as u64);
        Ok(())
    }

    /// Marks a token id as revoked until `ttl` has passed (the token's remaining lifetime).
    pub async fn revoke(&self, jti: &str, ttl: Duration) -> Result<()> {
        let millis = ttl.as_millis().max(1) as u64;
        let mut conn = self.conn().await?;
        let _: () = conn.pset_ex(self.keys.revoked(jti), 1u8, millis).await?;
        Ok(())
    }

    pub async fn is_revoked(&self, jti: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        Ok(conn.exists(self.keys.revoked(jti)).await?)
    }

    /// A dedicated subscription connection for a gateway (see [`Subscriber`]).
    pub async fn subscriber(
        &self,
    ) -> Result<(Subscriber, tokio::sync::mpsc::UnboundedReceiver<BusMessage>)> {
        Subscriber::connect(&self.url, self.keys.clone()).await
    }
}
