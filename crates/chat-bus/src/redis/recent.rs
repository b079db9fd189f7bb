//! The recent-event logs in Redis (see `crate::recent`): per channel a sorted set of envelopes
//! scored by event time (`Keys::recent_log`) and a hash of what it covers (`Keys::recent_meta`:
//! `from`, `last`), both with the channel's hash tag. Each script touches one slot: the two keys
//! and, for a publish, the channel itself.
//!
//! The publish runs inside the append script, after the append: one command per channel does
//! both, atomically, so no subscriber receives an envelope that its log does not hold, and the
//! publish costs no extra round trip. Several channels' scripts go out concurrently on the shared
//! connection (written together; on a cluster, to each slot's master).

use std::sync::LazyLock;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::{RedisBus, Server};
use crate::backend::RecentLogBackend;
use crate::recent::{META_TTL, RecentLogConfig, SKEW_MS};
use crate::{Result, Topic};

/// Where a channel with no meta is complete from at `now` (the caller's clock), given the
/// clock allowance and the meta lifetime: this server's start (its uptime, rounded down, so
/// never before the true start), or a meta lifetime ago once it has run that long; never later
/// than `now` (`crate::recent::Logs::unwritten_from`). Prepended to the scripts that need it.
const UNWRITTEN_FROM: &str = r"
local function unwritten_from(now, skew, meta_ttl)
  local up = tonumber(string.match(redis.call('INFO', 'server'), 'uptime_in_seconds:(%d+)')) or 0
  local since = now - up * 1000
  if up * 1000 >= meta_ttl then
    since = math.max(since, now - meta_ttl)
  end
  return math.min(since, now) + skew
end
";

/// Appends `ARGV[3]` scored `ARGV[2]` to the log `KEYS[1]` at time `ARGV[1]`, trims it by age
/// (`ARGV[5]` ms) and count (`ARGV[4]`), keeps the meta `KEYS[2]` exact (`crate::recent`;
/// allowance `ARGV[6]`, meta lifetime `ARGV[7]`), then publishes the envelope with `ARGV[8]`
/// (PUBLISH or SPUBLISH) on `ARGV[9]`.
const APPEND: &str = r"
local now = tonumber(ARGV[1])
local at = tonumber(ARGV[2])
local window = tonumber(ARGV[5])
local from = tonumber(redis.call('HGET', KEYS[2], 'from'))
local last = 0
if not from then
  from = unwritten_from(now, tonumber(ARGV[6]), tonumber(ARGV[7]))
else
  last = tonumber(redis.call('HGET', KEYS[2], 'last') or '0')
  if redis.call('EXISTS', KEYS[1]) == 0 then
    from = math.max(from, last + 1)
  end
end
redis.call('ZADD', KEYS[1], at, ARGV[3])
local cutoff = now - window
if redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', cutoff)) > 0 then
  from = math.max(from, cutoff)
end
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  from = math.max(from, tonumber(popped[#popped]) + 1)
end
last = math.max(last, at, now)
redis.call('HSET', KEYS[2], 'from', string.format('%d', from), 'last', string.format('%d', last))
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('PEXPIRE', KEYS[1], window)
redis.call(ARGV[8], ARGV[9], ARGV[3])
return 1
";

/// Raises the meta `KEYS[1]`'s `from` to `ARGV[1]`, writing the meta if there is none (at
/// `ARGV[2]`, allowance `ARGV[3]`, meta lifetime `ARGV[4]`).
const INVALIDATE: &str = r"
local floor = tonumber(ARGV[1])
local from = tonumber(redis.call('HGET', KEYS[1], 'from'))
if not from then
  from = unwritten_from(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4]))
  redis.call('HSET', KEYS[1], 'last', '0')
end
redis.call('HSET', KEYS[1], 'from', string.format('%d', math.max(from, floor)))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// The log `KEYS[1]`'s entries scored `ARGV[1]` or later, or nil when its meta `KEYS[2]` says
/// it does not cover them all (at `ARGV[2]`, allowance `ARGV[3]`, meta lifetime `ARGV[4]`).
const READ: &str = r"
local from = tonumber(redis.call('HGET', KEYS[2], 'from'))
if not from then
  if tonumber(ARGV[1]) < unwritten_from(tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])) then
    return false
  end
  return {}
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  from = math.max(from, tonumber(redis.call('HGET', KEYS[2], 'last') or '0') + 1)
end
if tonumber(ARGV[1]) < from then
  return false
end
return redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[1], '+inf')
";

static APPEND_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{UNWRITTEN_FROM}{APPEND}")));
static INVALIDATE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{UNWRITTEN_FROM}{INVALIDATE}")));
static READ_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(&format!("{UNWRITTEN_FROM}{READ}")));

#[async_trait]
impl RecentLogBackend for RedisBus {
    async fn publish_logged(
        &self,
        topics: &[Topic],
        payload: &Bytes,
        at_ms: i64,
        now_ms: i64,
        config: RecentLogConfig,
    ) -> Result<()> {
        let verb = match self.server {
            Server::Standalone { .. } => "PUBLISH",
            Server::Cluster(_) => "SPUBLISH",
        };
        let window = config.window_ms().max(1);
        let meta_ttl = META_TTL.as_millis() as u64;
        let calls = topics.iter().map(|&topic| async move {
            let mut conn = self.conn().await?;
            let _: i64 = APPEND_SCRIPT
                .key(self.keys.recent_log(topic))
                .key(self.keys.recent_meta(topic))
                .arg(now_ms)
                .arg(at_ms)
                .arg(payload.as_ref())
                .arg(config.max_len)
                .arg(window)
                .arg(SKEW_MS)
                .arg(meta_ttl)
                .arg(verb)
                .arg(self.keys.channel(topic))
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, crate::BusError>(())
        });
        for outcome in futures_util::future::join_all(calls).await {
            outcome?;
        }
        Ok(())
    }

    async fn invalidate_recent(&self, topics: &[Topic], floor_ms: i64) -> Result<()> {
        let now_ms = crate::recent::now_ms();
        let meta_ttl = META_TTL.as_millis() as u64;
        let calls = topics.iter().map(|&topic| async move {
            let mut conn = self.conn().await?;
            let _: i64 = INVALIDATE_SCRIPT
                .key(self.keys.recent_meta(topic))
                .arg(floor_ms)
                .arg(now_ms)
                .arg(SKEW_MS)
                .arg(meta_ttl)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, crate::BusError>(())
        });
        for outcome in futures_util::future::join_all(calls).await {
            outcome?;
        }
        Ok(())
    }

    async fn recent(&self, topics: &[Topic], from_ms: i64) -> Result<Option<Vec<Bytes>>> {
        let now_ms = crate::recent::now_ms();
        let meta_ttl = META_TTL.as_millis() as u64;
        let calls = topics.iter().map(|&topic| async move {
            let mut conn = self.conn().await?;
            let entries: Option<Vec<Vec<u8>>> = READ_SCRIPT
                .key(self.keys.recent_log(topic))
                .key(self.keys.recent_meta(topic))
                .arg(from_ms)
                .arg(now_ms)
                .arg(SKEW_MS)
                .arg(meta_ttl)
                .invoke_async(&mut conn)
                .await?;
            Ok::<_, crate::BusError>(entries)
        });
        let mut all = Vec::new();
        for outcome in futures_util::future::join_all(calls).await {
            match outcome? {
                Some(entries) => all.extend(entries.into_iter().map(Bytes::from)),
                None => return Ok(None),
            }
        }
        Ok(Some(all))
    }
}
