//! The Redis the stacks run against — a single server or a Redis Cluster — and the clean-up of
//! a stack's keys. `CHAT_TEST_REDIS_MODE=cluster` runs every stack on the local cluster
//! (`deploy/local/redis-cluster.sh`); a test can also ask for the cluster on its own.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use redis::AsyncCommands;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    Standalone,
    Cluster,
}

/// Where the services' Redis is: the mode and the URLs (seed nodes for a cluster).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub mode: RedisMode,
    pub urls: Vec<String>,
}

/// Seed nodes of the local test cluster.
const CLUSTER_SEEDS: &str = "redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002";

impl RedisTarget {
    /// From `CHAT_TEST_REDIS_MODE` (standalone | cluster) and `CHAT_TEST_REDIS_URL`.
    pub fn from_env() -> Self {
        match std::env::var("CHAT_TEST_REDIS_MODE").as_deref() {
            Ok("cluster") => Self::cluster(),
            _ => Self::standalone(),
        }
    }

    pub fn standalone() -> Self {
        let url = std::env::var("CHAT_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Self {
            mode: RedisMode::Standalone,
            urls: vec![url],
        }
    }

    /// The local cluster (`CHAT_TEST_CLUSTER_URL` overrides the seeds).
    pub fn cluster() -> Self {
        let seeds = std::env::var("CHAT_TEST_CLUSTER_URL").unwrap_or_else(|_| CLUSTER_SEEDS.into());
        Self {
            mode: RedisMode::Cluster,
            urls: seeds.split(',').map(|u| u.trim().to_string()).collect(),
        }
    }

    /// `REDIS_MODE` for the services.
    pub fn mode_name(&self) -> &'static str {
        match self.mode {
            RedisMode::Standalone => "standalone",
            RedisMode::Cluster => "cluster",
        }
    }

    /// `REDIS_URL` for the services.
    pub fn url_list(&self) -> String {
        self.urls.join(",")
    }

    pub fn first_url(&self) -> &str {
        self.urls.first().map(String::as_str).unwrap_or_default()
    }

    /// Makes sure Redis answers; for the local cluster, starts it with the project's script.
    pub async fn ensure_up(&self) -> anyhow::Result<()> {
        if self.mode == RedisMode::Cluster && self.ping().await.is_err() {
            start_local_cluster()?;
        }
        self.ping().await.with_context(|| {
            format!(
                "Redis ({}) at {} does not answer (start it, or set CHAT_TEST_REDIS_URL)",
                self.mode_name(),
                self.url_list()
            )
        })
    }

    async fn ping(&self) -> anyhow::Result<()> {
        let mut conn = connect(self.first_url()).await?;
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        if self.mode == RedisMode::Cluster {
            let info: String = redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async(&mut conn)
                .await?;
            if !info.contains("cluster_state:ok") {
                bail!("the cluster is not in state ok");
            }
        }
        Ok(())
    }

    /// Runs one command (single key) against this Redis, following the cluster's slot map in
    /// cluster mode.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> anyhow::Result<T> {
        match self.mode {
            RedisMode::Standalone => {
                let mut conn = connect(self.first_url()).await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
            RedisMode::Cluster => {
                let client = redis::cluster::ClusterClient::new(self.urls.clone())?;
                let mut conn = client.get_async_connection().await?;
                Ok(cmd.query_async(&mut conn).await?)
            }
        }
    }

    /// Deletes every key that starts with `prefix:` (on every master of a cluster).
    pub async fn delete_prefix(&self, prefix: &str) -> anyhow::Result<()> {
        let nodes = match self.mode {
            RedisMode::Standalone => vec![self.first_url().to_string()],
            RedisMode::Cluster => masters(self.first_url()).await?,
        };
        for node in nodes {
            let mut conn = connect(&node).await?;
            let keys: Vec<String> = {
                let mut iter = conn.scan_match::<_, String>(format!("{prefix}:*")).await?;
                let mut keys = Vec::new();
                while let Some(key) = futures_util::StreamExt::next(&mut iter).await {
                    keys.push(key?);
                }
                keys
            };
            for key in keys {
                let _: i64 = conn.unlink(&key).await?;
            }
        }
        Ok(())
    }
}

/// A direct connection to one node.
pub async fn connect(url: &str) -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
    let connect = client.get_multiplexed_async_connection();
    tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .with_context(|| format!("Redis at {url} did not answer within 5 s"))?
        .with_context(|| format!("connecting to Redis at {url}"))
}

/// `redis://host:port` of every master, from `CLUSTER NODES`.
pub async fn masters(seed: &str) -> anyhow::Result<Vec<String>> {
    let mut conn = connect(seed).await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await?;
    Ok(nodes
        .lines()
        .filter(|line| {
            let flags = line.split(' ').nth(2).unwrap_or_default();
            flags.contains("master") && !flags.contains("fail")
        })
        .filter_map(|line| line.split(' ').nth(1))
        .filter_map(|addr| addr.split('@').next())
        .map(|addr| format!("redis://{addr}"))
        .collect())
}

/// Runs `deploy/local/redis-cluster.sh` with the given arguments.
pub fn cluster_script(args: &[&str]) -> anyhow::Result<()> {
    let script = workspace_root().join("deploy/local/redis-cluster.sh");
    let status = Command::new(&script)
        .args(args)
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} {} failed: {status}", script.display(), args.join(" "));
    }
    Ok(())
}

fn start_local_cluster() -> anyhow::Result<()> {
    cluster_script(&["start"])
}

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `host:port` of the master that currently serves `key`'s slot.
pub async fn master_of(seed: &str, key: &str) -> anyhow::Result<String> {
    let mut conn = connect(seed).await?;
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await?;
    // CLUSTER SLOTS: [[start, end, [master_host, master_port, ...], replicas...], ...]
    let ranges: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("SLOTS")
        .query_async(&mut conn)
        .await?;
    for range in ranges {
        let redis::Value::Array(parts) = range else {
            continue;
        };
        let (Some(start), Some(end), Some(master)) = (parts.first(), parts.get(1), parts.get(2))
        else {
            continue;
        };
        let (redis::Value::Int(start), redis::Value::Int(end)) = (start, end) else {
            continue;
        };
        if !(*start..=*end).contains(&slot) {
            continue;
        }
        if let redis::Value::Array(master) = master {
            let host: String =
                redis::from_redis_value(master.first().cloned().unwrap_or(redis::Value::Nil))?;
            let port: i64 =
                redis::from_redis_value(master.get(1).cloned().unwrap_or(redis::Value::Nil))?;
            return Ok(format!("{host}:{port}"));
        }
    }
    bail!("no master serves slot {slot}")
}
