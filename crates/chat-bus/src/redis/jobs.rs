//! The push job queue on a Redis Stream (see `crate::jobs` for what it does).
//!
//! chat-api appends to `P:{push}:jobs`; workers read it through the consumer group `push`
//! (XREADGROUP), acknowledge (XACK), take over what a dead worker left pending (XAUTOCLAIM with
//! a minimum idle time) and move what failed too often to `P:{push}:dead`. The "done" marker is
//! a SET NX with a TTL. Every command touches one key, so the same code runs on a single Redis
//! and on a cluster.

use std::time::Duration;

use async_trait::async_trait;
use chat_proto::PushJob;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::{Cmd, Value};

use redis::aio::MultiplexedConnection;

use super::{Conn, RedisBus, Server};
use crate::backend::{JobsBackend, PushReader, Reclaimed};
use crate::jobs::encode;
use crate::{BusError, DeadLetter, Delivery, PUSH_GROUP, PushStats, Result};

const FIELD_ID: &str = "id";
const FIELD_JOB: &str = "job";

/// How long a blocking read may wait for its reply; `read_new` must block for less.
const BLOCKING_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

fn value_string(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

fn delivery(entry: &StreamId) -> Delivery {
    let raw = value_string(entry.map.get(FIELD_JOB));
    let job = serde_json::from_str::<PushJob>(&raw).map_err(|e| e.to_string());
    let job_id = match &job {
        Ok(job) => job.id.clone(),
        Err(_) => value_string(entry.map.get(FIELD_ID)),
    };
    Delivery {
        entry_id: entry.id.clone(),
        job_id,
        job,
        raw,
    }
}

impl RedisBus {
    /// A connection of its own for blocking reads (a blocked multiplexed connection would stall
    /// every other command sharing it).
    async fn dedicated_conn(&self) -> Result<Conn<MultiplexedConnection>> {
        match &self.server {
            Server::Standalone { url, .. } => {
                // Not the shared connection: it gives up on a reply after 500 ms, and a
                // read abandoned while the server still blocks would have its entry delivered
                // into the void (left pending until reclaimed).
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(BLOCKING_REPLY_TIMEOUT));
                let conn = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Standalone(conn))
            }
            Server::Cluster(cluster) => {
                let connect = cluster.client.get_async_connection();
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(conn) => Ok(Conn::Cluster(conn?)),
                    Err(_) => Err(BusError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "timed out connecting to the cluster",
                    )))),
                }
            }
        }
    }
}

