//! What every socket task of a worker shares: the settings, the users, the gateways, the
//! scenario's clock, and the recorder (a worker is one thread, so plain `Rc`/`RefCell`).

use std::cell::{Cell, RefCell};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde::Deserialize;
use tokio::time::Instant;

use crate::args::{Args, AuthVia};
use crate::metrics::Recorder;
use crate::plan::{self, Timing};
use crate::ws::Target;

/// One line of chat-provision's output.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    pub id: u64,
    pub token: String,
    #[serde(default)]
    pub pair_chat_id: Option<u64>,
    #[serde(default)]
    pub group_chat_id: Option<u64>,
    #[serde(default)]
    pub group_size: Option<u64>,
}

pub fn load_users(path: &Path) -> anyhow::Result<Vec<User>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let users: Vec<User> = serde_json::from_slice(&text)
        .with_context(|| format!("{}: not chat-provision's output", path.display()))?;
    anyhow::ensure!(!users.is_empty(), "{} holds no users", path.display());
    Ok(users)
}

pub struct Ctx {
    pub args: Args,
    pub timing: Timing,
    pub users: Vec<User>,
    pub targets: Vec<Target>,
    pub addrs: Vec<Ipv4Addr>,
    pub worker: usize,
    pub workers: usize,
    /// The scenario's time zero.
    pub start: Instant,
    pub rec: RefCell<Recorder>,
    /// Sockets open now (or churn sessions running).
    pub active: Cell<u64>,
    /// Gateways known to be gone (storm: the killed one), by index.
    pub dead: RefCell<Vec<bool>>,
}

impl Ctx {
    pub fn at(&self, secs: f64) -> Instant {
        self.start + Duration::from_secs_f64(secs.max(0.0))
    }

    /// `t` rounded up to the timer grain (TIMER_GRAIN_MS, see [`DEFAULT_TIMER_GRAIN_MS`]) since
    /// time zero: timers of many sockets then fire in one wakeup of the worker's thread instead
    /// of one each.
    pub fn coarse(&self, t: Instant) -> Instant {
        let grain = self.args.timer_grain_ms.saturating_mul(1000);
        if t <= self.start || grain == 0 {
            return t;
        }
        let since = (t - self.start).as_micros() as u64;
        self.start + Duration::from_micros(since.div_ceil(grain) * grain)
    }

    /// Seconds since time zero (negative before it).
    pub fn elapsed(&self) -> f64 {
        let now = Instant::now();
        if now >= self.start {
            (now - self.start).as_secs_f64()
        } else {
            -((self.start - now).as_secs_f64())
        }
    }

    pub fn gateway_of(&self, k: usize) -> usize {
        plan::gateway_of(k, self.targets.len())
    }

    pub fn source_of(&self, k: usize) -> Ipv4Addr {
        plan::source_of(k, self.targets.len(), &self.addrs)
    }

    /// The upgrade's query string for a user: `?token=` with query auth, and `since`.
    pub fn query(&self, user: &User, since: Option<&str>) -> String {
        let mut q = String::new();
        if self.args.auth_via() == AuthVia::Query {
            q.push_str("?token=");
            q.push_str(&user.token);
        }
        if let Some(since) = since {
            q.push(if q.is_empty() { '?' } else { '&' });
            q.push_str("since=");
            q.push_str(since);
        }
        q
    }

    /// A gateway other than `gw` that is not known to be dead (storm's reconnects).
    pub fn other_gateway(&self, gw: usize) -> usize {
        let n = self.targets.len();
        let dead = self.dead.borrow();
        (1..=n)
            .map(|d| (gw + d) % n)
            .find(|g| !dead.get(*g).copied().unwrap_or(false))
            .unwrap_or(gw)
    }

    pub fn count(&self, name: &'static str, v: f64) {
        self.rec.borrow_mut().add(name, v);
    }

    pub fn count_tagged(&self, name: &'static str, tags: String) {
        self.rec.borrow_mut().add_tagged(name, tags, 1.0);
    }

    pub fn sample(&self, name: &'static str, tags: &'static str, ms: f64) {
        self.rec.borrow_mut().sample(name, tags, ms);
    }
}

/// The default granularity of the scenarios' timers (sends, session ends, arrivals). Waking a thread
/// costs a context switch, which on this VM was the largest part of the driver's CPU per session
/// at 150 sessions/s (20,000 switches for 1,800 sessions); timers rounded up to 10 ms share
/// wakeups. Latencies are unaffected: they are measured from when a frame is actually written
/// to when one is read, not from the timer.
pub const DEFAULT_TIMER_GRAIN_MS: u64 = 10;

/// Microseconds since the Unix epoch: message texts carry it, so delivery is measured on one
/// clock from the sender's write to the receiver's read.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Counts an open socket for as long as it lives.
pub struct ActiveGuard<'a>(&'a Cell<u64>);

impl<'a> ActiveGuard<'a> {
    pub fn new(active: &'a Cell<u64>) -> Self {
        active.set(active.get() + 1);
        ActiveGuard(active)
    }
}

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// The wait before attempt `attempts + 1` of a refused send: doubling from 200 ms, at most
/// 3 s, with jitter (lib/common.js's retryDelayMs).
pub fn retry_delay(attempts: u32) -> Duration {
    let backoff = (200.0 * 2f64.powi(attempts.saturating_sub(1) as i32)).min(3000.0);
    Duration::from_secs_f64(backoff * (0.5 + rand::random::<f64>()) / 1000.0)
}

/// Error codes after which a send goes again with the same client_msg_id, as an app would.
pub fn retryable(code: &str) -> bool {
    code == "unavailable" || code == "rate_limited"
}
