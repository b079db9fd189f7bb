//! Revocations, the message token bucket and login-failure counters in memory, each an
//! expiring key as in Redis (`redis/limits.rs`, and the revocation keys of `redis/mod.rs`).
//!
//! The bucket repeats the TAKE script's arithmetic step for step, on a millisecond clock like
//! Redis' `TIME`, so a limit tuned against Redis behaves the same here.

use parking_lot::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::{Expiring, MemoryBus, deadline, now};
use crate::backend::LimitsBackend;
use crate::{Bucket, Result, UserId, Verdict};

pub(crate) struct Limits {
    /// The bucket clock's zero: bucket timestamps are whole milliseconds since it.
    epoch: Instant,
    revoked: Mutex<Expiring<String, ()>>,
    buckets: Mutex<Expiring<UserId, BucketState>>,
    login_failures: Mutex<Expiring<String, u32>>,
}

/// The `tokens` and `ts` fields of the bucket hash.
struct BucketState {
    tokens: f64,
    ts_ms: u64,
}

/// Redis' `PSETEX`/`PEXPIRE` take whole milliseconds, and the callers send at least one.
fn at_least_a_milli(ttl: Duration) -> Duration {
    Duration::from_millis(ttl.as_millis().clamp(1, u128::from(u64::MAX)) as u64)
}

impl Limits {
    pub(crate) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            revoked: Mutex::default(),
            buckets: Mutex::default(),
            login_failures: Mutex::default(),
        }
    }

    pub(crate) fn revoke(&self, jti: &str, ttl: Duration, now: Instant) {
        let expires = deadline(now, at_least_a_milli(ttl));
        self.revoked
            .lock()
            .insert(jti.to_string(), (), expires, now);
    }

    pub(crate) fn is_revoked(&self, jti: &str, now: Instant) -> bool {
        self.revoked.lock().get(jti, now).is_some()
    }

    /// The TAKE script with a cost of one token. `Bus` has already let a disabled bucket
    /// (`per_sec <= 0` or `burst == 0`) through.
    pub(crate) fn take_token(&self, user: UserId, bucket: Bucket, now: Instant) -> Verdict {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let cap = f64::from(bucket.burst);
        let rate = bucket.per_sec;
        let cost = 1.0;
        let mut buckets = self.buckets.lock();
        let (tokens, ts_ms) = match buckets.get(&user, now) {
            Some((state, _)) => (state.tokens, state.ts_ms),
            None => (cap, now_ms),
        };
        let tokens = cap.min(tokens + now_ms.saturating_sub(ts_ms) as f64 * rate / 1000.0);
        let (tokens, verdict) = if tokens >= cost {
            (tokens - cost, Verdict::Allowed)
        } else {
            // Lua returns the ceiling as an integer; the Rust side turns 0 into 1 ms.
            let wait_ms = ((cost - tokens) * 1000.0 / rate).ceil() as u64;
            let retry_after = Duration::from_millis(wait_ms.max(1));
            (tokens, Verdict::Limited { retry_after })
        };
        // PEXPIRE: long enough to refill completely, plus a second.
        let keep_ms = (cap * 1000.0 / rate).ceil() as u64;
        let expires = deadline(now, Duration::from_millis(keep_ms.saturating_add(1000)));
        buckets.insert(
            user,
            BucketState {
                tokens,
                ts_ms: now_ms,
            },
            expires,
            now,
        );
        verdict
    }

    /// How long the key stays blocked when it counts `max_failures` or more.
    pub(crate) fn login_blocked(
        &self,
        key: &str,
        max_failures: u32,
        now: Instant,
    ) -> Option<Duration> {
        let failures = self.login_failures.lock();
        let (count, expires) = failures.get(key, now)?;
        (*count >= max_failures).then(|| {
            let left = expires.saturating_duration_since(now);
            // PTTL answers whole milliseconds; Bus::login_blocked makes that at least 1.
            Duration::from_millis((left.as_millis() as u64).max(1))
        })
    }

    /// The FAIL script: counts one failure; the window starts with the first.
    pub(crate) fn note_login_failure(&self, key: &str, window: Duration, now: Instant) {
        let mut failures = self.login_failures.lock();
        if let Some((count, _)) = failures.get_mut(key, now) {
            *count = count.saturating_add(1);
            return;
        }
        let expires = deadline(now, at_least_a_milli(window));
        failures.insert(key.to_string(), 1, expires, now);
    }

    pub(crate) fn clear_login_failures(&self, key: &str) {
        self.login_failures.lock().remove(key);
    }
}

#[async_trait]
impl LimitsBackend for MemoryBus {
    async fn take_message_token(&self, user: UserId, bucket: Bucket) -> Result<Verdict> {
        Ok(self.limits.take_token(user, bucket, now()))
    }

    async fn login_blocked(
        &self,
        username: &str,
        ip: &str,
        max_failures: u32,
    ) -> Result<Option<Duration>> {
        let key = self.keys.login_failures(username, ip);
        Ok(self.limits.login_blocked(&key, max_failures, now()))
    }

    async fn note_login_failure(&self, username: &str, ip: &str, window: Duration) -> Result<()> {
        let key = self.keys.login_failures(username, ip);
        self.limits.note_login_failure(&key, window, now());
        Ok(())
    }

    async fn clear_login_failures(&self, username: &str, ip: &str) -> Result<()> {
        self.limits
            .clear_login_failures(&self.keys.login_failures(username, ip));
        Ok(())
    }
}
