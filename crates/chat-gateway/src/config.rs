//! chat-gateway's configuration: every flag has an environment twin.

use std::net::SocketAddr;
use std::time::Duration;

use chat_auth::SecretArgs;
use chat_bus::RedisArgs;
use chat_ops::{LogFormat, RuntimeArgs};
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

    /// Accept queue of the listening socket (capped by the kernel's net.core.somaxconn): room for
    /// the reconnects of a dead gateway's clients arriving within their jitter.
    #[arg(long, env = "CHAT_LISTEN_BACKLOG", default_value_t = crate::listener::DEFAULT_BACKLOG)]
    pub listen_backlog: u32,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub secret: SecretArgs,

    /// Base URL of chat-api, where send/read/typing frames are forwarded; several replicas as a
    /// comma-separated list (requests are spread over them and fail over).
    #[arg(long, env = "CHAT_API_URL", default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// Sync and history pages this node asks chat-api for at once (a reconnect storm's resumes
    /// wait their turn here instead of flooding chat-api); 1-4096.
    #[arg(
        long,
        env = "CHAT_REPLAY_CONCURRENCY",
        default_value_t = 32,
        value_parser = clap::value_parser!(u16).range(1..=4096)
    )]
    pub replay_concurrency: u16,

    /// Requests this node has out to each chat-api replica at once, and the keep-alive
    /// connections it pools for them; more wait for a turn.
    #[arg(
        long,
        env = "CHAT_API_CONNECTIONS",
        default_value_t = 256,
        value_parser = clap::value_parser!(u16).range(1..=4096)
    )]
    pub api_connections: u16,

    /// How long one sync or history page may take, its wait for a turn and its retries after a
    /// 503 included, in milliseconds; beyond, the client gets an `unavailable` error frame.
    #[arg(long, env = "CHAT_REPLAY_DEADLINE_MS", default_value_t = 30_000)]
    pub replay_deadline_ms: u64,

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

    /// Deepest nesting accepted in a client frame (error frame beyond).
    #[arg(long, env = "CHAT_MAX_JSON_DEPTH", default_value_t = 32)]
    pub max_json_depth: usize,

    /// Sockets one user may hold on this node; a further socket gets an error frame and close
    /// 1008 (the newest is refused, existing sockets are kept). 0 disables.
    #[arg(long, env = "CHAT_MAX_SOCKETS_PER_USER", default_value_t = 32)]
    pub max_sockets_per_user: usize,

    /// WebSocket handshakes per second per client address (token bucket refill); 0 disables.
    #[arg(long, env = "CHAT_IP_HANDSHAKES_PER_SEC", default_value_t = 20.0)]
    pub ip_handshakes_per_sec: f64,

    /// Handshakes a client address may make in a burst.
    #[arg(long, env = "CHAT_IP_HANDSHAKE_BURST", default_value_t = 100)]
    pub ip_handshake_burst: u32,

    /// Concurrent sockets per client address on this node; 0 disables.
    #[arg(long, env = "CHAT_IP_MAX_CONNECTIONS", default_value_t = 500)]
    pub ip_max_connections: u32,

    /// Exempt loopback peers from the per-address limits (local proxies, load tests).
    #[arg(long, env = "CHAT_LIMIT_EXEMPT_LOOPBACK", default_value_t = true, action = clap::ArgAction::Set)]
    pub limit_exempt_loopback: bool,

    /// Take the client address from the last X-Forwarded-For entry, the one the load balancer
    /// appended (set only behind a proxy that sets it); otherwise the TCP peer address is used.
    #[arg(long, env = "CHAT_TRUST_FORWARDED_FOR", default_value_t = false)]
    pub trust_forwarded_for: bool,

    /// Origins browsers may open sockets from, comma-separated (e.g.
    /// https://chat.example.com); unset or empty allows every origin. Requests without an Origin
    /// header (non-browser clients) are not affected.
    #[arg(long, env = "CHAT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Consecutive rate-limited sends on one socket before it is closed with 1008.
    #[arg(long, env = "CHAT_WS_ABUSE_STRIKES", default_value_t = 20)]
    pub ws_abuse_strikes: u32,

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

    #[command(flatten)]
    pub runtime: RuntimeArgs,
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

    pub fn ip_limits(&self) -> crate::limits::IpLimits {
        crate::limits::IpLimits {
            handshakes_per_sec: self.ip_handshakes_per_sec,
            handshake_burst: self.ip_handshake_burst,
            max_connections: self.ip_max_connections,
            exempt_loopback: self.limit_exempt_loopback,
        }
    }

    /// The allow-list without blanks and trailing slashes.
    pub fn origins(&self) -> Vec<String> {
        self.allowed_origins
            .iter()
            .map(|o| o.trim().trim_end_matches('/').to_string())
            .filter(|o| !o.is_empty())
            .collect()
    }

    pub fn presence_ttl(&self) -> Duration {
        Duration::from_millis(self.presence_ttl_ms.max(300))
    }

    pub fn pacing(&self) -> crate::pacing::Pacing {
        crate::pacing::Pacing::new(
            usize::from(self.replay_concurrency),
            Duration::from_millis(self.replay_deadline_ms),
        )
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
