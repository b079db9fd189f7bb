//! Abuse limits that must hold across every replica: the per-user message token bucket and the
//! login-failure counter (a Redis key each, or their in-memory mirror).

use std::time::Duration;

use crate::{Bus, Result, UserId};

/// A bucket's configuration; `per_sec` 0 disables it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub burst: u32,
    pub per_sec: f64,
}

/// The answer of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited { retry_after: Duration },
}

impl Bus {
    /// Takes one token from the user's message bucket.
    pub async fn take_message_token(&self, user: UserId, bucket: Bucket) -> Result<Verdict> {
        if bucket.per_sec <= 0.0 || bucket.burst == 0 {
            return Ok(Verdict::Allowed);
        }
        self.backend.take_message_token(user, bucket).await
    }

    /// How long logins for this account from this address stay refused, if they are.
    pub async fn login_blocked(
        &self,
        username: &str,
        ip: &str,
        max_failures: u32,
    ) -> Result<Option<Duration>> {
        if max_failures == 0 {
            return Ok(None);
        }
        self.backend.login_blocked(username, ip, max_failures).await
    }

    /// Records a failed login for this account and address; the count lives for `window`.
    pub async fn note_login_failure(
        &self,
        username: &str,
        ip: &str,
        window: Duration,
    ) -> Result<()> {
        self.backend.note_login_failure(username, ip, window).await
    }

    /// Forgets the failures after a successful login.
    pub async fn clear_login_failures(&self, username: &str, ip: &str) -> Result<()> {
        self.backend.clear_login_failures(username, ip).await
    }
}
