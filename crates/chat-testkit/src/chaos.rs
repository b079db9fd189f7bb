//! Building blocks of the chaos suite (`tests/chaos.rs`, `make chaos`):
//!
//! - [`PrivateRedis`]: a `redis-server` child of the test on a free port, so the suite can kill
//!   and restart "Redis" without touching the shared server;
//! - [`GatewayPool`]: the WebSocket URLs the simulated clients pick from, and the restart of a
//!   crashed or drained gateway in place (same node id and environment, a new port);
//! - [`run_client`]: one simulated user on one socket. It sends messages (WebSocket `send` frames
//!   or REST, each with its own `client_msg_id`, re-sent after a failure until acked), receives,
//!   drops repeats by message id, reconnects with exponential backoff and jitter to another
//!   gateway and resumes from the cursor of the last event it processed;
//! - [`check`]: compares, per user and per fault, what was acked as sent in the user's chats
//!   with what the user received; [`verify_history`] compares the acked messages with what the
//!   database holds.
//!
//! Duplicates come in two kinds. A *dropped* duplicate is a repeat the protocol allows (a
//! replay after a reconnect or a `resume` frame may repeat events the client already has): the
//! client drops it by id. A *duplicate* is the same id delivered twice on one socket's live
//! stream with no resume in between: the protocol promises that never happens, so it counts as a
//! failure, as does a chat's `seq` going backwards within one live stream (`out_of_order`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::ports::{free_addr, pid_listens_on};
use crate::process::Proc;
use crate::redis_target::{RedisMode, RedisTarget, connect};
use crate::stack::{Stack, bin_dir};
use crate::ws::{Auth, Format, Frame, WsClient};

/// How the clients catch up after a reconnect or a `resync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeMode {
    /// The contract: `?since=<cursor>` on the upgrade or `since` in the `auth` frame after a
    /// reconnect, a `{"type":"resume"}` frame after `resync`; the replay ends with `synced`.
    Cursor,
    /// Fallback for servers without cursors: refill every chat from
    /// `GET /v1/chats/{id}/messages?after_seq=` after a reconnect or `resync`.
    History,
    /// No catching up at all (no `since`, `resync` ignored, no final resume): only to show
    /// that the checker sees what a client without resume loses.
    Off,
}

impl ResumeMode {
    pub fn name(self) -> &'static str {
        match self {
            ResumeMode::Cursor => "cursor",
            ResumeMode::History => "history-refill (fallback)",
            ResumeMode::Off => "off (checker self-test: expect losses)",
        }
    }
}

/// The size of a run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    /// `ci` or `full`.
    pub scale: String,
    /// Simulated clients (one user, one socket each).
    pub users: usize,
    /// Users per group chat; inside a group, users 0+1 and 2+3 also share a private chat.
    pub group_size: usize,
    /// Mean pause of one client between an ack and its next message.
    pub send_interval: Duration,
    /// Traffic before each fault.
    pub before: Duration,
    /// Traffic after each fault is over.
    pub after: Duration,
    /// The run fails with fewer acked messages than this.
    pub min_messages: usize,
    pub resume: ResumeMode,
}

impl ChaosConfig {
    /// `CHAT_CHAOS_SCALE=full` (`make chaos`) or the CI size (default). `CHAT_CHAOS_USERS`,
    /// `CHAT_CHAOS_INTERVAL_MS` and `CHAT_CHAOS_RESUME=history` override.
    pub fn from_env() -> ChaosConfig {
        let full = std::env::var("CHAT_CHAOS_SCALE").is_ok_and(|s| s == "full");
        let mut config = if full {
            ChaosConfig {
                scale: "full".into(),
                users: 240,
                group_size: 4,
                send_interval: Duration::from_millis(2_200),
                before: Duration::from_secs(12),
                after: Duration::from_secs(16),
                min_messages: 10_000,
                resume: ResumeMode::Cursor,
            }
        } else {
            ChaosConfig {
                scale: "ci".into(),
                users: 60,
                group_size: 4,
                send_interval: Duration::from_millis(1_800),
                before: Duration::from_secs(5),
                after: Duration::from_secs(7),
                min_messages: 1_500,
                resume: ResumeMode::Cursor,
            }
        };
        if let Some(users) = env_number("CHAT_CHAOS_USERS") {
            config.users = usize::try_from(users).unwrap_or(config.users).max(4);
        }
        if let Some(ms) = env_number("CHAT_CHAOS_INTERVAL_MS") {
            config.send_interval = Duration::from_millis(ms.max(10));
        }
        match std::env::var("CHAT_CHAOS_RESUME").as_deref() {
            Ok("history") => config.resume = ResumeMode::History,
            Ok("off") => config.resume = ResumeMode::Off,
            _ => {}
        }
        config
    }
}

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

// ---------------------------------------------------------------------------------------------
// A private Redis server

/// A `redis-server` owned by the test (no persistence), on a free port, that can be killed and
/// started again on the same port.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    script: PathBuf,
    proc: Option<Proc>,
    starts: usize,
}

impl std::fmt::Debug for PrivateRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivateRedis")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish()
    }
}

