//! The abuse limits in Redis: the per-user message token bucket (a hash, refilled by a Lua script
//! on Redis' own clock) and the login-failure counter (a counter with a TTL). Each is a single
//! key, so the scripts and pipelines are cluster-safe.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::RedisBus;
use crate::backend::LimitsBackend;
use crate::{Bucket, Result, UserId, Verdict};

/// A token bucket in one hash: refills at `ARGV[2]` tokens per second up to `ARGV[1]`, takes
/// `ARGV[3]`. The clock is Redis' own (`TIME`), so replicas with skewed clocks share one bucket.
/// Answers `{allowed (0/1), milliseconds until enough tokens}`.
const TAKE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1])
local ts = tonumber(b[2])
if tokens == nil or ts == nil then
  tokens = cap
  ts = now
end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap * 1000 / rate) + 1000)
return {allowed, wait}
";

/// Counts a failure; the window starts at the first failure.
const FAIL: &str = r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return n
";

// Built once: `Script::new` hashes the source (SHA-1), and TAKE runs for every message sent.
static TAKE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(TAKE));
static FAIL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FAIL));

#[async_trait]
impl LimitsBackend for RedisBus {
    async fn take_message_token(&self, user: UserId, bucket: Bucket) -> Result<Verdict> {
        let mut conn = self.conn().await?;
        let (allowed, wait_ms): (i64, i64) = TAKE_SCRIPT
            .key(self.keys.message_bucket(user))
            .arg(bucket.burst)
            .arg(bucket.per_sec)
            .arg(1)
            .invoke_async(&mut conn)
            .await?;
        Ok(if allowed == 1 {
            Verdict::Allowed
        } else {
            Verdict::Limited {
                retry_after: Duration::from_millis(wait_ms.max(1) as u64),
            }
        })
    }

    async fn login_blocked(
        &self,
        username: &str,
        ip: &str,
        max_failures: u32,
    ) -> Result<Option<Duration>> {
        let key = self.keys.login_failures(username, ip);
        let mut conn = self.conn().await?;
        let (count, ttl_ms): (Option<u32>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut conn)
            .await?;
        Ok((count.unwrap_or(0) >= max_failures)
            .then(|| Duration::from_millis(ttl_ms.max(1) as u64)))
    }

    async fn note_login_failure(&self, username: &str, ip: &str, window: Duration) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = FAIL_SCRIPT
            .key(self.keys.login_failures(username, ip))
            .arg(window.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    async fn clear_login_failures(&self, username: &str, ip: &str) -> Result<()> {
        let mut conn = self.conn().await?;
        let _: i64 = redis::cmd("DEL")
            .arg(self.keys.login_failures(username, ip))
            .query_async(&mut conn)
            .await?;
        Ok(())
    }
}
