//! The command line. Every knob has an environment twin named as in the k6 scripts
//! (`RAMP_S`, `HOLD_S`, `SEND_EVERY_S`, ...), so `loadtest/run.sh`'s `NAME=VALUE` pairs drive
//! both load drivers the same way. Durations left unset take the scenario's default (the k6
//! script's), resolved in [`crate::plan::Timing`].

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Short sessions at a rising arrival rate (churn.js): connect, authenticate, send MSGS
    /// messages to the pair chat, see them come back, close.
    Churn,
    /// Pairs (and groups) chatting (chat.js): delivery latency, loss by seq gaps and by totals.
    Chat,
    /// Hold VUS idle authenticated sockets (connect.js's two-step ramp), answering pings.
    Connect,
    /// chat, and a gateway killed mid-run: dropped clients resume on another gateway.
    Storm,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Churn => "churn",
            Scenario::Chat => "chat",
            Scenario::Connect => "connect",
            Scenario::Storm => "storm",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthVia {
    /// `?token=` on the upgrade URL.
    Query,
    /// A first `auth` frame once the socket is open.
    Frame,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KillSignal {
    /// SIGKILL: a crash, the sockets drop without a close frame.
    Kill,
    /// SIGTERM: a drain, the gateway closes its sockets with 1012.
    Term,
}

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-load",
    version,
    about = "Load driver for the chat backend over its public WebSocket contract",
    long_about = "Load driver for the chat backend over its public WebSocket contract \
(docs/protocol.md). Runs the k6 scenarios' shapes (churn, chat, connect, plus storm: a gateway \
killed mid-run) at a small fraction of k6's CPU per session, spreads its sockets over several \
source addresses and worker processes, prints progress once a second and writes the same \
summary.json, summary.txt, report.json and raw/metrics.json as loadtest/run.sh's k6 runs.\n\n\
Usually started by loadtest/run.sh (DRIVER=chat-load); every flag has an environment twin."
)]
pub struct Args {
    /// Which scenario to run.
    #[arg(value_enum, env = "SCENARIO")]
    pub scenario: Scenario,

    /// Virtual users: concurrent sockets (chat, connect, storm) or the most concurrent sessions
    /// (churn, whose rate defaults to VUS x 0.06 per second).
    #[arg(long, env = "VUS")]
    pub vus: usize,

    /// Users written by chat-provision ([{id, token, pair_chat_id?, ...}]).
    #[arg(long, env = "USERS_FILE")]
    pub users_file: PathBuf,