impl PrivateRedis {
    /// Starts `redis-server --port <free> --save "" --appendonly no` and waits for PING.
    ///
    /// Call it from the test's own task: the server dies with the thread that spawned it.
    pub async fn start() -> anyhow::Result<PrivateRedis> {
        let port = free_addr()?.port();
        let dir = std::env::temp_dir()
            .join("chat-testkit")
            .join(format!("chaos-redis-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Proc::spawn takes no arguments, so a two-line script carries them (`exec` keeps the
        // pid, and with it the parent-death signal).
        let script = dir.join("redis-server.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\nexec redis-server --port \"$CHAOS_REDIS_PORT\" --bind 127.0.0.1 \
             --save '' --appendonly no --daemonize no --dir \"$CHAOS_REDIS_DIR\"\n",
        )
        .with_context(|| format!("writing {}", script.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("chmod {}", script.display()))?;
        }
        let mut redis = PrivateRedis {
            port,
            dir,
            script,
            proc: None,
            starts: 0,
        };
        redis.spawn_and_wait().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The target to give [`crate::StackOptions::redis`].
    pub fn target(&self) -> RedisTarget {
        RedisTarget {
            mode: RedisMode::Standalone,
            urls: vec![self.url()],
        }
    }

    /// SIGKILLs the server (a crash; every key is gone since nothing is persisted).
    pub fn kill(&mut self) {
        if let Some(mut proc) = self.proc.take() {
            proc.kill();
        }
    }

    /// Starts the server again on the same port and waits for PING.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn_and_wait().await
    }

    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let env = vec![
            ("CHAOS_REDIS_PORT".to_string(), self.port.to_string()),
            (
                "CHAOS_REDIS_DIR".to_string(),
                self.dir.to_string_lossy().into_owned(),
            ),
        ];
        let name = format!("redis-server-{}", self.starts);
        // A freshly written script can be "busy" for a moment if another thread forked while
        // it was open: retry that.
        let mut proc = None;
        for _ in 0..20 {
            match Proc::spawn(&name, &self.script, &env, &self.dir) {
                Ok(p) => {
                    proc = Some(p);
                    break;
                }
                Err(e) if format!("{e:#}").contains("busy") => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
        let mut proc = proc.context("redis-server script stayed busy")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !proc.is_running() {
                bail!(
                    "redis-server {} (is redis-server installed?); log:\n{}",
                    proc.describe_exit(),
                    proc.log_tail(20)
                );
            }
            if ping(&self.url()).await.is_ok() && pid_listens_on(proc.pid(), self.port) {
                self.proc = Some(proc);
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "redis-server on port {} did not answer within 10 s; log:\n{}",
                    self.port,
                    proc.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn ping(url: &str) -> anyhow::Result<()> {
    let mut conn = connect(url).await?;
    let _: String = redis::cmd("PING").query_async(&mut conn).await?;
    Ok(())
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------------------------------------
// Gateways

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
            ("CHAT_API_URL".to_string(), stack.api_url()),
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

// ---------------------------------------------------------------------------------------------
// Shared state of a run

/// What the orchestrator and the clients share.
#[derive(Debug)]
pub struct Shared {
    pub gateways: Arc<RwLock<Vec<String>>>,
    pub api_base: String,
    pub resume: ResumeMode,
    pub send_interval: Duration,
    /// Index of the current phase (deliveries, anomalies and new messages are attributed to it).
    pub phase: AtomicUsize,
    /// Clients create new messages while set (pending ones are retried regardless).
    pub traffic: AtomicBool,
    /// Incremented to ask every client for a final resume.
    pub final_round: AtomicU64,
    /// Clients stop when set.
    pub stop: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last ack or delivery.
    last_activity_ms: AtomicU64,
    pub acked: AtomicU64,
    pub deliveries: AtomicU64,
    pub connected: AtomicUsize,
    pub pending_sends: AtomicUsize,
    pub final_done: AtomicUsize,
    pub reconnects: AtomicU64,
}

impl Shared {
    pub fn new(
        gateways: Arc<RwLock<Vec<String>>>,
        api_base: &str,
        resume: ResumeMode,
        send_interval: Duration,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            gateways,
            api_base: api_base.trim_end_matches('/').to_string(),
            resume,
            send_interval,
            phase: AtomicUsize::new(0),
            traffic: AtomicBool::new(false),
            final_round: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            pending_sends: AtomicUsize::new(0),
            final_done: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last ack or delivery anywhere.
    pub fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    fn gateway_url(&self, i: usize) -> Option<String> {
        let urls = self.gateways.read().ok()?;
        if urls.is_empty() {
            return None;
        }
        urls.get(i % urls.len()).cloned()
    }

    fn gateway_count(&self) -> usize {
        self.gateways.read().map(|u| u.len()).unwrap_or(0).max(1)
    }

    /// One progress line.
    pub fn progress(&self) -> String {
        format!(
            "connected={} acked={} deliveries={} pending_sends={} reconnects={}",
            self.connected.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.deliveries.load(Ordering::Relaxed),
            self.pending_sends.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// One simulated client

/// Who a client is.
#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub index: usize,
    pub user_id: u64,
    pub token: String,
    pub chats: Vec<u64>,
    /// Send over `POST /v1/chats/{id}/messages` instead of WebSocket `send` frames.
    pub send_over_rest: bool,
    /// Resume with `since` in the `auth` frame instead of `?since=` on the upgrade.
    pub since_in_auth_frame: bool,
}

/// A message the server acked.
#[derive(Debug, Clone)]
pub struct AckedMessage {
    pub id: u64,
    pub chat_id: u64,
    pub seq: u64,
    pub sender: u64,
    pub client_msg_id: String,
    /// The phase in which the client created the message.
    pub phase: usize,
}

/// Something the checker fails on (or reports), with the phase it happened in.
#[derive(Debug, Clone)]
pub struct Anomaly {
    pub phase: usize,
    pub kind: &'static str,
    pub detail: String,
}

/// Per-phase counters of one client.
#[derive(Debug, Clone, Default)]
pub struct PhaseCounters {
    /// `new_message` events received (repeats included).
    pub deliveries: u64,
    /// Repeats the protocol allows (replays), dropped by id.
    pub dropped_dups: u64,
    /// The same id twice on one live stream.
    pub duplicated: u64,
    /// A chat's seq going backwards within one live stream.
    pub out_of_order: u64,
    /// Messages refilled from history (fallback mode only).
    pub refilled: u64,
    pub reconnects: u64,
    pub resyncs: u64,
    pub resumes: u64,
    pub send_retries: u64,
}

/// What one client saw.
#[derive(Debug, Clone, Default)]
pub struct ClientReport {
    pub user_id: u64,
    pub acked: Vec<AckedMessage>,
    /// Message id → phase of the first receipt (events, or refill in fallback mode).
    pub received: HashMap<u64, usize>,
    pub phases: Vec<PhaseCounters>,
    pub anomalies: Vec<Anomaly>,
    /// Close codes (or "gone") of ended sockets.
    pub closes: BTreeMap<String, u64>,
    /// Error codes of failed sends.
    pub send_errors: BTreeMap<String, u64>,
    pub final_synced: bool,
    /// Messages first received during the final resume: the live stream (and any resync)
    /// had missed them although this socket stayed connected or had resumed since.
    pub only_in_final: Vec<u64>,
}

impl ClientReport {
    fn counters(&mut self, phase: usize) -> &mut PhaseCounters {
        if self.phases.len() <= phase {
            self.phases.resize(phase + 1, PhaseCounters::default());
        }
        &mut self.phases[phase]
    }
}

/// The live stream of one socket.
#[derive(Debug, Default)]
struct StreamState {
    /// Connection number (1 = first).
    conn: u64,
    gateway: usize,
    /// Ids delivered on this stream.
    seen: HashSet<u64>,
    /// Chat → highest seq delivered on this stream.
    last_seq: HashMap<u64, u64>,
    /// Chat → the message that set `last_seq` (for failure messages).
    last_message: HashMap<u64, String>,
    /// Between a `resume` frame and its `synced`: events delivered live just before the
    /// gateway handled the frame may come again in the replay, and a replay restarts lower.
    window: bool,
    window_seen: HashSet<u64>,
    window_max: HashMap<u64, u64>,
    /// Waiting for `synced` since then.
    awaiting_synced: Option<Instant>,
    /// Resumes sent (or the resuming connect) whose `synced` has not come yet.
    resumes_outstanding: u32,
    /// The final resume of the run is in progress on this stream.
    final_resume: bool,
}

struct Outgoing {
    chat_id: u64,
    client_msg_id: String,
    text: String,
    phase: usize,
    attempts: u32,
    created: Instant,
}

type RestFuture = Pin<Box<dyn Future<Output = anyhow::Result<(u16, Value)>> + Send>>;

enum InFlight {
    Ws { request_id: String, sent: Instant },
    Rest,
}

enum Wake {
    Frame(Option<Frame>),
    Rest(anyhow::Result<(u16, Value)>),
    Tick,
}

/// How long a WebSocket send may wait for its reply before it is sent again.
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a resume may take until `synced`.
const SYNCED_TIMEOUT: Duration = Duration::from_secs(30);
/// A send still failing after this long is given up (and reported).
const SEND_GIVE_UP: Duration = Duration::from_secs(90);

struct Client {
    spec: ClientSpec,
    shared: Arc<Shared>,
    http: reqwest::Client,
    report: ClientReport,
    ws: Option<WsClient>,
    stream: StreamState,
    connections: u64,
    gateway: usize,
    reconnect_attempts: u32,
    reconnect_at: Instant,
    cursor: Option<String>,
    /// Seqs held per chat (received or own), for the fallback refill.
    seqs: HashMap<u64, BTreeSet<u64>>,
    refill_needed: bool,
    pending: Option<Outgoing>,
    in_flight: Option<InFlight>,
    rest: Option<RestFuture>,
    retry_at: Instant,
    next_send_at: Instant,
    sent_count: u64,
    request_count: u64,
    final_round_seen: u64,
    final_pending: bool,
    missing_cursor_reported: bool,
}

/// Runs one simulated client until [`Shared::stop`]; returns what it saw.
pub async fn run_client(spec: ClientSpec, shared: Arc<Shared>) -> ClientReport {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new());
    let now = Instant::now();
    let gateway = spec.index;
    let mut client = Client {
        report: ClientReport {
            user_id: spec.user_id,
            ..ClientReport::default()
        },
        spec,
        shared,
        http,
        ws: None,
        stream: StreamState::default(),
        connections: 0,
        gateway,
        reconnect_attempts: 0,
        reconnect_at: now,
        cursor: None,
        seqs: HashMap::new(),
        refill_needed: false,
        pending: None,
        in_flight: None,
        rest: None,
        retry_at: now,
        next_send_at: now + jitter(Duration::ZERO, Duration::from_millis(1500)),
        sent_count: 0,
        request_count: 0,
        final_round_seen: 0,
        final_pending: false,
        missing_cursor_reported: false,
    };
    client.run().await;
    client.report
}

/// A random duration in `[base, base + spread)`.
fn jitter(base: Duration, spread: Duration) -> Duration {
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(0);
    if spread_ms == 0 {
        return base;
    }
    base + Duration::from_millis(rand::random_range(0..spread_ms))
}

/// Exponential backoff with full jitter: 100 ms · 2^attempt, capped at 3 s.
fn backoff(attempt: u32) -> Duration {
    let cap = 100u64.saturating_mul(1u64 << attempt.min(5)).min(3_000);
    Duration::from_millis(50) + jitter(Duration::ZERO, Duration::from_millis(cap))
}

fn message_fields(message: &Value) -> Option<(u64, u64, u64)> {
    Some((
        message.get("id")?.as_u64()?,
        message.get("chat_id")?.as_u64()?,
        message.get("seq")?.as_u64()?,
    ))
}

impl Client {
    fn phase(&self) -> usize {
        self.shared.phase.load(Ordering::Relaxed)
    }

    fn anomaly(&mut self, kind: &'static str, detail: String) {
        let phase = self.phase();
        self.report.anomalies.push(Anomaly {
            phase,
            kind,
            detail,
        });
    }

    async fn run(&mut self) {
        loop {
            if self.shared.stop.load(Ordering::Relaxed) {
                break;
            }
            let now = Instant::now();
            if self.ws.is_none() && now >= self.reconnect_at {
                self.connect().await;
                continue;
            }
            if self.ws.is_some() && self.refill_needed {
                self.refill().await;
            }
            self.check_final_round().await;
            self.maybe_create_message(now);
            self.maybe_send(now).await;
            self.check_timeouts(now);

            let tick = self.next_tick(now);
            let wake = {
                let ws = &mut self.ws;
                let rest = &mut self.rest;
                let frame = async move {
                    match ws.as_mut() {
                        Some(ws) => ws.recv_frame(Duration::from_secs(3600)).await,
                        None => std::future::pending().await,
                    }
                };
                let rest_done = async move {
                    match rest.as_mut() {
                        Some(fut) => fut.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    f = frame => Wake::Frame(f),
                    r = rest_done => Wake::Rest(r),
                    _ = tokio::time::sleep(tick) => Wake::Tick,
                }
            };
            match wake {
                Wake::Frame(Some(frame)) => self.on_frame(frame).await,
                Wake::Frame(None) => {}
                Wake::Rest(result) => {
                    self.rest = None;
                    self.on_rest_result(result);
                }
                Wake::Tick => {}
            }
        }
        if let Some(ws) = self.ws.take() {
            self.shared.connected.fetch_sub(1, Ordering::Relaxed);
            ws.close().await;
        }
        if self.pending.is_some() {
            self.shared.pending_sends.fetch_sub(1, Ordering::Relaxed);
            if let Some(p) = &self.pending {
                let detail = format!(
                    "user {} chat {} client_msg_id {} never acked",
                    self.spec.user_id, p.chat_id, p.client_msg_id
                );
                self.anomaly("send_never_acked", detail);
            }
        }
    }

    fn next_tick(&self, now: Instant) -> Duration {
        let mut next = now + Duration::from_millis(250);
        if self.ws.is_none() {
            next = next.min(self.reconnect_at);
        }
        if self.pending.is_none() && self.shared.traffic.load(Ordering::Relaxed) {
            next = next.min(self.next_send_at);
        }
        if self.pending.is_some()
            && self.in_flight.is_none()
            && (self.spec.send_over_rest || self.ws.is_some())
        {
            next = next.min(self.retry_at);
        }
        next.saturating_duration_since(now)
            .max(Duration::from_millis(1))
    }

    fn maybe_create_message(&mut self, now: Instant) {
        if self.pending.is_some()
            || !self.shared.traffic.load(Ordering::Relaxed)
            || now < self.next_send_at
            || self.spec.chats.is_empty()
        {
            return;
        }
        self.sent_count += 1;
        let chat_id = self.spec.chats[rand::random_range(0..self.spec.chats.len())];
        let client_msg_id = format!("cx-{}-{}", self.spec.user_id, self.sent_count);
        self.pending = Some(Outgoing {
            chat_id,
            text: format!("chaos {} #{}", self.spec.user_id, self.sent_count),
            client_msg_id,
            phase: self.phase(),
            attempts: 0,
            created: now,
        });
        self.retry_at = now;
        self.shared.pending_sends.fetch_add(1, Ordering::Relaxed);
    }

    async fn maybe_send(&mut self, now: Instant) {
        if self.in_flight.is_some() || now < self.retry_at {
            return;
        }
        let Some(pending) = &mut self.pending else {
            return;
        };
        if pending.attempts > 0 && pending.created.elapsed() > SEND_GIVE_UP {
            let detail = format!(
                "user {} chat {} client_msg_id {}: no ack after {:?} ({} attempts)",
                self.spec.user_id,
                pending.chat_id,
                pending.client_msg_id,
                SEND_GIVE_UP,
                pending.attempts
            );
            self.pending = None;
            self.shared.pending_sends.fetch_sub(1, Ordering::Relaxed);
            self.anomaly("send_given_up", detail);
            return;
        }
        pending.attempts += 1;
        let retry = pending.attempts > 1;
        if self.spec.send_over_rest {
            let url = format!(
                "{}/v1/chats/{}/messages",
                self.shared.api_base, pending.chat_id
            );
            let body = json!({"client_msg_id": pending.client_msg_id, "text": pending.text});
            let request = self
                .http
                .post(url)
                .bearer_auth(&self.spec.token)
                .json(&body);
            self.rest = Some(Box::pin(async move {
                let resp = request.send().await?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await?;
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Ok((status, value))
            }));
            self.in_flight = Some(InFlight::Rest);
        } else {
            let Some(ws) = self.ws.as_mut() else {
                // Sent once connected.
                pending.attempts -= 1;
                return;
            };
            self.request_count += 1;
            let request_id = format!("s{}", self.request_count);
            let frame = json!({
                "type": "send",
                "id": request_id,
                "chat_id": pending.chat_id,
                "client_msg_id": pending.client_msg_id,
                "text": pending.text,
            });
            match ws.try_send_json(&frame).await {
                Ok(()) => {
                    self.in_flight = Some(InFlight::Ws {
                        request_id,
                        sent: now,
                    });
                }
                Err(_) => {
                    self.socket_ended("send failed".into());
                    return;
                }
            }
        }
        if retry {
            let phase = self.phase();
            self.report.counters(phase).send_retries += 1;
        }
    }

    fn check_timeouts(&mut self, now: Instant) {
        if let Some(InFlight::Ws { sent, .. }) = &self.in_flight
            && now.duration_since(*sent) > ACK_TIMEOUT
        {
            self.in_flight = None;
            self.retry_at = now;
        }
        if let Some(since) = self.stream.awaiting_synced
            && now.duration_since(since) > SYNCED_TIMEOUT
        {
            let detail = format!(
                "user {} conn {} gateway {}: no `synced` within {SYNCED_TIMEOUT:?} (cursor {:?})",
                self.spec.user_id, self.stream.conn, self.stream.gateway, self.cursor
            );
            self.anomaly("synced_timeout", detail);
            self.socket_ended("synced timeout".into());
        }
    }

    fn schedule_retry(&mut self) {
        let attempts = self.pending.as_ref().map(|p| p.attempts).unwrap_or(1);
        self.retry_at = Instant::now() + backoff(attempts.saturating_sub(1));
    }

    fn on_acked(&mut self, message: &Value) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        self.in_flight = None;
        self.shared.pending_sends.fetch_sub(1, Ordering::Relaxed);
        match message_fields(message) {
            Some((id, chat_id, seq)) => {
                self.report.acked.push(AckedMessage {
                    id,
                    chat_id,
                    seq,
                    sender: self.spec.user_id,
                    client_msg_id: pending.client_msg_id,
                    phase: pending.phase,
                });
                self.seqs.entry(chat_id).or_default().insert(seq);
                self.shared.acked.fetch_add(1, Ordering::Relaxed);
                self.shared.touch();
            }
            None => {
                let detail = format!("ack without a readable message: {message}");
                self.anomaly("bad_ack", detail);
            }
        }
        let interval = self.shared.send_interval;
        self.next_send_at = Instant::now() + jitter(interval / 2, interval);
    }

    fn on_send_error(&mut self, code: &str) {
        *self.report.send_errors.entry(code.to_string()).or_default() += 1;
        self.in_flight = None;
        self.schedule_retry();
    }

    fn on_rest_result(&mut self, result: anyhow::Result<(u16, Value)>) {
        match result {
            Ok((200 | 201, body)) => {
                let message = body.get("message").cloned().unwrap_or(Value::Null);
                self.on_acked(&message);
            }
            Ok((status, body)) => {
                let code = body
                    .pointer("/error/code")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                self.on_send_error(&format!("http {status} {code}"));
            }
            Err(_) => self.on_send_error("transport"),
        }
    }

    fn socket_ended(&mut self, how: String) {
        if let Some(ws) = self.ws.take() {
            drop(ws);
            self.shared.connected.fetch_sub(1, Ordering::Relaxed);
        }
        *self.report.closes.entry(how).or_default() += 1;
        if matches!(self.in_flight, Some(InFlight::Ws { .. })) {
            self.in_flight = None;
            self.retry_at = Instant::now();
        }
        self.stream.awaiting_synced = None;
        self.stream.window = false;
        self.reconnect_attempts = self.reconnect_attempts.saturating_add(1);
        self.reconnect_at = Instant::now() + backoff(self.reconnect_attempts);
        self.next_gateway();
        let phase = self.phase();
        self.report.counters(phase).reconnects += 1;
        self.shared.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves to another gateway, picked at random, so the clients of a dead node spread over
    /// the others instead of all landing on its neighbour.
    fn next_gateway(&mut self) {
        let n = self.shared.gateway_count();
        if n > 1 {
            self.gateway = self.gateway % n + 1 + rand::random_range(0..n - 1);
        }
    }

    /// One connection attempt to the next gateway.
    async fn connect(&mut self) {
        let gateway = self.gateway % self.shared.gateway_count();
        let Some(base) = self.shared.gateway_url(gateway) else {
            self.reconnect_at = Instant::now() + Duration::from_millis(200);
            return;
        };
        let first = self.connections == 0;
        let since = match self.shared.resume {
            ResumeMode::Cursor if !first => {
                Some(self.cursor.clone().unwrap_or_else(|| "c0".to_string()))
            }
            _ => None,
        };
        let result = self.open(&base, since.as_deref()).await;
        match result {
            Ok(ws) => {
                self.connections += 1;
                self.ws = Some(ws);
                self.shared.connected.fetch_add(1, Ordering::Relaxed);
                self.reconnect_attempts = 0;
                self.stream = StreamState {
                    conn: self.connections,
                    gateway,
                    awaiting_synced: since.as_ref().map(|_| Instant::now()),
                    resumes_outstanding: u32::from(since.is_some()),
                    final_resume: since.is_some() && self.final_pending,
                    ..StreamState::default()
                };
                if !first && self.shared.resume == ResumeMode::History {
                    self.refill_needed = true;
                }
                if self.shared.resume == ResumeMode::Off {
                    self.finish_final();
                }
                // A WebSocket send waiting for this connection goes out now.
                if !self.spec.send_over_rest && self.pending.is_some() {
                    self.retry_at = Instant::now();
                }
            }
            Err(how) => {
                *self
                    .report
                    .closes
                    .entry(format!("connect: {how}"))
                    .or_default() += 1;
                self.reconnect_attempts = self.reconnect_attempts.saturating_add(1);
                self.reconnect_at = Instant::now() + backoff(self.reconnect_attempts);
                self.next_gateway();
            }
        }
    }

    /// Upgrades, authenticates (with `since` when resuming) and waits for `auth_ok`.
    async fn open(&mut self, base: &str, since: Option<&str>) -> Result<WsClient, String> {
        let token = self.spec.token.clone();
        let mut ws = if self.spec.since_in_auth_frame {
            let mut ws = WsClient::connect(base, Auth::None, Format::Json)
                .await
                .map_err(|_| "upgrade failed".to_string())?;
            let mut frame = json!({"type": "auth", "token": token});
            if let Some(since) = since {
                frame["since"] = json!(since);
            }
            ws.try_send_json(&frame)
                .await
                .map_err(|_| "auth frame failed".to_string())?;
            ws
        } else {
            let url = match since {
                Some(since) => format!("{base}?since={since}"),
                None => base.to_string(),
            };
            WsClient::connect(&url, Auth::Header(&token), Format::Json)
                .await
                .map_err(|_| "upgrade failed".to_string())?
        };
        let ws_label = format!("u{}", self.spec.user_id);
        ws = ws.labeled(&ws_label);
        match ws.recv_frame(Duration::from_secs(10)).await {
            Some(Frame::Text(text)) => {
                let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                if value.get("type").and_then(Value::as_str) == Some("auth_ok") {
                    Ok(ws)
                } else {
                    let code = value
                        .get("code")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                        .to_string();
                    Err(format!("refused ({code})"))
                }
            }
            Some(Frame::Close(code)) => Err(format!("closed {code:?}")),
            Some(other) => Err(format!("{:?}", frame_kind(&other))),
            None => Err("no auth_ok within 10 s".into()),
        }
    }

    async fn on_frame(&mut self, frame: Frame) {
        let text = match frame {
            Frame::Text(text) => text,
            Frame::Close(code) => {
                let how = match code {
                    Some(code) => format!("close {code}"),
                    None => "close".to_string(),
                };
                self.socket_ended(how);
                return;
            }
            Frame::Gone(_) => {
                self.socket_ended("gone".into());
                return;
            }
            Frame::Binary(_) => {
                self.anomaly("binary_frame", "binary frame in a JSON session".into());
                return;
            }
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            self.anomaly("bad_frame", text);
            return;
        };
        match value.get("type").and_then(Value::as_str) {
            Some("new_message") => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                match message_fields(&message) {
                    Some((id, chat_id, seq)) => {
                        let what = describe(&message);
                        self.on_delivery(id, chat_id, seq, what);
                    }
                    None => self.anomaly("bad_event", value.to_string()),
                }
                self.take_cursor(&value);
            }
            Some("message_read") => self.take_cursor(&value),
            Some("resync") => self.on_resync().await,
            Some("synced") => self.on_synced(&value),
            Some("ack") if self.is_reply(&value) => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                self.on_acked(&message);
            }
            Some("error") => {
                let code = value
                    .get("code")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                if self.is_reply(&value) {
                    self.on_send_error(&format!("ws {code}"));
                } else if value.get("id").is_some_and(|id| !id.is_null()) {
                    // A late reply to a send given up on (timed out and sent again).
                    *self
                        .report
                        .send_errors
                        .entry(format!("ws {code} (late)"))
                        .or_default() += 1;
                } else if self.stream.awaiting_synced.is_some() {
                    // The resume was refused (a bad cursor): the contract says that never
                    // happens for a cursor the server handed out.
                    let detail = format!(
                        "user {} resume from {:?} refused: {value}",
                        self.spec.user_id, self.cursor
                    );
                    self.anomaly("resume_refused", detail);
                    self.stream.resumes_outstanding =
                        self.stream.resumes_outstanding.saturating_sub(1);
                    if self.stream.resumes_outstanding == 0 {
                        self.stream.awaiting_synced = None;
                        self.stream.window = false;
                    }
                } else {
                    let detail = format!("user {}: {value}", self.spec.user_id);
                    self.anomaly("unexpected_error", detail);
                }
            }
            _ => {}
        }
    }

    fn is_reply(&self, value: &Value) -> bool {
        match (&self.in_flight, value.get("id").and_then(Value::as_str)) {
            (Some(InFlight::Ws { request_id, .. }), Some(id)) => request_id == id,
            _ => false,
        }
    }

    fn take_cursor(&mut self, value: &Value) {
        match value.get("cursor").and_then(Value::as_str) {
            Some(cursor) => self.cursor = Some(cursor.to_string()),
            None if self.shared.resume == ResumeMode::Cursor && !self.missing_cursor_reported => {
                self.missing_cursor_reported = true;
                let detail = format!(
                    "user {}: event without a cursor: {value}",
                    self.spec.user_id
                );
                self.anomaly("no_cursor", detail);
            }
            None => {}
        }
    }

    fn on_delivery(&mut self, id: u64, chat_id: u64, seq: u64, what: String) {
        let phase = self.phase();
        self.shared.deliveries.fetch_add(1, Ordering::Relaxed);
        self.shared.touch();
        let first_time = !self.report.received.contains_key(&id);
        if first_time {
            self.report.received.insert(id, phase);
            self.seqs.entry(chat_id).or_default().insert(seq);
            if self.final_round_seen > 0 {
                self.report.only_in_final.push(id);
            }
        }
        let user = self.spec.user_id;
        let counters = self.report.counters(phase);
        counters.deliveries += 1;
        let stream = &mut self.stream;
        if stream.window {
            if !first_time {
                counters.dropped_dups += 1;
            }
            stream.window_seen.insert(id);
            let max = stream.window_max.entry(chat_id).or_insert(seq);
            *max = (*max).max(seq);
            return;
        }
        if !stream.seen.insert(id) {
            counters.duplicated += 1;
            let detail = format!(
                "user {user} message {id} (chat {chat_id} seq {seq}) twice on conn {} \
                 (gateway slot {})",
                stream.conn, stream.gateway
            );
            self.anomaly("duplicated", detail);
            return;
        }
        if !first_time {
            counters.dropped_dups += 1;
        }
        let last = stream.last_seq.entry(chat_id).or_insert(0);
        if seq < *last {
            counters.out_of_order += 1;
            let before = stream
                .last_message
                .get(&chat_id)
                .cloned()
                .unwrap_or_default();
            let detail = format!(
                "user {user} chat {chat_id}: seq {seq} ({what}) arrived after seq {} ({before}) \
                 on conn {} (gateway slot {})",
                *last, stream.conn, stream.gateway
            );
            self.anomaly("out_of_order", detail);
        } else {
            *last = seq;
            stream.last_message.insert(chat_id, what);
        }
    }

    async fn on_resync(&mut self) {
        let phase = self.phase();
        self.report.counters(phase).resyncs += 1;
        match self.shared.resume {
            ResumeMode::Cursor => self.send_resume(false).await,
            ResumeMode::History => self.refill_needed = true,
            ResumeMode::Off => {}
        }
    }

    /// Sends `{"type":"resume"}` with the stored cursor on the current socket.
    async fn send_resume(&mut self, final_resume: bool) {
        let since = self.cursor.clone().unwrap_or_else(|| "c0".to_string());
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        let frame = json!({"type": "resume", "since": since});
        if ws.try_send_json(&frame).await.is_err() {
            self.socket_ended("send failed".into());
            return;
        }
        let phase = self.phase();
        self.report.counters(phase).resumes += 1;
        let stream = &mut self.stream;
        if !stream.window {
            stream.window = true;
            stream.window_seen.clear();
            stream.window_max.clear();
        }
        stream.awaiting_synced = Some(Instant::now());
        stream.resumes_outstanding += 1;
        stream.final_resume |= final_resume;
    }

    fn on_synced(&mut self, value: &Value) {
        if let Some(cursor) = value.get("cursor").and_then(Value::as_str) {
            self.cursor = Some(cursor.to_string());
        }
        let stream = &mut self.stream;
        if stream.resumes_outstanding == 0 {
            let detail = format!(
                "user {}: `synced` without a resume: {value}",
                self.spec.user_id
            );
            self.anomaly("unexpected_synced", detail);
            return;
        }
        stream.resumes_outstanding -= 1;
        if stream.resumes_outstanding > 0 {
            // Another resume is still replaying: the window stays open until its `synced`.
            return;
        }
        stream.awaiting_synced = None;
        if stream.window {
            stream.window = false;
            let seen: Vec<u64> = stream.window_seen.drain().collect();
            stream.seen.extend(seen);
            for (chat, max) in stream.window_max.drain() {
                let last = stream.last_seq.entry(chat).or_insert(0);
                *last = (*last).max(max);
            }
        }
        if stream.final_resume {
            stream.final_resume = false;
            self.finish_final();
        }
    }

    fn finish_final(&mut self) {
        if self.final_pending {
            self.final_pending = false;
            self.report.final_synced = true;
            self.shared.final_done.fetch_add(1, Ordering::Relaxed);
        }
    }

    async fn check_final_round(&mut self) {
        let round = self.shared.final_round.load(Ordering::Relaxed);
        if round == self.final_round_seen {
            return;
        }
        if self.ws.is_none() {
            // Resumes on reconnect; marked final there.
            self.final_round_seen = round;
            self.final_pending = true;
            return;
        }
        self.final_round_seen = round;
        self.final_pending = true;
        match self.shared.resume {
            ResumeMode::Cursor => self.send_resume(true).await,
            ResumeMode::History => {
                self.refill().await;
                if !self.refill_needed {
                    self.finish_final();
                }
            }
            ResumeMode::Off => self.finish_final(),
        }
    }

    /// Fallback mode: pages every chat from the last seq held without a gap before it.
    async fn refill(&mut self) {
        self.refill_needed = false;
        let phase = self.phase();
        for chat_id in self.spec.chats.clone() {
            let held = self.seqs.entry(chat_id).or_default();
            let mut after = (1..).take_while(|s| held.contains(s)).last().unwrap_or(0);
            loop {
                let url = format!(
                    "{}/v1/chats/{chat_id}/messages?after_seq={after}&limit=100",
                    self.shared.api_base
                );
                let result = async {
                    let resp = self
                        .http
                        .get(&url)
                        .bearer_auth(&self.spec.token)
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await?;
                    anyhow::Ok((status, body))
                }
                .await;
                let Ok((200, body)) = result else {
                    self.refill_needed = true;
                    return;
                };
                let page = body
                    .get("messages")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                for message in &page {
                    let Some((id, chat, seq)) = message_fields(message) else {
                        continue;
                    };
                    after = after.max(seq);
                    let first_time = !self.report.received.contains_key(&id);
                    if first_time {
                        self.report.received.insert(id, phase);
                        self.seqs.entry(chat).or_default().insert(seq);
                        self.report.counters(phase).refilled += 1;
                    }
                }
                let has_more = body
                    .get("has_more")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                if !has_more || page.is_empty() {
                    break;
                }
            }
        }
        if self.final_pending && self.ws.is_some() {
            self.finish_final();
        }
    }
}

/// `message 12 from user 3 at <created_at>`, for failure messages.
fn describe(message: &Value) -> String {
    format!(
        "message {} from user {} at {}",
        message.get("id").unwrap_or(&Value::Null),
        message.get("sender_id").unwrap_or(&Value::Null),
        message
            .get("created_at")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

fn frame_kind(frame: &Frame) -> &'static str {
    match frame {
        Frame::Text(_) => "text",
        Frame::Binary(_) => "binary",
        Frame::Close(_) => "close",
        Frame::Gone(_) => "gone",
    }
}

// ---------------------------------------------------------------------------------------------
// The checker

/// One fault's numbers.
#[derive(Debug, Clone, Default)]
pub struct FaultResult {
    pub name: String,
    /// Distinct acked messages created in this phase.
    pub messages: u64,
    /// Per-user expected deliveries: every acked message of the user's chats sent by another
    /// member.
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    /// The same id twice on one live stream (a failure).
    pub duplicated: u64,
    /// Repeats after a resume, dropped by id (allowed).
    pub dropped_dups: u64,
    pub out_of_order: u64,
    /// Deliveries that came only with the final resume (missed live, no resync): reported,
    /// not a failure, since resuming is how the protocol recovers.
    pub only_in_final: u64,
    pub deliveries: u64,
    pub refilled: u64,
    pub reconnects: u64,
    pub resyncs: u64,
    pub resumes: u64,
    pub send_retries: u64,
}

impl FaultResult {
    /// The line the suite prints.
    pub fn line(&self) -> String {
        format!(
            "fault={} sent={} received={} lost={} duplicated={} out_of_order={} \
             | messages={} deliveries={} dup_dropped={} only_in_final_resume={} refilled={} \
             reconnects={} resyncs={} resumes={} send_retries={}",
            self.name,
            self.sent,
            self.received,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.messages,
            self.deliveries,
            self.dropped_dups,
            self.only_in_final,
            self.refilled,
            self.reconnects,
            self.resyncs,
            self.resumes,
            self.send_retries
        )
    }
}

/// The verdict of a run.
#[derive(Debug, Clone, Default)]
pub struct Verdict {
    pub faults: Vec<FaultResult>,
    /// Everything the run fails on, one line each (capped per kind).
    pub failures: Vec<String>,
    pub total_messages: u64,
    pub closes: BTreeMap<String, u64>,
    pub send_errors: BTreeMap<String, u64>,
    /// Not failures: messages that reached a user only through the final resume.
    pub warnings: Vec<String>,
}

/// Compares, per user and phase, what was acked in the user's chats with what the user
/// received. `members` maps chat id → member user ids; `phases` names phase 0, 1, ...
pub fn check(
    reports: &[ClientReport],
    members: &HashMap<u64, Vec<u64>>,
    phases: &[String],
) -> Verdict {
    let mut verdict = Verdict {
        faults: phases
            .iter()
            .map(|name| FaultResult {
                name: name.clone(),
                ..FaultResult::default()
            })
            .collect(),
        ..Verdict::default()
    };
    let last = phases.len().saturating_sub(1);
    let by_user: HashMap<u64, &ClientReport> = reports.iter().map(|r| (r.user_id, r)).collect();
    let mut lost_lines = Vec::new();
    let mut seen_ids = HashSet::new();
    for report in reports {
        for (code, n) in &report.closes {
            *verdict.closes.entry(code.clone()).or_default() += n;
        }
        for (code, n) in &report.send_errors {
            *verdict.send_errors.entry(code.clone()).or_default() += n;
        }
        for (phase, c) in report.phases.iter().enumerate() {
            let f = &mut verdict.faults[phase.min(last)];
            f.duplicated += c.duplicated;
            f.dropped_dups += c.dropped_dups;
            f.out_of_order += c.out_of_order;
            f.deliveries += c.deliveries;
            f.refilled += c.refilled;
            f.reconnects += c.reconnects;
            f.resyncs += c.resyncs;
            f.resumes += c.resumes;
            f.send_retries += c.send_retries;
        }
        for message in &report.acked {
            if !seen_ids.insert(message.id) {
                verdict.failures.push(format!(
                    "message {} acked twice (client_msg_id {})",
                    message.id, message.client_msg_id
                ));
                continue;
            }
            let phase = message.phase.min(last);
            verdict.faults[phase].messages += 1;
            verdict.total_messages += 1;
            let Some(chat_members) = members.get(&message.chat_id) else {
                verdict.failures.push(format!(
                    "message {} in unknown chat {}",
                    message.id, message.chat_id
                ));
                continue;
            };
            for member in chat_members {
                if *member == message.sender {
                    continue;
                }
                let f = &mut verdict.faults[phase];
                f.sent += 1;
                let got = by_user
                    .get(member)
                    .is_some_and(|r| r.received.contains_key(&message.id));
                if got {
                    f.received += 1;
                } else {
                    f.lost += 1;
                    lost_lines.push(format!(
                        "lost: user {member} never got message {} (chat {} seq {} from user {}, \
                         client_msg_id {}, created in phase {})",
                        message.id,
                        message.chat_id,
                        message.seq,
                        message.sender,
                        message.client_msg_id,
                        phases.get(phase).map(String::as_str).unwrap_or("?")
                    ));
                }
            }
        }
    }
    let acked_by_id: HashMap<u64, &AckedMessage> = reports
        .iter()
        .flat_map(|r| r.acked.iter())
        .map(|m| (m.id, m))
        .collect();
    for report in reports {
        for id in &report.only_in_final {
            let Some(m) = acked_by_id.get(id) else {
                continue;
            };
            verdict.faults[m.phase.min(last)].only_in_final += 1;
            verdict.warnings.push(format!(
                "user {} got message {id} (chat {} seq {} from user {}, created in phase {}) \
                 only with the final resume",
                report.user_id,
                m.chat_id,
                m.seq,
                m.sender,
                phases
                    .get(m.phase.min(last))
                    .map(String::as_str)
                    .unwrap_or("?")
            ));
        }
    }
    let mut by_kind: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for report in reports {
        for a in &report.anomalies {
            let phase = phases
                .get(a.phase.min(last))
                .map(String::as_str)
                .unwrap_or("?");
            by_kind
                .entry(a.kind)
                .or_default()
                .push(format!("{} [{phase}]: {}", a.kind, a.detail));
        }
        if !report.final_synced {
            by_kind.entry("no_final_resume").or_default().push(format!(
                "user {} did not finish its final resume",
                report.user_id
            ));
        }
    }
    const SHOW: usize = 25;
    let lost_total = lost_lines.len();
    verdict.failures.extend(lost_lines.into_iter().take(SHOW));
    if lost_total > SHOW {
        verdict.failures.push(format!(
            "... and {} more lost deliveries",
            lost_total - SHOW
        ));
    }
    for (kind, lines) in by_kind {
        let total = lines.len();
        verdict.failures.extend(lines.into_iter().take(SHOW));
        if total > SHOW {
            verdict
                .failures
                .push(format!("... and {} more {kind}", total - SHOW));
        }
    }
    verdict
}

/// Compares the database (read through the API as a member of each chat) with the acked
/// messages: every acked message is stored, every stored message was acked (nothing
/// half-written, no message stored twice), and each chat's seqs are 1..n. Returns the
/// problems, one line each.
pub async fn verify_history(
    api_base: &str,
    chats: &[(u64, String)],
    reports: &[ClientReport],
) -> anyhow::Result<Vec<String>> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("building an HTTP client")?;
    let mut acked: HashMap<u64, HashMap<u64, &AckedMessage>> = HashMap::new();
    for report in reports {
        for m in &report.acked {
            acked.entry(m.chat_id).or_default().insert(m.id, m);
        }
    }
    let mut problems = Vec::new();
    for (chat_id, token) in chats {
        let mut stored: Vec<Value> = Vec::new();
        let mut after = 0u64;
        loop {
            let url = format!(
                "{}/v1/chats/{chat_id}/messages?after_seq={after}&limit=100",
                api_base.trim_end_matches('/')
            );
            let resp = http
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.with_context(|| format!("GET {url}"))?;
            if status != 200 {
                bail!("GET {url}: {status} {body}");
            }
            let page = body
                .get("messages")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if let Some(seq) = page
                .last()
                .and_then(|m| m.get("seq"))
                .and_then(Value::as_u64)
            {
                after = seq;
            }
            let more = body.get("has_more").and_then(Value::as_bool) == Some(true);
            let empty = page.is_empty();
            stored.extend(page);
            if !more || empty {
                break;
            }
        }
        let expected = acked.remove(chat_id).unwrap_or_default();
        let mut stored_ids = HashSet::new();
        for (i, m) in stored.iter().enumerate() {
            let Some((id, _, seq)) = message_fields(m) else {
                problems.push(format!("chat {chat_id}: unreadable message {m}"));
                continue;
            };
            let want = u64::try_from(i).unwrap_or(u64::MAX).saturating_add(1);
            if seq != want {
                problems.push(format!("chat {chat_id}: seq {seq} at position {want}"));
            }
            stored_ids.insert(id);
            if !expected.contains_key(&id) {
                problems.push(format!(
                    "chat {chat_id}: stored message {id} (seq {seq}, client_msg_id {}) was \
                     never acked",
                    m.get("client_msg_id").unwrap_or(&Value::Null)
                ));
            }
        }
        for (id, m) in &expected {
            if !stored_ids.contains(id) {
                problems.push(format!(
                    "chat {chat_id}: acked message {id} ({}) is not stored",
                    m.client_msg_id
                ));
            }
        }
    }
    for (chat_id, rest) in acked {
        problems.push(format!(
            "{} acked messages in chat {chat_id}, which was not checked",
            rest.len()
        ));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(id: u64, chat_id: u64, seq: u64, sender: u64, phase: usize) -> AckedMessage {
        AckedMessage {
            id,
            chat_id,
            seq,
            sender,
            client_msg_id: format!("m{id}"),
            phase,
        }
    }

    #[test]
    fn the_checker_counts_per_user_and_phase() {
        let a = ClientReport {
            user_id: 1,
            acked: vec![acked(10, 7, 1, 1, 0), acked(11, 7, 2, 1, 1)],
            final_synced: true,
            ..ClientReport::default()
        };
        let b = ClientReport {
            user_id: 2,
            received: HashMap::from([(10, 0)]),
            phases: vec![
                PhaseCounters::default(),
                PhaseCounters {
                    duplicated: 1,
                    ..PhaseCounters::default()
                },
            ],
            final_synced: true,
            ..ClientReport::default()
        };
        let members = HashMap::from([(7, vec![1, 2])]);
        let phases = vec!["one".to_string(), "two".to_string()];
        let verdict = check(&[a, b], &members, &phases);
        let one = &verdict.faults[0];
        assert_eq!((one.sent, one.received, one.lost), (1, 1, 0));
        let two = &verdict.faults[1];
        assert_eq!(
            (two.sent, two.received, two.lost, two.duplicated),
            (1, 0, 1, 1)
        );
        assert_eq!(verdict.total_messages, 2);
        assert!(
            verdict.failures.iter().any(|f| f.contains("message 11")),
            "{:?}",
            verdict.failures
        );
        assert!(
            two.line()
                .starts_with("fault=two sent=1 received=0 lost=1 duplicated=1 out_of_order=0")
        );
    }
}
