//! chat-api's configuration: every flag has an environment twin.

use std::net::SocketAddr;

use chat_bus::RedisMode;
use chat_ops::LogFormat;
use clap::Parser;

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

    /// MySQL or MariaDB URL, e.g. mysql://user:pass@127.0.0.1:3306/chat.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: String,

    /// Maximum MySQL connections in the pool.
    #[arg(long, env = "CHAT_DB_MAX_CONNECTIONS", default_value_t = 32)]
    pub db_max_connections: u32,

    /// Redis URL (standalone) or comma-separated seed URLs (cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// standalone or cluster.
    #[arg(long, env = "REDIS_MODE", default_value = "standalone")]
    pub redis_mode: RedisMode,

    /// Namespace of every Redis key and channel.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,

    /// HS256 secret for access tokens. Required unless --dev.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "CHAT_JWT_TTL_SECS", default_value_t = 86_400)]
    pub jwt_ttl_secs: u64,

    /// Development mode: start without CHAT_JWT_SECRET (a random one is used).
    #[arg(long, env = "CHAT_DEV", default_value_t = false)]
    pub dev: bool,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    pub log_format: LogFormat,
}
