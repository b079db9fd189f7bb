//! The announce bookkeeping in Redis (see `crate::announce`): `P:chat:{chat}:announced` (a
//! number, kept a week), `P:api:{replica}:pending` (a hash chat → pending sends),
//! `P:api:{replica}:changes` (a hash change id → pending edit or deletion),
//! `P:api:{replica}:alive` (a key with the heartbeat's TTL), `P:api:replicas` (a set) and
//! `P:api:late` (a sorted set of `replica/id` by expiry). Each command or script touches one
//! slot.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::{AsyncCommands, Cmd, Script};

use super::RedisBus;
use crate::Result;
use crate::backend::AnnounceBackend;

/// How long a watermark outlives its chat's last publish. A chat silent for longer has nothing
/// in flight; its next send starts the watermark again from its own seq.
const WATERMARK_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a replica's pending hash outlives its last mark (a replica silent that long has
/// nothing in flight either).
const PENDING_TTL: Duration = Duration::from_secs(24 * 3600);

/// Raises the watermark in `KEYS[1]` to `ARGV[1]`; refreshes its TTL (`ARGV[2]` seconds).
const ADVANCE: &str = r"
local current = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) > current then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
return 1
";

/// One fewer pending send of chat `ARGV[1]` in the hash `KEYS[1]`; none left, no field.
const CLEAR: &str = r"
local left = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if left <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return left
";

/// Drops from the sorted set `KEYS[1]` every member that starts with `ARGV[1]`.
const FORGET_LATE: &str = r"
local prefix = ARGV[1]
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    redis.call('ZREM', KEYS[1], member)
  end
end
return 1
";

static FORGET_LATE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_LATE));
static ADVANCE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADVANCE));
static CLEAR_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(CLEAR));

#[async_trait]
impl AnnounceBackend for RedisBus {
    async fn announced(&self, chat_id: u64) -> Result<Option<u64>> {
        let mut conn = self.conn().await?;
        Ok(conn.get(self.keys.announced(chat_id)).await?)
    }

    async fn advance_announced(&self, chat_id: u64, seq: u64) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = ADVANCE_SCRIPT
            .key(self.keys.announced(chat_id))
            .arg(seq)
            .arg(WATERMARK_TTL.as_secs())
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn mark_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        let key = self.keys.replica_pending(replica);
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .hincr(&key, chat_id, 1)
            .ignore()
            .expire(&key, PENDING_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn clear_pending(&self, replica: &str, chat_id: u64) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = CLEAR_SCRIPT
            .key(self.keys.replica_pending(replica))
            .arg(chat_id)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn mark_change(&self, replica: &str, id: u64, change: &str) -> Result<()> {
        let key = self.keys.replica_changes(replica);
        let mut conn = self.conn().await?;
        let _: () = redis::pipe()
            .hset(&key, id, change)
            .ignore()
            .expire(&key, PENDING_TTL.as_secs() as i64)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn clear_change(&self, replica: &str, id: u64) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = conn.hdel(self.keys.replica_changes(replica), id).await?;
        Ok(())
    }

    /// `HGETALL`; fields that are not ids are skipped (nothing here writes them).
    async fn pending_changes(&self, replica: &str) -> Result<Vec<(u64, String)>> {
        let mut conn = self.conn().await?;
        let all: Vec<(String, String)> = conn.hgetall(self.keys.replica_changes(replica)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(id, change)| Some((id.parse().ok()?, change)))
            .collect())
    }

    async fn replica_heartbeat(&self, replica: &str, ttl: Duration) -> Result<()> {
        let mut alive = redis::cmd("SET");
        alive
            .arg(self.keys.replica_alive(replica))
            .arg(1u8)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let mut register = redis::cmd("SADD");
        register.arg(self.keys.replicas()).arg(replica);
        let _: Vec<redis::Value> = self.run_all(&[alive, register]).await?;
        Ok(())
    }

    async fn dead_replicas(&self) -> Result<Vec<String>> {
        let mut conn = self.conn().await?;
        let replicas: Vec<String> = conn.smembers(self.keys.replicas()).await?;
        let checks: Vec<Cmd> = replicas
            .iter()
            .map(|replica| {
                let mut exists = redis::cmd("EXISTS");
                exists.arg(self.keys.replica_alive(replica));
                exists
            })
            .collect();
        let alive: Vec<bool> = self.run_all(&checks).await?;
        Ok(replicas
            .into_iter()
            .zip(alive)
            .filter_map(|(replica, alive)| (!alive).then_some(replica))
            .collect())
    }

    /// `HKEYS`; fields that are not chat ids are skipped (nothing here writes them).
    async fn pending_chats(&self, replica: &str) -> Result<Vec<u64>> {
        let mut conn = self.conn().await?;
        let chats: Vec<String> = conn.hkeys(self.keys.replica_pending(replica)).await?;
        Ok(chats.iter().filter_map(|chat| chat.parse().ok()).collect())
    }

    async fn forget_replica(&self, replica: &str) -> Result<()> {
        let mut pending = redis::cmd("DEL");
        pending.arg(self.keys.replica_pending(replica));
        let mut changes = redis::cmd("DEL");
        changes.arg(self.keys.replica_changes(replica));
        let mut register = redis::cmd("SREM");
        register.arg(self.keys.replicas()).arg(replica);
        let _: Vec<redis::Value> = self.run_all(&[pending, changes, register]).await?;
        let mut conn = self.conn().await?;
        let _: i64 = FORGET_LATE_SCRIPT
            .key(self.keys.late_publishes())
            .arg(format!("{replica}/"))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn mark_late(&self, replica: &str, id: u64, until_ms: i64) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = conn
            .zadd(
                self.keys.late_publishes(),
                format!("{replica}/{id}"),
                until_ms,
            )
            .await?;
        Ok(())
    }

    async fn clear_late(&self, replica: &str, id: u64) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = conn
            .zrem(self.keys.late_publishes(), format!("{replica}/{id}"))
            .await?;
        Ok(())
    }

    async fn late_publishes(&self, now_ms: i64) -> Result<u64> {
        let key = self.keys.late_publishes();
        let mut conn = self.conn().await?;
        let (_, count): (i64, u64) = redis::pipe()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&key)
            .arg("-inf")
            .arg(now_ms)
            .zcard(&key)
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}
