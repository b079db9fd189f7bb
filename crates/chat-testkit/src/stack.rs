//! A running chat backend: one `chat-api` and N `chat-gateway` processes on free local ports,
//! sharing a fresh database, a unique Redis prefix and a random JWT secret.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::api::ApiClient;
use crate::db::TestDb;
use crate::ports::{free_addr, pid_listens_on};
use crate::process::Proc;
use crate::proxy::{TcpProxy, host_port, with_host_port};
use crate::redis_target::{RedisMode, RedisTarget};

/// How long a process may take to answer `/readyz` with 200.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at starting a process whose free port was taken in the meantime.
const PORT_ATTEMPTS: usize = 3;

/// What to start.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Number of gateway processes (node ids `gw1`, `gw2`, ...).
    pub gateways: usize,
    /// Number of chat-api replicas (at least one); the gateways get all of their URLs.
    pub apis: usize,
    /// `CHAT_PRESENCE_TTL_MS` for the gateways (their default is 30000).
    pub presence_ttl_ms: Option<u64>,
    /// `CHAT_AUTH_TIMEOUT_MS` for the gateways (their default is 5000).
    pub auth_timeout_ms: Option<u64>,
    /// Extra environment for chat-api.
    pub api_env: Vec<(String, String)>,
    /// Extra environment for every gateway.
    pub gateway_env: Vec<(String, String)>,
    /// Route chat-api's MySQL connections through a [`TcpProxy`] (see [`Stack::mysql_proxy`]).
    pub proxy_mysql: bool,
    /// Route chat-api's Redis connections through a [`TcpProxy`] (see [`Stack::redis_proxy`]).
    /// Standalone Redis only: cluster clients follow the nodes' own addresses.
    pub proxy_api_redis: bool,
    /// The Redis to run on; `None` means [`RedisTarget::from_env`].
    pub redis: Option<RedisTarget>,
    /// Number of chat-worker processes (consumer names `wk1`, `wk2`, ...).
    pub workers: usize,
    /// Extra environment for every worker (e.g. `CHAT_PUSH_URL`).
    pub worker_env: Vec<(String, String)>,
    /// Run as one `chat-embedded` process whatever `CHAT_TEST_STACK` says.
    pub embedded: bool,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            gateways: 1,
            apis: 1,
            presence_ttl_ms: None,
            auth_timeout_ms: None,
            api_env: Vec::new(),
            gateway_env: Vec::new(),
            proxy_mysql: false,
            proxy_api_redis: false,
            redis: None,
            workers: 0,
            worker_env: Vec::new(),
            embedded: false,
        }
    }
}

impl StackOptions {
    /// The defaults with `n` gateways.
    pub fn gateways(n: usize) -> Self {
        StackOptions {
            gateways: n,
            ..StackOptions::default()
        }
    }
}

/// A started backend. Dropping it kills the processes, deletes the Redis keys under its prefix
/// and drops the database; the process logs are kept (and their tails printed) when the test
/// panicked.
pub struct Stack {
    /// The chat-api replicas; in embedded mode, the one process.
    apis: Vec<Proc>,
    api_addrs: Vec<SocketAddr>,
    /// How the api replicas are started (`None` in embedded mode), for restarts.
    api_spec: Option<Spec>,
    gateways: Vec<Proc>,
    gateway_addrs: Vec<SocketAddr>,
    prefix: String,
    secret: String,
    /// `None` in embedded mode (the bus is in the process's memory).
    redis: Option<RedisTarget>,
    log_dir: PathBuf,
    mysql_proxy: Option<TcpProxy>,
    redis_proxy: Option<TcpProxy>,
    workers: Vec<Proc>,
    worker_addrs: Vec<SocketAddr>,
    /// How workers are started (the environment without the consumer name).
    worker_common: Vec<(String, String)>,
    /// The SQLite URL in embedded mode, where there is no test database.
    sqlite_url: Option<String>,
    // Declared last: dropped after the processes are gone.
    db: Option<TestDb>,
}

impl std::fmt::Debug for Stack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stack")
            .field("apis", &self.api_addrs)
            .field("gateways", &self.gateway_addrs)
            .field("prefix", &self.prefix)
            .field("db", &self.db.as_ref().map(TestDb::name))
            .field("sqlite", &self.sqlite_url)
            .field("logs", &self.log_dir)
            .finish()
    }
}

