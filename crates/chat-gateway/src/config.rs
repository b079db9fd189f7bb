//! chat-gateway's configuration: every flag has an environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use chat_auth::SecretArgs;
use chat_bus::RedisArgs;
use chat_ops::LogFormat;
use clap::Parser;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-gateway",
    version,
    about = "Chat WebSocket gateway: holds client sockets and fans out per-user Redis events"
)]
pub struct Config {
    /// Address to listen on (host:port); WebSocket path /ws.
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub secret: SecretArgs,

    /// Base URL of chat-api, where send/read/typing frames are forwarded.
    #[arg(long, env = "CHAT_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// This node's id in the presence registry (default: hostname plus a random suffix).
    #[arg(long, env = "CHAT_NODE_ID")]
    pub node_id: Option<String>,

    /// Time a client has to authenticate after the upgrade, in milliseconds.
    #[arg(long, env = "CHAT_AUTH_TIMEOUT_MS", default_value_t = 5000)]
    pub auth_timeout_ms: u64,

    /// Close a socket that sent nothing (not even a pong) for this many seconds.
    #[arg(long, env = "CHAT_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Interval of the server's WebSocket pings, in seconds.
    #[arg(long, env = "CHAT_PING_INTERVAL_SECS", default_value_t = 20)]
    pub ping_interval_secs: u64,

    /// Largest accepted client message, in bytes (close 1008 beyond).
    #[arg(long, env = "CHAT_MAX_FRAME_BYTES", default_value_t = 65_536)]
    pub max_frame_bytes: usize,

    /// Outbound frames queued per socket before it is closed with 4008.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = 1024)]
    pub outbound_queue: usize,

    /// Lifetime of this node's presence entries; heartbeats refresh them every third of it.
    #[arg(long, env = "CHAT_PRESENCE_TTL_MS", default_value_t = 30_000)]
    pub presence_ttl_ms: u64,

    /// Seconds over which sockets are closed (1012) on SIGTERM.
    #[arg(long, env = "CHAT_DRAIN_SECS", default_value_t = 10)]
    pub drain_secs: u64,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}

impl Config {
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs.max(1))
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_millis(self.presence_ttl_ms.max(300))
    }

    pub fn drain_window(&self) -> Duration {
        Duration::from_secs(self.drain_secs)
    }

    /// The node id: configured, or the host name with a random suffix so restarts don't collide.
    pub fn resolved_node_id(&self) -> String {
        if let Some(id) = self.node_id.as_ref().filter(|id| !id.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "gateway".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    }
}
