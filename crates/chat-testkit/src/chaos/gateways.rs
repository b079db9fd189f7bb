//! [`GatewayPool`]: the WebSocket URLs the simulated clients pick from, and the restart of a
//! crashed or drained gateway in place (same node id and environment, a new port).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::ports::{free_addr, pid_listens_on};
use crate::process::Proc;
use crate::redis_target::RedisTarget;
use crate::stack::{Stack, bin_dir};

/// The gateways the clients connect to. Starts as the stack's own; [`GatewayPool::restart`]
/// replaces a dead one with a new process (same node id and environment, a new port) and
/// points its slot at the new URL.
pub struct GatewayPool {
    urls: Arc<RwLock<Vec<String>>>,
    env: Vec<(String, String)>,
    node_ids: Vec<String>,
    log_dir: PathBuf,
    replacements: Vec<Proc>,
}

impl std::fmt::Debug for GatewayPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayPool")
            .field("urls", &self.urls())
            .finish()
    }
}

impl GatewayPool {
    /// The pool of `stack`'s gateways; `redis` and `gateway_env` must be what the stack was
    /// started with (the kit does not hand out a gateway's environment, so it is rebuilt here
    /// the way `Stack::try_start` builds it).
    pub fn new(stack: &Stack, redis: &RedisTarget, gateway_env: &[(String, String)]) -> Self {
        let count = stack.gateway_count();
        let rust_log = std::env::var("CHAT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let mut env = vec![
            ("REDIS_URL".to_string(), redis.url_list()),
            ("REDIS_MODE".to_string(), redis.mode_name().to_string()),
            (
                "CHAT_JWT_SECRET".to_string(),
                stack.jwt_secret().to_string(),
            ),
            (
                "CHAT_REDIS_PREFIX".to_string(),
                stack.redis_prefix().to_string(),
            ),
            ("CHAT_LOG_FORMAT".to_string(), "text".to_string()),
            ("RUST_LOG".to_string(), rust_log),
            ("RUST_BACKTRACE".to_string(), "1".to_string()),
            ("CHAT_API_URL".to_string(), stack.api_urls().join(",")),
        ];
        env.extend(gateway_env.iter().cloned());
        GatewayPool {
            urls: Arc::new(RwLock::new(
                (0..count).map(|i| stack.gateway_ws_url(i)).collect(),
            )),
            env,
            node_ids: (0..count).map(|i| stack.gateway_node_id(i)).collect(),
            log_dir: stack.log_dir().to_path_buf(),
            replacements: Vec::new(),
        }
    }

    /// The shared list the clients read.
    pub fn shared_urls(&self) -> Arc<RwLock<Vec<String>>> {
        self.urls.clone()
    }

    /// The current URLs.
    pub fn urls(&self) -> Vec<String> {
        self.urls.read().map(|u| u.clone()).unwrap_or_default()
    }

    /// Starts a new gateway process for slot `i` (whose old process must be gone) and waits for
    /// its `/readyz`. Returns the new WebSocket URL.
    ///
    /// Call it from the test's own task: the process dies with the thread that spawned it.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<String> {
        let node = self
            .node_ids
            .get(i)
            .cloned()
            .with_context(|| format!("no gateway slot {i}"))?;
        let binary = bin_dir().join("chat-gateway");
        let generation = self.replacements.len() + 1;
        let mut last_error = None;
        for _ in 0..3 {
            let addr = free_addr()?;
            let mut env = self.env.clone();
            env.push(("CHAT_NODE_ID".into(), node.clone()));
            env.push(("CHAT_LISTEN".into(), addr.to_string()));
            let name = format!("chat-gateway-{node}-restart{generation}");
            let mut proc = Proc::spawn(&name, &binary, &env, &self.log_dir)?;
            match wait_ready(&mut proc, addr).await {
                Ok(()) => {
                    let url = format!("ws://{addr}/ws");
                    if let Ok(mut urls) = self.urls.write()
                        && let Some(slot) = urls.get_mut(i)
                    {
                        *slot = url.clone();
                    }
                    self.replacements.push(proc);
                    return Ok(url);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("gateway {node} did not start")))
    }

    /// The gateways whose `/readyz` does not answer 200 right now, with what they answered.
    pub async fn not_ready(&self) -> Vec<String> {
        let http = match reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
        {
            Ok(http) => http,
            Err(e) => return vec![format!("cannot build an HTTP client: {e}")],
        };
        let mut out = Vec::new();
        for (i, ws_url) in self.urls().iter().enumerate() {
            let node = self.node_ids.get(i).cloned().unwrap_or_default();
            let url = ws_url.replace("ws://", "http://").replace("/ws", "/readyz");
            match http.get(&url).send().await {
                Ok(resp) if resp.status().as_u16() == 200 => {}
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    out.push(format!("{node} ({url}): {status} {body}"));
                }
                Err(e) => out.push(format!("{node} ({url}): {e}")),
            }
        }
        out
    }

    /// The log files of the replacement processes.
    pub fn replacement_logs(&self) -> Vec<PathBuf> {
        self.replacements
            .iter()
            .map(|p| p.log_path().to_path_buf())
            .collect()
    }
}

async fn wait_ready(proc: &mut Proc, addr: std::net::SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("building an HTTP client")?;
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if !proc.is_running() {
            bail!(
                "{} {} before it was ready; log:\n{}",
                proc.name,
                proc.describe_exit(),
                proc.log_tail(30)
            );
        }
        if let Ok(resp) = http.get(&url).send().await
            && resp.status().as_u16() == 200
            && pid_listens_on(proc.pid(), addr.port())
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready within 20 s; log:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