/// The directory holding `chat-api` and `chat-gateway`: `CHAT_BIN_DIR`, or the cargo profile
/// directory of the running test (`target/debug/deps/<test>` → `target/debug`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("CHAT_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    dir
}

fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace --bins` first; `make test` does \
         (or point CHAT_BIN_DIR at the directory holding the binaries)",
        path.display()
    );
    path
}

fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// One process to start: its name, binary and environment (without `CHAT_LISTEN`).
#[derive(Clone)]
struct Spec {
    name: String,
    binary: PathBuf,
    env: Vec<(String, String)>,
}

impl Spec {
    fn spawn(&self, log_dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
        let addr = free_addr()?;
        Ok((self.spawn_at(addr, log_dir)?, addr))
    }

    fn spawn_at(&self, addr: SocketAddr, log_dir: &Path) -> anyhow::Result<Proc> {
        let mut env = self.env.clone();
        env.push(("CHAT_LISTEN".into(), addr.to_string()));
        Proc::spawn(&self.name, &self.binary, &env, log_dir)
    }

    /// Replica `n` (0-based) of this spec: the first keeps the name, the others get `-2`, `-3`...
    fn replica(&self, n: usize) -> Spec {
        let mut spec = self.clone();
        if n > 0 {
            spec.name = format!("{}-{}", self.name, n + 1);
        }
        spec
    }
}

/// Polls `http://addr/readyz` until it answers 200, the process dies or the timeout passes.
async fn wait_ready(proc: &mut Proc, addr: SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .context("building an HTTP client")?;
    let url = format!("http://{addr}/readyz");
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut last = String::from("no answer yet");
    loop {
        if !proc.is_running() {
            bail!(
                "{} {} before it was ready (last /readyz: {last}); log {}:\n{}",
                proc.name,
                proc.describe_exit(),
                proc.log_path().display(),
                proc.log_tail(40)
            );
        }
        match http.get(&url).send().await {
            // A 200 counts only if the listener is our child's: another test's process may
            // have taken the port before the child could bind it.
            Ok(resp)
                if resp.status().as_u16() == 200 && pid_listens_on(proc.pid(), addr.port()) =>
            {
                return Ok(());
            }
            Ok(resp) if resp.status().as_u16() == 200 => {
                last = "200 from a process that is not ours (port taken)".to_string()
            }
            Ok(resp) => last = format!("status {}", resp.status()),
            Err(e) => last = e.to_string(),
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready within {READY_TIMEOUT:?} (last /readyz: {last}); log {}:\n{}",
                proc.name,
                proc.log_path().display(),
                proc.log_tail(40)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// True when the process exited because another process took its free port first.
fn lost_port_race(proc: &mut Proc) -> bool {
    !proc.is_running()
        && proc
            .log_tail(40)
            .to_lowercase()
            .contains("address already in use")
}

/// Starts `spec` and waits for readiness, picking a new port if the first was taken meanwhile.
async fn start_ready(spec: &Spec, log_dir: &Path) -> anyhow::Result<(Proc, SocketAddr)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (mut proc, addr) = spec.spawn(log_dir)?;
        match wait_ready(&mut proc, addr).await {
            Ok(()) => return Ok((proc, addr)),
            Err(e) => {
                let port_taken = lost_port_race(&mut proc);
                // CI once saw chat-api exit with code 1 and an empty log: the service never
                // ran. Retry such a start (and say so) rather than fail the test on it.
                let never_ran = proc.died_before_start();
                if never_ran {
                    eprintln!(
                        "chat-testkit: {} {} without output; starting it again",
                        proc.name,
                        proc.describe_exit()
                    );
                }
                if !(port_taken || never_ran) || attempt >= PORT_ATTEMPTS {
                    return Err(e);
                }
            }
        }
    }
}

impl Stack {
    /// Starts the stack, panicking with the processes' output if it cannot.
    ///
    /// Call it from the test's own task (not from `spawn_blocking`): the children die with the
    /// thread that spawned them.
    pub async fn start(options: StackOptions) -> Stack {
        match Self::try_start(options).await {
            Ok(stack) => stack,
            Err(e) => panic!("cannot start the chat stack: {e:#}"),
        }
    }

    /// Starts one api and one gateway.
    pub async fn start_default() -> Stack {
        Self::start(StackOptions::default()).await
    }

    /// Starts the stack or says why it could not.
    pub async fn try_start(options: StackOptions) -> anyhow::Result<Stack> {
        if options.embedded || embedded_mode() {
            return Self::try_start_embedded(options).await;
        }
        let api_bin = binary("chat-api");
        let gateway_bin = binary("chat-gateway");
        let redis = options.redis.clone().unwrap_or_else(RedisTarget::from_env);
        redis.ensure_up().await?;
        if options.proxy_api_redis && redis.mode == RedisMode::Cluster {
            bail!("proxy_api_redis needs standalone Redis: cluster clients bypass a proxy");
        }
        let redis_url = redis.url_list();
        let db = TestDb::try_create()
            .await
            .context("creating the test database (is MariaDB running?)")?;
        let prefix = format!("t{}", random_hex(6));
        let secret = random_hex(32);
        let log_dir = std::env::temp_dir()
            .join("chat-testkit")
            .join(format!("{}-{prefix}", db.name()));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;

        let rust_log = std::env::var("CHAT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into());
        let common = vec![
            ("REDIS_URL".to_string(), redis_url.clone()),
            ("REDIS_MODE".to_string(), redis.mode_name().to_string()),
            ("CHAT_JWT_SECRET".to_string(), secret.clone()),
            ("CHAT_REDIS_PREFIX".to_string(), prefix.clone()),
            ("CHAT_LOG_FORMAT".to_string(), "text".to_string()),
            ("RUST_LOG".to_string(), rust_log),
            ("RUST_BACKTRACE".to_string(), "1".to_string()),
        ];

        let mut api_env = common.clone();
        let mut database_url = db.url();
        let mut mysql_proxy = None;
        if options.proxy_mysql {
            let proxy = TcpProxy::start(&host_port(&database_url, 3306)).await?;
            database_url = with_host_port(&database_url, proxy.addr());
            mysql_proxy = Some(proxy);
        }
        let mut redis_proxy = None;
        if options.proxy_api_redis {
            let proxy = TcpProxy::start(&host_port(&redis_url, 6379)).await?;
            let proxied = with_host_port(&redis_url, proxy.addr());
            api_env.retain(|(k, _)| k != "REDIS_URL");
            api_env.push(("REDIS_URL".into(), proxied));
            redis_proxy = Some(proxy);
        }
        api_env.push(("DATABASE_URL".into(), database_url));
        // Uploaded files stay inside the stack's own directory.
        let attachments_dir = log_dir.join("attachments");
        api_env.push((
            "CHAT_ATTACHMENTS_DIR".into(),
            attachments_dir.display().to_string(),
        ));
        api_env.extend(options.api_env.iter().cloned());
        let api_spec = Spec {
            name: "chat-api".into(),
            binary: api_bin,
            env: api_env,
        };
        let mut apis = Vec::new();
        let mut api_addrs = Vec::new();
        for n in 0..options.apis.max(1) {
            let (api, api_addr) = start_ready(&api_spec.replica(n), &log_dir).await?;
            apis.push(api);
            api_addrs.push(api_addr);
        }
        let api_urls: Vec<String> = api_addrs.iter().map(|a| format!("http://{a}")).collect();

        let specs: Vec<Spec> = (1..=options.gateways)
            .map(|n| {
                let mut env = common.clone();
                env.push(("CHAT_API_URL".into(), api_urls.join(",")));
                env.push(("CHAT_NODE_ID".into(), format!("gw{n}")));
                if let Some(ttl) = options.presence_ttl_ms {
                    env.push(("CHAT_PRESENCE_TTL_MS".into(), ttl.to_string()));
                }
                if let Some(timeout) = options.auth_timeout_ms {
                    env.push(("CHAT_AUTH_TIMEOUT_MS".into(), timeout.to_string()));
                }
                env.extend(options.gateway_env.iter().cloned());
                Spec {
                    name: format!("chat-gateway-gw{n}"),
                    binary: gateway_bin.clone(),
                    env,
                }
            })
            .collect();
        let started =
            futures_util::future::join_all(specs.iter().map(|s| start_ready(s, &log_dir))).await;
        let mut gateways = Vec::new();
        let mut gateway_addrs = Vec::new();
        for result in started {
            let (proc, addr) = result?;
            gateways.push(proc);
            gateway_addrs.push(addr);
        }
        let mut worker_common = common.clone();
        worker_common.extend(options.worker_env.iter().cloned());
        let mut workers = Vec::new();
        let mut worker_addrs = Vec::new();
        for n in 1..=options.workers {
            let (proc, addr) = start_ready(&worker_spec(&worker_common, n), &log_dir).await?;
            workers.push(proc);
            worker_addrs.push(addr);
        }
        Ok(Stack {
            apis,
            api_addrs,
            api_spec: Some(api_spec),
            gateways,
            gateway_addrs,
            prefix,
            secret,
            redis: Some(redis),
            log_dir,
            mysql_proxy,
            redis_proxy,
            workers,
            worker_addrs,
            worker_common,
            sqlite_url: None,
            db: Some(db),
        })
    }

    /// `CHAT_TEST_STACK=embedded`: one `chat-embedded` process (api and `options.gateways`
    /// gateways on SQLite and the in-memory bus) stands in for the separate binaries.
    async fn try_start_embedded(options: StackOptions) -> anyhow::Result<Stack> {
        if options.proxy_mysql || options.proxy_api_redis || options.workers > 0 {
            bail!(
                "embedded mode has no MySQL or Redis to proxy and no worker processes; \
                 this test needs the separate binaries (skip it under CHAT_TEST_STACK=embedded)"
            );
        }
        let prefix = format!("t{}", random_hex(6));
        let secret = random_hex(32);
        let log_dir = std::env::temp_dir()
            .join("chat-testkit")
            .join(format!("embedded-{prefix}"));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let sqlite_url = format!("sqlite://{}", log_dir.join("chat.db").display());
        let mut env = vec![
            ("DATABASE_URL".to_string(), sqlite_url.clone()),
            ("CHAT_JWT_SECRET".to_string(), secret.clone()),
            ("CHAT_REDIS_PREFIX".to_string(), prefix.clone()),
            ("CHAT_LOG_FORMAT".to_string(), "text".to_string()),
            (
                "RUST_LOG".to_string(),
                std::env::var("CHAT_TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
            ("RUST_BACKTRACE".to_string(), "1".to_string()),
            (
                "CHAT_ATTACHMENTS_DIR".to_string(),
                log_dir.join("attachments").display().to_string(),
            ),
        ];
        if let Some(ttl) = options.presence_ttl_ms {
            env.push(("CHAT_PRESENCE_TTL_MS".into(), ttl.to_string()));
        }
        if let Some(timeout) = options.auth_timeout_ms {
            env.push(("CHAT_AUTH_TIMEOUT_MS".into(), timeout.to_string()));
        }
        // The api's and the gateways' extra settings share one environment here.
        env.extend(options.api_env.iter().cloned());
        env.extend(options.gateway_env.iter().cloned());
        let binary = binary("chat-embedded");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let api_addr = free_addr()?;
            let gateway_addrs = (0..options.gateways.max(1))
                .map(|_| free_addr())
                .collect::<anyhow::Result<Vec<_>>>()?;
            let mut env = env.clone();
            env.push(("CHAT_API_LISTEN".into(), api_addr.to_string()));
            let ws_list: Vec<String> = gateway_addrs.iter().map(ToString::to_string).collect();
            env.push(("CHAT_WS_LISTEN".into(), ws_list.join(",")));
            let mut proc = Proc::spawn("chat-embedded", &binary, &env, &log_dir)?;
            let mut ready = wait_ready(&mut proc, api_addr).await;
            for addr in &gateway_addrs {
                if ready.is_ok() {
                    ready = wait_ready(&mut proc, *addr).await;
                }
            }
            match ready {
                Ok(()) => {
                    return Ok(Stack {
                        apis: vec![proc],
                        api_addrs: vec![api_addr],
                        api_spec: None,
                        gateways: Vec::new(),
                        gateway_addrs,
                        prefix,
                        secret,
                        redis: None,
                        log_dir,
                        mysql_proxy: None,
                        redis_proxy: None,
                        workers: Vec::new(),
                        worker_addrs: Vec::new(),
                        worker_common: Vec::new(),
                        sqlite_url: Some(sqlite_url),
                        db: None,
                    });
                }
                Err(e) => {
                    let port_taken = lost_port_race(&mut proc);
                    proc.kill();
                    if !port_taken || attempt >= PORT_ATTEMPTS {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// True when the stack is one `chat-embedded` process (see [`embedded_mode`]).
    pub fn is_embedded(&self) -> bool {
        self.sqlite_url.is_some()
    }

    /// Number of workers started so far (killed ones included).
    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// `http://127.0.0.1:PORT` of worker `i` (0-based): `/healthz`, `/readyz`, `/metrics`.
    pub fn worker_http_url(&self, i: usize) -> String {
        let addr = self.worker_addrs.get(i).unwrap_or_else(|| {
            panic!(
                "worker {i} does not exist (stack has {})",
                self.workers.len()
            )
        });
        format!("http://{addr}")
    }

    /// Starts one more worker (same environment, consumer name `wk<n>`) and returns its index.
    pub async fn start_worker(&mut self) -> usize {
        let n = self.workers.len() + 1;
        let spec = worker_spec(&self.worker_common, n);
        match start_ready(&spec, &self.log_dir).await {
            Ok((proc, addr)) => {
                self.workers.push(proc);
                self.worker_addrs.push(addr);
                n - 1
            }
            Err(e) => panic!("cannot start worker {n}: {e:#}"),
        }
    }

    fn worker_mut(&mut self, i: usize) -> &mut Proc {
        let n = self.workers.len();
        self.workers
            .get_mut(i)
            .unwrap_or_else(|| panic!("worker {i} does not exist (stack has {n})"))
    }

    /// SIGKILLs worker `i` (a crash: whatever it holds stays pending in the stream).
    pub fn kill_worker(&mut self, i: usize) {
        self.worker_mut(i).kill();
    }

    /// SIGTERMs worker `i` and waits for it to exit (panics if it does not within 10 s).
    pub async fn terminate_worker(&mut self, i: usize) -> ExitStatus {
        terminate(self.worker_mut(i)).await
    }

    /// The log of worker `i` so far.
    pub fn worker_log(&self, i: usize) -> String {
        self.workers
            .get(i)
            .map(|p| std::fs::read_to_string(p.log_path()).unwrap_or_default())
            .unwrap_or_default()
    }

    /// `http://127.0.0.1:PORT` of chat-api (the first replica).
    pub fn api_url(&self) -> String {
        self.api_url_of(0)
    }

    /// `http://127.0.0.1:PORT` of every chat-api replica.
    pub fn api_urls(&self) -> Vec<String> {
        (0..self.api_addrs.len())
            .map(|i| self.api_url_of(i))
            .collect()
    }

    /// Number of chat-api replicas started.
    pub fn api_count(&self) -> usize {
        self.api_addrs.len()
    }

    /// `http://127.0.0.1:PORT` of chat-api replica `i` (0-based).
    pub fn api_url_of(&self, i: usize) -> String {
        let addr = self.api_addrs.get(i).unwrap_or_else(|| {
            panic!(
                "api {i} does not exist (stack has {})",
                self.api_addrs.len()
            )
        });
        format!("http://{addr}")
    }

    fn api_mut(&mut self, i: usize) -> &mut Proc {
        assert!(!self.is_embedded(), "embedded mode has no api replicas");
        let n = self.apis.len();
        self.apis
            .get_mut(i)
            .unwrap_or_else(|| panic!("api {i} does not exist (stack has {n})"))
    }

    /// SIGKILLs chat-api replica `i` (a crash: no cleanup on its side).
    pub fn kill_api(&mut self, i: usize) {
        self.api_mut(i).kill();
    }

    /// Starts chat-api replica `i` again on its address (after [`Stack::kill_api`]) and waits
    /// until it is ready.
    pub async fn restart_api(&mut self, i: usize) -> anyhow::Result<()> {
        let spec = self
            .api_spec
            .as_ref()
            .context("embedded mode has no api replicas")?
            .replica(i);
        // A log of its own: the killed process's log stays as it was.
        let spec = Spec {
            name: format!("{}-restarted", spec.name),
            ..spec
        };
        let addr = self.api_addrs[i];
        let mut proc = spec.spawn_at(addr, &self.log_dir)?;
        wait_ready(&mut proc, addr).await?;
        *self.api_mut(i) = proc;
        Ok(())
    }

    /// An HTTP client for chat-api without a token.
    pub fn api(&self) -> ApiClient {
        ApiClient::new(&self.api_url())
    }

    /// Number of gateways started.
    pub fn gateway_count(&self) -> usize {
        self.gateway_addrs.len()
    }

    /// `http://127.0.0.1:PORT` of gateway `i` (0-based).
    pub fn gateway_http_url(&self, i: usize) -> String {
        format!("http://{}", self.gateway_addr(i))
    }

    /// `ws://127.0.0.1:PORT/ws` of gateway `i` (0-based).
    pub fn gateway_ws_url(&self, i: usize) -> String {
        format!("ws://{}/ws", self.gateway_addr(i))
    }

    /// The node id of gateway `i` (0-based): `gw{i+1}`.
    pub fn gateway_node_id(&self, i: usize) -> String {
        format!("gw{}", i + 1)
    }

    /// `127.0.0.1:PORT` of gateway `i` (0-based), for raw TCP clients.
    pub fn gateway_addr(&self, i: usize) -> SocketAddr {
        *self.gateway_addrs.get(i).unwrap_or_else(|| {
            panic!(
                "gateway {i} does not exist (stack has {})",
                self.gateways.len()
            )
        })
    }

    fn gateway_mut(&mut self, i: usize) -> &mut Proc {
        assert!(
            !self.is_embedded(),
            "embedded mode runs the gateways inside one process: they cannot be stopped one by one"
        );
        let n = self.gateways.len();
        self.gateways
            .get_mut(i)
            .unwrap_or_else(|| panic!("gateway {i} does not exist (stack has {n})"))
    }

    /// SIGKILLs gateway `i` (a crash: no cleanup on its side).
    pub fn kill_gateway(&mut self, i: usize) {
        self.gateway_mut(i).kill();
    }

    /// SIGTERMs gateway `i` and waits for it to exit (panics if it does not within 10 s).
    pub async fn terminate_gateway(&mut self, i: usize) -> ExitStatus {
        terminate(self.gateway_mut(i)).await
    }

    /// SIGTERMs chat-api and waits for it to exit (panics if it does not within 10 s).
    pub async fn terminate_api(&mut self) -> ExitStatus {
        // In embedded mode, the one process.
        terminate(&mut self.apis[0]).await
    }

    /// Panics (with the log tail) if a process of the stack is no longer running.
    pub fn assert_running(&mut self) {
        for proc in (self.apis.iter_mut())
            .chain(self.gateways.iter_mut())
            .chain(self.workers.iter_mut().filter(|w| !w.known_exited()))
        {
            assert!(
                proc.is_running(),
                "{} {}; log {}:\n{}",
                proc.name,
                proc.describe_exit(),
                proc.log_path().display(),
                proc.log_tail(40)
            );
        }
    }

    /// The `CHAT_REDIS_PREFIX` of this stack.
    pub fn redis_prefix(&self) -> &str {
        &self.prefix
    }

    /// The `CHAT_ATTACHMENTS_DIR` given to chat-api (unless `api_env` overrode it).
    pub fn attachments_dir(&self) -> PathBuf {
        self.log_dir.join("attachments")
    }

    /// The Redis this stack runs on (to inspect its keys).
    pub fn redis(&self) -> &RedisTarget {
        self.redis
            .as_ref()
            .unwrap_or_else(|| panic!("embedded mode has no Redis (the bus is in memory)"))
    }

    /// The `CHAT_JWT_SECRET` of this stack (to mint tokens).
    pub fn jwt_secret(&self) -> &str {
        &self.secret
    }

    /// The `DATABASE_URL` given to chat-api (a sqlite:// URL in embedded mode).
    pub fn database_url(&self) -> String {
        match (&self.db, &self.sqlite_url) {
            (Some(db), _) => db.url(),
            (None, Some(url)) => url.clone(),
            (None, None) => unreachable!("a stack has a MySQL database or a SQLite file"),
        }
    }

    /// The proxy between chat-api and MySQL (needs `StackOptions::proxy_mysql`).
    pub fn mysql_proxy(&self) -> &TcpProxy {
        self.mysql_proxy
            .as_ref()
            .unwrap_or_else(|| panic!("start the stack with proxy_mysql: true"))
    }

    /// The proxy between chat-api and Redis (needs `StackOptions::proxy_api_redis`).
    pub fn redis_proxy(&self) -> &TcpProxy {
        self.redis_proxy
            .as_ref()
            .unwrap_or_else(|| panic!("start the stack with proxy_api_redis: true"))
    }

    /// `SELECT COUNT(*)` of a table in the stack's database, MySQL or SQLite (for tests that
    /// check what a failed request left behind).
    pub async fn count_rows(&self, table: &str) -> anyhow::Result<i64> {
        use sqlx::Connection;
        let sql = format!("SELECT COUNT(*) FROM {table}");
        let (count,): (i64,) = match (&self.db, &self.sqlite_url) {
            (Some(db), _) => {
                let mut conn = db.connect().await?;
                sqlx::query_as(&sql).fetch_one(&mut conn).await?
            }
            (None, Some(url)) => {
                let mut conn = sqlx::SqliteConnection::connect(url).await?;
                sqlx::query_as(&sql).fetch_one(&mut conn).await?
            }
            (None, None) => bail!("the stack has no database"),
        };
        Ok(count)
    }

    /// The MySQL test database.
    pub fn db(&self) -> &TestDb {
        self.db
            .as_ref()
            .unwrap_or_else(|| panic!("embedded mode has no MySQL database (it runs on SQLite)"))
    }

    /// Where the processes' logs are.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The last `lines` lines of every process's log, for failure messages.
    pub fn log_tails(&self, lines: usize) -> String {
        (self.apis.iter())
            .chain(self.gateways.iter())
            .chain(self.workers.iter())
            .map(|p| {
                format!(
                    "---- {} ({}) ----\n{}",
                    p.name,
                    p.log_path().display(),
                    p.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Worker `n` (1-based): consumer name `wk<n>`.
fn worker_spec(common: &[(String, String)], n: usize) -> Spec {
    let mut env = common.to_vec();
    env.push(("CHAT_WORKER_ID".into(), format!("wk{n}")));
    Spec {
        name: format!("chat-worker-wk{n}"),
        binary: binary("chat-worker"),
        env,
    }
}

async fn terminate(proc: &mut Proc) -> ExitStatus {
    let (status, in_time) = proc.terminate(Duration::from_secs(10)).await;
    assert!(
        in_time,
        "{} did not exit within 10 s of SIGTERM; log:\n{}",
        proc.name,
        proc.log_tail(40)
    );
    status.unwrap_or_else(|| panic!("{} ended but its status is unknown", proc.name))
}

impl Drop for Stack {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!(
                "chat-testkit: the test failed; process logs are in {}\n{}",
                self.log_dir.display(),
                self.log_tails(60)
            );
        }
        for proc in self.gateways.iter_mut().chain(self.workers.iter_mut()) {
            proc.kill();
        }
        for api in &mut self.apis {
            api.kill();
        }
        let Some(redis) = self.redis.clone() else {
            self.remove_logs(panicking);
            return;
        };
        let prefix = self.prefix.clone();
        let cleaner = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            if let Err(e) = runtime.block_on(redis.delete_prefix(&prefix)) {
                eprintln!("chat-testkit: cannot delete Redis keys {prefix}:*: {e:#}");
            }
        });
        let _ = cleaner.join();
        self.remove_logs(panicking);
    }
}

impl Stack {
    /// Deletes the log directory (and in embedded mode the SQLite file in it) unless the test
    /// failed or `CHAT_TEST_KEEP_LOGS=1`.
    fn remove_logs(&self, panicking: bool) {
        let keep = std::env::var("CHAT_TEST_KEEP_LOGS").is_ok_and(|v| v == "1");
        if !panicking && !keep {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

/// `CHAT_TEST_STACK=embedded` runs every stack as one `chat-embedded` process (SQLite and the
/// in-memory bus) instead of chat-api and gateways on MySQL and Redis.
pub fn embedded_mode() -> bool {
    std::env::var("CHAT_TEST_STACK").is_ok_and(|v| v == "embedded")
}
