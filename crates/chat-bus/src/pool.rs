//! The command pool on a single Redis: deadpool over multiplexed connections, with a cheaper
//! checkout than deadpool-redis' own manager.
//!
//! deadpool-redis checks every connection it hands out with a PING round trip. Most bus calls
//! are one command, so that check doubled the round trips to Redis on every request (the send
//! path makes five). Here a connection checked out again within `UNCHECKED_FOR` of its last
//! checkout goes out as is, unless a command on it failed with a connection error; an idle or
//! failed one still gets deadpool-redis' check, and one that fails it is replaced.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{Cmd, RedisError, RedisFuture, Value};

/// How long after its last checkout a healthy connection is trusted without a check.
const UNCHECKED_FOR: Duration = Duration::from_secs(1);

pub(crate) type Pool = managed::Pool<Manager>;
pub(crate) type PoolError = managed::PoolError<RedisError>;

pub(crate) struct Manager {
    checked: deadpool_redis::Manager,
}

impl Manager {
    pub(crate) fn new(url: &str) -> Result<Self, RedisError> {
        Ok(Self {
            checked: deadpool_redis::Manager::new(url)?,
        })
    }
}

/// A pooled connection that remembers whether a command on it hit a connection error.
pub(crate) struct Conn {
    conn: MultiplexedConnection,
    failed: bool,
}

impl managed::Manager for Manager {
    type Type = Conn;
    type Error = RedisError;

    async fn create(&self) -> Result<Conn, RedisError> {
        Ok(Conn {
            conn: managed::Manager::create(&self.checked).await?,
            failed: false,
        })
    }

    async fn recycle(&self, conn: &mut Conn, metrics: &Metrics) -> RecycleResult<RedisError> {
        if !conn.failed && metrics.last_used() < UNCHECKED_FOR {
            return Ok(());
        }
        managed::Manager::recycle(&self.checked, &mut conn.conn, metrics).await?;
        conn.failed = false;
        Ok(())
    }
}

/// Errors after which the connection may be dead (a multiplexed connection does not reconnect).
fn is_connection_error(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.is_unrecoverable_error()
}

impl Conn {
    fn note<T>(&mut self, result: &Result<T, RedisError>) {
        if let Err(err) = result
            && is_connection_error(err)
        {
            self.failed = true;
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let result = self.conn.req_packed_command(cmd).await;
            self.note(&result);
            result
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let result = self.conn.req_packed_commands(pipeline, offset, count).await;
            self.note(&result);
            result
        })
    }

    fn get_db(&self) -> i64 {
        self.conn.get_db()
    }
}
