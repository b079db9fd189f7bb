//! The push-notification queue on a Redis Stream.
//!
//! chat-api appends one entry per (message, offline recipient, device token) to `P:{push}:jobs`.
//! chat-worker reads it through the consumer group `push` (XREADGROUP), acknowledges what it
//! delivered (XACK), takes over entries a dead worker left pending (XAUTOCLAIM with a minimum idle
//! time), and moves entries that failed too often to `P:{push}:dead`. Delivery is idempotent by
//! job id: a "done" marker (SET NX with a TTL) is written after a successful delivery and checked
//! before every attempt, so an entry reclaimed after it was delivered is acknowledged, not resent.
//! Every command touches one key, so the same code runs on a single Redis and on a cluster.
//!
//! On the in-memory bus each method hands its work to `memory::jobs`, which keeps the same
//! stream and consumer-group semantics in process.

use std::time::Duration;

use chat_proto::PushJob;
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::{Cmd, Value};

use crate::{Backend, Bus, BusConn, BusError, DeadLetter, Result, memory, no_redis};

/// The consumer group every worker joins.
pub const PUSH_GROUP: &str = "push";
const FIELD_ID: &str = "id";
const FIELD_JOB: &str = "job";

/// How long a blocking read may wait for its reply; `read_new` must block for less.
const BLOCKING_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// One stream entry handed to a consumer.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The stream entry id (`1700000000000-0`), what XACK takes.
    pub entry_id: String,
    /// The job id from the entry (empty if the entry had none).
    pub job_id: String,
    /// The job, or why it could not be decoded.
    pub job: std::result::Result<PushJob, String>,
    /// The raw JSON, kept for the dead-letter stream.
    pub raw: String,
}

/// Counts for the worker's gauges.
#[derive(Debug, Clone, Copy, Default)]
pub struct PushStats {
    /// Entries in the stream (delivered and acknowledged ones too, until trimmed).
    pub length: u64,
    /// Read by a worker and not acknowledged yet.
    pub pending: u64,
    /// Not read by any worker yet (Redis ≥ 7; 0 when unknown).
    pub lag: u64,
    /// Entries in the dead-letter stream.
    pub dead: u64,
}

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

fn encode(job: &PushJob) -> Result<String> {
    serde_json::to_string(job).map_err(|e| BusError::Config(format!("encoding a push job: {e}")))
}

