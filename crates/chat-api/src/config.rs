//! chat-api's configuration: every flag has an environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use chat_auth::SecretArgs;
use chat_bus::RedisArgs;
use chat_ops::{LogFormat, RuntimeArgs};
use clap::Parser;

use crate::admission::{ClassLimits, Limits};
use crate::storage::StorageArgs;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-api",
    version,
    about = "Chat HTTP/JSON API: users, contacts, chats, messages"
)]
pub struct Config {
    /// Address to listen on (host:port).
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub secret: SecretArgs,

    #[command(flatten)]
    pub storage: StorageArgs,

    /// MySQL or MariaDB URL, e.g. mysql://user:pass@127.0.0.1:3306/chat.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Maximum MySQL connections in the pool.
    #[arg(long, env = "CHAT_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Writer tasks that store sends in batches, each keeping one pooled connection (so fewer
    /// than CHAT_DB_MAX_CONNECTIONS): fewer make larger batches (fewer statements per message),
    /// more overlap more transactions.
    #[arg(
        long,
        env = "CHAT_SEND_WRITERS",
        default_value_t = 1,
        value_parser = clap::value_parser!(u16).range(1..=64)
    )]
    pub send_writers: u16,

    /// Sync-class requests (GET /v1/sync, message history) running at once [default: half of
    /// the pool connections the send writers leave, at least 1]; 0 removes the limit. More
    /// wait in a queue; see docs/architecture.md, "Admission".
    #[arg(long, env = "CHAT_SYNC_CONCURRENCY")]
    pub sync_concurrency: Option<usize>,

    /// Sync-class requests that may wait for a turn; beyond, 503 with Retry-After at once.
    #[arg(long, env = "CHAT_SYNC_QUEUE", default_value_t = 1024)]
    pub sync_queue: usize,

    /// How long a sync-class request waits for a turn before it gets 503 with Retry-After, in
    /// milliseconds.
    #[arg(long, env = "CHAT_SYNC_WAIT_MS", default_value_t = 5_000)]
    pub sync_wait_ms: u64,

    /// Write-class requests (sends, edits, deletes, read and delivered marks, the gateways'
    /// presence and delivered batches) running at once [default: 4 × CHAT_DB_MAX_CONNECTIONS];
    /// 0 removes the limit.
    #[arg(long, env = "CHAT_WRITE_CONCURRENCY")]
    pub write_concurrency: Option<usize>,

    /// Write-class requests that may wait for a turn; beyond, 503 with Retry-After at once.
    #[arg(long, env = "CHAT_WRITE_QUEUE", default_value_t = 4096)]
    pub write_queue: usize,

    /// How long a write-class request waits for a turn before it gets 503 with Retry-After, in
    /// milliseconds (below the gateway's 15 s request timeout).
    #[arg(long, env = "CHAT_WRITE_WAIT_MS", default_value_t = 10_000)]
    pub write_wait_ms: u64,

    /// The Retry-After (seconds, at least 1) of a request refused by admission.
    #[arg(long, env = "CHAT_ADMISSION_RETRY_AFTER_SECS", default_value_t = 1)]
    pub admission_retry_after_secs: u64,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "CHAT_JWT_TTL_SECS", default_value_t = 86_400)]
    pub jwt_ttl_secs: u64,

    /// WebSocket URL the web client at `/` connects to (e.g. wss://chat.example.com/ws).
    /// Unset: the page uses ws://<its own host>:8081/ws; `?ws=<url>` on the page overrides both.
    #[arg(long, env = "CHAT_WEB_WS_URL")]
    pub web_ws_url: Option<String>,

    /// Approximate cap on the push-job stream (older entries are trimmed by XADD MAXLEN ~).
    #[arg(long, env = "CHAT_PUSH_STREAM_MAXLEN", default_value_t = 100_000)]
    pub push_stream_max_len: u64,

    /// Messages a user may send per second, cluster-wide (a token bucket in Redis); 0 disables.
    #[arg(long, env = "CHAT_MSG_RATE_PER_SEC", default_value_t = 20.0)]
    pub msg_rate_per_sec: f64,

    /// Size of the user's message bucket: how many messages may go out in a burst.
    #[arg(long, env = "CHAT_MSG_BURST", default_value_t = 400)]
    pub msg_burst: u32,

    /// Failed logins per account and client address before logins are refused (429); 0 disables.
    #[arg(long, env = "CHAT_LOGIN_MAX_FAILURES", default_value_t = 10)]
    pub login_max_failures: u32,

    /// Window of the login-failure count, in seconds (it starts at the first failure).
    #[arg(long, env = "CHAT_LOGIN_WINDOW_SECS", default_value_t = 300)]
    pub login_window_secs: u64,

    /// Deepest nesting accepted in a JSON request body (400 beyond).
    #[arg(long, env = "CHAT_MAX_JSON_DEPTH", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Take the client address from the last X-Forwarded-For entry, the one the load balancer
    /// appended (set only behind a proxy that sets it); otherwise the TCP peer address is used.
    #[arg(long, env = "CHAT_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

impl Config {
    /// The admission gates' settings, the unset concurrencies sized from the database pool.
    pub(crate) fn admission(&self) -> Limits {
        let pool = usize::try_from(self.db_max_connections).unwrap_or(usize::MAX);
        let left_by_writers = pool.saturating_sub(usize::from(self.send_writers));
        Limits {
            sync: ClassLimits {
                concurrency: self
                    .sync_concurrency
                    .unwrap_or_else(|| (left_by_writers / 2).max(1)),
                queue: self.sync_queue,
                wait: Duration::from_millis(self.sync_wait_ms),
            },
            write: ClassLimits {
                concurrency: self
                    .write_concurrency
                    .unwrap_or_else(|| pool.saturating_mul(4).max(1)),
                queue: self.write_queue,
                wait: Duration::from_millis(self.write_wait_ms),
            },
            retry_after: Duration::from_secs(self.admission_retry_after_secs.max(1)),
        }
    }
}
