//! The Redis configuration every binary shares: `REDIS_URL`, `REDIS_MODE`, `CHAT_REDIS_PREFIX`,
//! and the bounds of the recent-event log (`CHAT_RECENT_LOG_SECS`, `CHAT_RECENT_LOG_MAX`, see
//! `crate::recent`), which chat-api writes and gateways read, so both take them from here.

use std::str::FromStr;
use std::time::Duration;

use crate::Bus;
use crate::recent::RecentLogConfig;

/// How to reach Redis (`REDIS_MODE`). The in-memory bus is not a mode: it is made with
/// [`Bus::memory`] and shared by cloning, never from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
}

impl FromStr for RedisMode {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "standalone" => Ok(Self::Standalone),
            "cluster" => Ok(Self::Cluster),
            other => Err(format!(
                "REDIS_MODE must be standalone or cluster, not {other:?}"
            )),
        }
    }
}

/// The Redis flags every binary shares (flatten into a clap config).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL (standalone) or comma-separated seed URLs (cluster).
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,

    /// standalone or cluster.
    #[arg(long, env = "REDIS_MODE", default_value = "standalone")]
    pub redis_mode: RedisMode,

    /// Namespace of every Redis key and channel.
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat")]
    pub redis_prefix: String,

    /// How long each channel's recent-event log keeps an event (seconds): resumes from a
    /// cursor younger than this are answered from Redis instead of the database. 0 turns the
    /// log off (chat-api stops writing it, gateways stop reading it).
    #[arg(long, env = "CHAT_RECENT_LOG_SECS", default_value_t = 120)]
    pub recent_log_secs: u64,

    /// How many events each channel's recent-event log keeps at most (the oldest go first).
    #[arg(long, env = "CHAT_RECENT_LOG_MAX", default_value_t = 1000)]
    pub recent_log_max: u32,
}

impl RedisArgs {
    /// For start-up logs: the configured URL(s) with passwords hidden, or a note that `bus` is
    /// the in-memory one (the embedded mode ignores `REDIS_URL`).
    pub fn url_for_log(&self, bus: &Bus) -> String {
        if bus.is_memory() {
            return "(unused: in-memory bus)".into();
        }
        // Mask each seed of a cluster list, not only the first.
        self.redis_url
            .split(',')
            .map(|url| chat_ops::mask_url(url.trim()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn bus_config(&self) -> BusConfig {
        BusConfig::new(self.redis_mode, &self.redis_url, &self.redis_prefix)
            .with_recent_log(self.recent_log())
    }

    /// The recent-event log's bounds, for a bus made otherwise (the embedded mode's memory bus).
    pub fn recent_log(&self) -> RecentLogConfig {
        RecentLogConfig {
            window: Duration::from_secs(self.recent_log_secs),
            max_len: self.recent_log_max,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BusConfig {
    pub mode: RedisMode,
    /// One URL in standalone mode; the seed nodes in cluster mode.
    pub urls: Vec<String>,
    pub prefix: String,
    /// The bounds of the recent-event log (defaults: 120 s, 1,000 events per channel).
    pub recent_log: RecentLogConfig,
}

impl BusConfig {
    /// Splits a `REDIS_URL` value (comma-separated in cluster mode).
    pub fn new(mode: RedisMode, redis_url: &str, prefix: &str) -> Self {
        Self {
            mode,
            urls: redis_url
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(String::from)
                .collect(),
            prefix: prefix.to_string(),
            recent_log: RecentLogConfig::default(),
        }
    }

    pub fn with_recent_log(mut self, recent_log: RecentLogConfig) -> Self {
        self.recent_log = recent_log;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(url: &str, mode: RedisMode) -> RedisArgs {
        RedisArgs {
            redis_url: url.into(),
            redis_mode: mode,
            redis_prefix: "chat".into(),
            recent_log_secs: 120,
            recent_log_max: 1000,
        }
    }

    #[test]
    fn logged_urls_hide_every_password_of_a_seed_list() {
        let args = args(
            "redis://u:s3cret@10.0.0.1:7000, redis://u:s3cret@10.0.0.2:7001",
            RedisMode::Cluster,
        );
        let bus = Bus::new(&args.bus_config()).expect("a cluster client builds without I/O");
        let logged = args.url_for_log(&bus);
        assert!(!logged.contains("s3cret"), "{logged}");
        assert!(logged.contains("10.0.0.1:7000") && logged.contains("10.0.0.2:7001"));
    }

    #[test]
    fn the_memory_bus_says_redis_url_is_unused() {
        let args = args("redis://:s3cret@127.0.0.1:6379", RedisMode::Standalone);
        let logged = args.url_for_log(&Bus::memory("chat"));
        assert!(
            logged.contains("in-memory") && !logged.contains("s3cret"),
            "{logged}"
        );
    }
}
