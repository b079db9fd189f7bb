//! chat-worker's configuration: every flag has an environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use chat_bus::RedisArgs;
use chat_ops::{LogFormat, RuntimeArgs};
use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-worker",
    version,
    about = "Chat background worker: offline push notifications from a Redis Stream"
)]
pub struct Config {
    /// Address of the health and metrics listener (host:port).
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub push: PushArgs,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// Where and how push notifications are delivered.
#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// URL that receives one FCM-v1-shaped JSON POST per notification. Without it the worker
    /// consumes nothing (jobs wait in the stream).
    #[arg(long, env = "CHAT_PUSH_URL")]
    pub push_url: Option<String>,

    /// Value of the Authorization header sent to the push URL (e.g. "Bearer <token>").
    #[arg(long, env = "CHAT_PUSH_AUTH_HEADER", hide_env_values = true)]
    pub push_auth_header: Option<String>,

    /// Attempts per job before it moves to the dead-letter stream.
    #[arg(long, env = "CHAT_PUSH_MAX_ATTEMPTS", default_value_t = 5)]
    pub max_attempts: u64,

    /// First retry delay; it doubles per attempt (with jitter) up to the maximum.
    #[arg(long, env = "CHAT_PUSH_BACKOFF_BASE_MS", default_value_t = 500)]
    pub backoff_base_ms: u64,

    /// Largest retry delay.
    #[arg(long, env = "CHAT_PUSH_BACKOFF_MAX_MS", default_value_t = 30_000)]
    pub backoff_max_ms: u64,

    /// Timeout of one HTTP request to the push URL.
    #[arg(long, env = "CHAT_PUSH_TIMEOUT_MS", default_value_t = 5_000)]
    pub timeout_ms: u64,

    /// A job pending this long with another consumer is taken over (XAUTOCLAIM). Must exceed
    /// the longest a live worker holds a job without touching it: max backoff + HTTP timeout.
    #[arg(long, env = "CHAT_PUSH_RECLAIM_IDLE_MS", default_value_t = 60_000)]
    pub reclaim_idle_ms: u64,

    /// Jobs handled at once by this process (one consumer each).
    #[arg(long, env = "CHAT_PUSH_CONCURRENCY", default_value_t = 4)]
    pub concurrency: usize,

    /// How long a delivered job's "done" marker (and attempt counter) lives.
    #[arg(long, env = "CHAT_PUSH_DONE_TTL_SECS", default_value_t = 86_400)]
    pub done_ttl_secs: u64,

    /// Consumer name prefix in the group; default: a random id per process.
    #[arg(long, env = "CHAT_WORKER_ID")]
    pub worker_id: Option<String>,
}

impl PushArgs {
    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms)
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms)
    }

    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn reclaim_idle(&self) -> Duration {
        Duration::from_millis(self.reclaim_idle_ms)
    }

    pub fn done_ttl(&self) -> Duration {
        Duration::from_secs(self.done_ttl_secs)
    }

    /// Rejects settings under which a live worker's job could be reclaimed by another.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_attempts == 0 {
            return Err("CHAT_PUSH_MAX_ATTEMPTS must be at least 1".into());
        }
        if self.concurrency == 0 {
            return Err("CHAT_PUSH_CONCURRENCY must be at least 1".into());
        }
        if self.reclaim_idle_ms <= self.backoff_max_ms + self.timeout_ms {
            // No backslash-continued literal: deploy/check-references.py reads literals per line.
            let limit = self.backoff_max_ms + self.timeout_ms;
            return Err(format!(
                "CHAT_PUSH_RECLAIM_IDLE_MS ({}) must exceed {} ({})",
                self.reclaim_idle_ms, "CHAT_PUSH_BACKOFF_MAX_MS + CHAT_PUSH_TIMEOUT_MS", limit
            ));
        }
        Ok(())
    }
}