#[async_trait]
impl JobsBackend for RedisBus {
    async fn enqueue_push(&self, jobs: &[PushJob], max_len: u64) -> Result<()> {
        let stream = self.keys.push_jobs();
        let mut commands = Vec::with_capacity(jobs.len());
        for job in jobs {
            let json = encode(job)?;
            let mut add = Cmd::new();
            add.arg("XADD")
                .arg(&stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(max_len)
                .arg("*")
                .arg(FIELD_ID)
                .arg(&job.id)
                .arg(FIELD_JOB)
                .arg(json);
            commands.push(add);
        }
        let _: Vec<Value> = self.run_all(&commands).await?;
        Ok(())
    }

    async fn push_ensure_group(&self) -> Result<()> {
        let mut conn = self.conn().await?;
        let created: redis::RedisResult<Value> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn push_reader(&self, consumer: &str) -> Box<dyn PushReader> {
        Box::new(RedisPushReader {
            bus: self.clone(),
            consumer: consumer.to_string(),
            conn: None,
            claim_cursor: "0-0".to_string(),
        })
    }

    async fn push_touch(&self, consumer: &str, entry_id: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: Value = redis::cmd("XCLAIM")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg(consumer)
            .arg(0)
            .arg(entry_id)
            .arg("JUSTID")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn push_ack(&self, entry_id: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("XACK")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg(entry_id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn push_is_done(&self, job_id: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.keys.push_done(job_id))
            .query_async(&mut conn)
            .await?;
        Ok(exists)
    }

    async fn push_mark_done(&self, job_id: &str, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn().await?;
        let set: Option<String> = redis::cmd("SET")
            .arg(self.keys.push_done(job_id))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut conn)
            .await?;
        Ok(set.is_some())
    }

    async fn push_attempt(&self, job_id: &str, ttl: Duration) -> Result<u64> {
        let key = self.keys.push_tries(job_id);
        let mut conn = self.conn().await?;
        let (count,): (u64,) = redis::pipe()
            .cmd("INCR")
            .arg(&key)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(ttl.as_secs().max(1))
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }

    async fn push_dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u64,
    ) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: String = redis::cmd("XADD")
            .arg(self.keys.push_dead())
            .arg("*")
            .arg(FIELD_ID)
            .arg(&delivery.job_id)
            .arg(FIELD_JOB)
            .arg(&delivery.raw)
            .arg("entry")
            .arg(&delivery.entry_id)
            .arg("reason")
            .arg(reason)
            .arg("attempts")
            .arg(attempts)
            .query_async(&mut conn)
            .await?;
        drop(conn);
        self.push_ack(&delivery.entry_id).await
    }

    async fn push_forget_consumer(&self, consumer: &str) -> Result<bool> {
        let mut conn = self.conn().await?;
        let pending: Vec<Value> = redis::cmd("XPENDING")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg("-")
            .arg("+")
            .arg(1)
            .arg(consumer)
            .query_async(&mut conn)
            .await?;
        if !pending.is_empty() {
            return Ok(false);
        }
        let _: i64 = redis::cmd("XGROUP")
            .arg("DELCONSUMER")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg(consumer)
            .query_async(&mut conn)
            .await?;
        Ok(true)
    }

    async fn push_stats(&self) -> Result<PushStats> {
        let mut commands = vec![Cmd::new(), Cmd::new(), Cmd::new()];
        commands[0].arg("XLEN").arg(self.keys.push_jobs());
        commands[1]
            .arg("XINFO")
            .arg("GROUPS")
            .arg(self.keys.push_jobs());
        commands[2].arg("XLEN").arg(self.keys.push_dead());
        let replies: Vec<Value> = self.run_all(&commands).await?;
        let mut stats = PushStats::default();
        if let Some(v) = replies.first() {
            stats.length = redis::from_redis_value_ref(v).unwrap_or(0);
        }
        if let Some(v) = replies.get(1)
            && let Ok(groups) = redis::from_redis_value_ref::<StreamInfoGroupsReply>(v)
            && let Some(group) = groups.groups.iter().find(|g| g.name == PUSH_GROUP)
        {
            stats.pending = group.pending as u64;
            stats.lag = group.lag.unwrap_or(0) as u64;
        }
        if let Some(v) = replies.get(2) {
            stats.dead = redis::from_redis_value_ref(v).unwrap_or(0);
        }
        Ok(stats)
    }

    /// The dead letters are the `P:{push}:dead` stream, for redis-cli to read.
    fn dead_letters(&self) -> Option<Vec<DeadLetter>> {
        None
    }
}

/// One consumer's reads, on a connection of its own (blocking reads would stall the shared one).
struct RedisPushReader {
    bus: RedisBus,
    consumer: String,
    /// Made on first use, and again after a command failed on it.
    conn: Option<Conn<MultiplexedConnection>>,
    claim_cursor: String,
}

impl RedisPushReader {
    async fn query<T: redis::FromRedisValue>(&mut self, cmd: Cmd) -> Result<T> {
        let mut conn = match self.conn.take() {
            Some(conn) => conn,
            None => self.bus.dedicated_conn().await?,
        };
        let reply = cmd.query_async::<T>(&mut conn).await;
        // After an error, start over with a fresh connection next time.
        if reply.is_ok() {
            self.conn = Some(conn);
        }
        Ok(reply?)
    }
}

#[async_trait]
impl PushReader for RedisPushReader {
    async fn read_new(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(PUSH_GROUP)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.bus.keys.push_jobs())
            .arg(">");
        let reply: Option<StreamReadReply> = self.query(cmd).await?;
        Ok(reply
            .map(|r| {
                r.keys
                    .iter()
                    .flat_map(|k| k.ids.iter().map(delivery))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Reclaimed> {
        let mut cmd = redis::cmd("XAUTOCLAIM");
        cmd.arg(self.bus.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg(&self.consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(&self.claim_cursor)
            .arg("COUNT")
            .arg(count);
        let reply: StreamAutoClaimReply = self.query(cmd).await?;
        self.claim_cursor = reply.next_stream_id;
        // Entries trimmed away while pending come back in `deleted_ids`; Redis has already
        // dropped them from the pending list.
        Ok(Reclaimed {
            claimed: reply.claimed.iter().map(delivery).collect(),
            deleted: reply.deleted_ids.len(),
        })
    }
}