    /// Gateway WebSocket URLs, comma-separated; user n goes to gateway n mod their number.
    #[arg(
        long,
        env = "WS_URLS",
        value_delimiter = ',',
        default_value = "ws://127.0.0.1:18281/ws,ws://127.0.0.1:18283/ws"
    )]
    pub ws_urls: Vec<String>,

    /// Process ids of the gateways, in the order of WS_URLS (storm kills one; every scenario
    /// reads their memory before and at the peak).
    #[arg(long, env = "GATEWAY_PIDS", value_delimiter = ',')]
    pub gateway_pids: Vec<u32>,

    /// chat-api's base URL, or its replicas' comma-separated (storm: their `/metrics` are read at
    /// the kill and after the reconnects, to count the sync requests the storm cost; none: not
    /// counted).
    #[arg(long, env = "API_URL")]
    pub api_url: Option<String>,

    /// Where summary.json, summary.txt, report.json and raw/metrics.json go (none: stdout only).
    #[arg(long, env = "RESULTS_DIR")]
    pub results_dir: Option<PathBuf>,

    /// How sockets authenticate (default: query for churn, frame otherwise, like the k6 scripts).
    #[arg(long, env = "AUTH_VIA", value_enum)]
    pub auth_via: Option<AuthVia>,

    /// Source addresses to bind before connecting, comma-separated (each holds about 28,000
    /// ports towards one gateway); default 127.0.0.1 up to 127.0.0.N with N from SOURCE_ADDRS_N.
    #[arg(long, env = "SOURCE_ADDRS", value_delimiter = ',')]
    pub source_addrs: Vec<Ipv4Addr>,

    /// How many loopback source addresses to use when SOURCE_ADDRS is not given.
    #[arg(long, env = "SOURCE_ADDRS_N", default_value_t = 8)]
    pub source_addrs_n: u8,

    /// Worker processes (0: one per SOCKETS_PER_WORKER concurrent sockets).
    #[arg(long, env = "WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Concurrent sockets one worker process holds at most (the open-files limit is per process).
    #[arg(long, env = "SOCKETS_PER_WORKER", default_value_t = 18_000)]
    pub sockets_per_worker: usize,

    // --- durations (seconds) ---
    /// churn, chat, storm: ramp-up.
    #[arg(long, env = "RAMP_S")]
    pub ramp_s: Option<f64>,
    /// churn, chat, storm: time at the peak.
    #[arg(long, env = "HOLD_S")]
    pub hold_s: Option<f64>,
    /// churn: ramp-down of the arrival rate.
    #[arg(long, env = "DOWN_S")]
    pub down_s: Option<f64>,
    /// connect: ramp to two thirds of VUS.
    #[arg(long, env = "RAMP1_S")]
    pub ramp1_s: Option<f64>,
    /// connect: hold at two thirds.
    #[arg(long, env = "HOLD1_S")]
    pub hold1_s: Option<f64>,
    /// connect: ramp to VUS.
    #[arg(long, env = "RAMP2_S")]
    pub ramp2_s: Option<f64>,
    /// connect: hold at VUS.
    #[arg(long, env = "HOLD2_S")]
    pub hold2_s: Option<f64>,
    /// chat, storm: quiet time after the ramp before sending.
    #[arg(long, env = "SETTLE_S")]
    pub settle_s: Option<f64>,
    /// chat, storm: quiet time before the end.
    #[arg(long, env = "DRAIN_S")]
    pub drain_s: Option<f64>,

    // --- churn ---
    /// churn: new sessions per second at the peak (default VUS x 0.06).
    #[arg(long, env = "RATE")]
    pub rate: Option<f64>,
    /// churn: length of a session.
    #[arg(long, env = "SESSION_S", default_value_t = 12.0)]
    pub session_s: f64,
    /// churn: messages a session sends to its pair chat.
    #[arg(long, env = "MSGS", default_value_t = 3)]
    pub msgs: u32,
    /// churn: how long a closing session waits for the echoes of acked messages.
    #[arg(long, env = "ECHO_GRACE_S", default_value_t = 2.0)]
    pub echo_grace_s: f64,

    // --- chat, storm ---
    /// chat, storm: seconds between a user's messages to its pair chat.
    #[arg(long, env = "SEND_EVERY_S", default_value_t = 10.0)]
    pub send_every_s: f64,
    /// chat, storm: seconds between a user's messages to its group (0: none).
    #[arg(long, env = "GROUP_SEND_EVERY_S", default_value_t = 60.0)]
    pub group_send_every_s: f64,
    /// chat: end each session after about this long and resume (0: never).
    #[arg(long, env = "RECONNECT_EVERY_S", default_value_t = 0.0)]
    pub reconnect_every_s: f64,
    /// chat, storm: replay from the last cursor at the end, so late counts as late, not lost.
    #[arg(long, env = "FINAL_SYNC", default_value_t = 1)]
    pub final_sync: u8,
    /// chat, storm: the final replays are spread over this many seconds.
    #[arg(long, env = "FINAL_SPREAD_S", default_value_t = 5.0)]
    pub final_spread_s: f64,
    /// chat, storm: close once the final replay is done and nothing came for this long.
    #[arg(long, env = "FINAL_QUIET_MS", default_value_t = 1000)]
    pub final_quiet_ms: u64,
    /// chat, storm: give up on the final replay after this long.
    #[arg(long, env = "FINAL_SYNC_TIMEOUT_S", default_value_t = 12.0)]
    pub final_sync_timeout_s: f64,

    // --- storm ---
    /// storm: seconds after the start at which a gateway is killed (default: mid-hold).
    #[arg(long, env = "KILL_AT_S")]
    pub kill_at_s: Option<f64>,
    /// storm: which gateway to kill, 1-based in WS_URLS order.
    #[arg(long, env = "KILL_GATEWAY", default_value_t = 1)]
    pub kill_gateway: usize,
    /// storm: the signal.
    #[arg(long, env = "KILL_SIGNAL", value_enum, default_value_t = KillSignal::Kill)]
    pub kill_signal: KillSignal,
    /// storm: a dropped client waits a random time up to this long before reconnecting.
    #[arg(long, env = "RECONNECT_JITTER_S", default_value_t = 2.0)]
    pub reconnect_jitter_s: f64,

    // --- connect ---
    /// connect: an application `ping` frame every this many seconds on each socket (0: only
    /// the WebSocket pongs to the server's pings, which keep a socket alive).
    #[arg(long, env = "PING_EVERY_S", default_value_t = 0.0)]
    pub ping_every_s: f64,

    // --- limits of the thresholds (the k6 scripts' names and defaults) ---
    /// Threshold: handshake+auth p99 (churn 50 ms, connect 100 ms).
    #[arg(long, env = "SESSION_AUTH_P99_MS")]
    pub session_auth_p99_ms: Option<f64>,
    /// Threshold: open -> auth_ok p95 (connect).
    #[arg(long, env = "AUTH_P95_MS", default_value_t = 50.0)]
    pub auth_p95_ms: f64,
    /// Threshold: open -> auth_ok p99 (connect).
    #[arg(long, env = "AUTH_P99_MS", default_value_t = 100.0)]
    pub auth_p99_ms: f64,
    /// Threshold: delivery p95 (chat, storm).
    #[arg(long, env = "DELIVERY_P95_MS", default_value_t = 100.0)]
    pub delivery_p95_ms: f64,
    /// Threshold: delivery p99 (chat, storm 250 ms; churn 250 ms).
    #[arg(long, env = "DELIVERY_P99_MS", default_value_t = 250.0)]
    pub delivery_p99_ms: f64,
    /// Threshold: delivery p50 (0: none).
    #[arg(long, env = "DELIVERY_P50_MS", default_value_t = 0.0)]
    pub delivery_p50_ms: f64,
    /// Threshold: storm's resume time (drop -> synced) p99.
    #[arg(long, env = "RESUME_P99_MS", default_value_t = 5000.0)]
    pub resume_p99_ms: f64,
    /// Threshold: the gateways' RSS growth per socket at the peak, in bytes (0: not checked).
    #[arg(long, env = "RSS_PER_SOCKET_MAX_B", default_value_t = 0.0)]
    pub rss_per_socket_max_b: f64,
    /// The scenarios' timers (sends, session ends, arrivals) are rounded up to this many ms, so
    /// that many sockets' timers share one wakeup of a worker (0: exact).
    #[arg(long, env = "TIMER_GRAIN_MS", default_value_t = crate::ctx::DEFAULT_TIMER_GRAIN_MS)]
    pub timer_grain_ms: u64,

    /// Give up on an auth_ok after this long.
    #[arg(long, env = "AUTH_TIMEOUT_S", default_value_t = 10.0)]
    pub auth_timeout_s: f64,

    // --- internal: set by the coordinator for its workers ---
    /// Run as worker N of --workers (internal).
    #[arg(long, hide = true)]
    pub worker_index: Option<usize>,
    /// The scenario's time zero, ms since the Unix epoch (internal).
    #[arg(long, hide = true)]
    pub start_at_ms: Option<u64>,
    /// Number of workers the coordinator started (internal).
    #[arg(long, hide = true)]
    pub worker_count: Option<usize>,
}

impl Args {
    pub fn auth_via(&self) -> AuthVia {
        self.auth_via.unwrap_or(match self.scenario {
            Scenario::Churn => AuthVia::Query,
            _ => AuthVia::Frame,
        })
    }

    pub fn source_addrs(&self) -> Vec<Ipv4Addr> {
        if !self.source_addrs.is_empty() {
            return self.source_addrs.clone();
        }
        (1..=self.source_addrs_n.max(1))
            .map(|n| Ipv4Addr::new(127, 0, 0, n))
            .collect()
    }
}
