//! One simulated client ([`run_client`]): its report, its state and its main loop. Sending is in
//! `send`, editing and deleting its own messages (and seeing others' edits and deletions) in
//! `changes`, the socket's life (connect, authenticate, reconnect) in `connection`, and what it
//! does with each event in `events`.

mod changes;
mod connection;
mod events;
mod send;

pub use changes::{AckedChange, ChangeKind, SeenState};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Shared;
use crate::ws::{Frame, WsClient};

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
    /// Edits and deletions of its own messages that the server acked, in order.
    pub changes: Vec<AckedChange>,
    /// Message id → the latest state of an edited or deleted message this client saw
    /// (`message_updated`, or a replayed `new_message` that already shows it).
    pub updates_seen: HashMap<u64, SeenState>,
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
    /// `Some`: an edit or deletion of one of the client's messages, not a new message.
    change: Option<changes::PendingChange>,
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

pub(super) fn message_fields(message: &Value) -> Option<(u64, u64, u64)> {
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