impl Bus {
    /// Appends jobs to the stream, trimming it to about `max_len` entries (acknowledged entries
    /// are only removed by trimming).
    pub async fn enqueue_push(&self, jobs: &[PushJob], max_len: u64) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            let deliveries = jobs
                .iter()
                .map(|job| {
                    Ok(Delivery {
                        // Given by the stream as the entry is added.
                        entry_id: String::new(),
                        job_id: job.id.clone(),
                        raw: encode(job)?,
                        job: Ok(job.clone()),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
            memory.jobs.enqueue(deliveries, max_len, now_ms);
            return Ok(());
        }
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

    /// Creates the consumer group (and the stream) if missing. The group starts at the
    /// beginning of the stream, so jobs added before the first worker ever ran are delivered.
    pub async fn push_ensure_group(&self) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            memory.jobs.ensure_group();
            return Ok(());
        }
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

    /// A connection of its own for blocking reads (a blocked multiplexed connection would stall
    /// every other command sharing it).
    async fn dedicated_conn(&self) -> Result<BusConn> {
        match &self.backend {
            Backend::Standalone(_) => {
                // Not the shared connection: it gives up on a reply after 500 ms, and a
                // read abandoned while the server still blocks would have its entry delivered
                // into the void (left pending until reclaimed).
                let url = self
                    .urls
                    .first()
                    .ok_or_else(|| BusError::Config("REDIS_URL is empty".into()))?;
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(BLOCKING_REPLY_TIMEOUT));
                let conn = redis::Client::open(url.as_str())?
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(BusConn::Direct(conn))
            }
            Backend::Cluster(cluster) => {
                let connect = cluster.client.get_async_connection();
                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                    Ok(conn) => Ok(BusConn::Cluster(conn?)),
                    Err(_) => Err(BusError::Redis(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "timed out connecting to the cluster",
                    )))),
                }
            }
            Backend::Memory(_) => Err(no_redis()),
        }
    }

    /// A consumer named `consumer` in the `push` group.
    pub fn push_consumer(&self, consumer: &str) -> PushConsumer {
        PushConsumer {
            bus: self.clone(),
            consumer: consumer.to_string(),
            conn: None,
            claim_cursor: "0-0".to_string(),
        }
    }

    /// Resets the idle time of an entry this consumer holds (XCLAIM … JUSTID), so that other
    /// workers do not reclaim a job that is still being retried.
    pub async fn push_touch(&self, consumer: &str, entry_id: &str) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            return memory.jobs.touch(consumer, entry_id, memory::now());
        }
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

    pub async fn push_ack(&self, entry_id: &str) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            return memory.jobs.ack(entry_id);
        }
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("XACK")
            .arg(self.keys.push_jobs())
            .arg(PUSH_GROUP)
            .arg(entry_id)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Whether the job was delivered already (its "done" marker exists).
    pub async fn push_is_done(&self, job_id: &str) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.jobs.is_done(job_id, memory::now()));
        }
        let mut conn = self.conn().await?;
        let exists: bool = redis::cmd("EXISTS")
            .arg(self.keys.push_done(job_id))
            .query_async(&mut conn)
            .await?;
        Ok(exists)
    }

    /// Writes the "done" marker; `false` if it existed already.
    pub async fn push_mark_done(&self, job_id: &str, ttl: Duration) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.jobs.mark_done(job_id, ttl, memory::now()));
        }
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

    /// Counts one more delivery attempt of a job (shared by every worker) and returns the count.
    pub async fn push_attempt(&self, job_id: &str, ttl: Duration) -> Result<u64> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.jobs.attempt(job_id, ttl, memory::now()));
        }
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

    /// Moves an entry to the dead-letter stream, then acknowledges it. A crash in between leaves
    /// it pending; the next worker finds the attempts used up and dead-letters it again, so the
    /// dead-letter stream may (rarely) hold a job twice, never zero times.
    pub async fn push_dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u64,
    ) -> Result<()> {
        if let Some(memory) = self.memory_backend() {
            return memory.jobs.dead_letter(DeadLetter {
                delivery: delivery.clone(),
                reason: reason.to_string(),
                attempts,
            });
        }
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

    /// Removes a consumer from the group if it holds no pending entry (on a clean shutdown, so
    /// names of departed workers do not pile up). `true` if it was removed. Safe once the
    /// consumer stopped reading: its pending list can then only shrink (XAUTOCLAIM moves entries
    /// to the claimer).
    pub async fn push_forget_consumer(&self, consumer: &str) -> Result<bool> {
        if let Some(memory) = self.memory_backend() {
            return memory.jobs.forget_consumer(consumer);
        }
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

    /// Stream length, pending, lag and dead letters, for the worker's gauges.
    /// The dead-letter stream of an in-memory bus, oldest first (`None` on Redis, where it is
    /// the `P:{push}:dead` stream); the embedded mode has no redis-cli to look at it with.
    pub fn memory_dead_letters(&self) -> Option<Vec<DeadLetter>> {
        self.memory_backend()
            .map(|memory| memory.jobs.dead_letters())
    }

    pub async fn push_stats(&self) -> Result<PushStats> {
        if let Some(memory) = self.memory_backend() {
            return Ok(memory.jobs.stats());
        }
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
}

/// One worker's reading side of the group: new entries, and entries reclaimed from consumers
/// that stopped acknowledging.
pub struct PushConsumer {
    bus: Bus,
    consumer: String,
    conn: Option<BusConn>,
    claim_cursor: String,
}

impl PushConsumer {
    pub fn name(&self) -> &str {
        &self.consumer
    }

    async fn conn(&mut self) -> Result<&mut BusConn> {
        if self.conn.is_none() {
            self.conn = Some(self.bus.dedicated_conn().await?);
        }
        self.conn
            .as_mut()
            .ok_or_else(|| BusError::Config("no connection".into()))
    }

    async fn query<T: redis::FromRedisValue>(&mut self, cmd: Cmd) -> Result<T> {
        let conn = self.conn().await?;
        let reply = cmd.query_async::<T>(conn).await;
        if reply.is_err() {
            // Start over with a fresh connection next time.
            self.conn = None;
        }
        Ok(reply?)
    }

    /// Up to `count` entries never delivered to anyone, waiting up to `block` (at most 5 s) for
    /// one.
    pub async fn read_new(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        let block = block.min(Duration::from_secs(5));
        if let Some(memory) = self.bus.memory_backend() {
            return memory.jobs.read_new(&self.consumer, count, block).await;
        }
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

    /// Takes over up to `count` entries that another consumer has held for at least `min_idle`
    /// (XAUTOCLAIM), walking the pending list a page per call.
    pub async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Vec<Delivery>> {
        if let Some(memory) = self.bus.memory_backend() {
            let (claimed, next, deleted) = memory.jobs.reclaim(
                &self.consumer,
                min_idle,
                count,
                &self.claim_cursor,
                memory::now(),
            )?;
            self.claim_cursor = next;
            if deleted > 0 {
                tracing::warn!(
                    count = deleted,
                    "pending push jobs were trimmed from the stream before delivery"
                );
            }
            return Ok(claimed);
        }
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
        // dropped them from the pending list, and there is nothing left to deliver.
        if !reply.deleted_ids.is_empty() {
            tracing::warn!(
                count = reply.deleted_ids.len(),
                "pending push jobs were trimmed from the stream before delivery"
            );
        }
        Ok(reply.claimed.iter().map(delivery).collect())
    }
}
