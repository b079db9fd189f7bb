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
//!   with what the user received, and each edit or deletion a client made with the state every
//!   other member ended up with (`updates`); [`verify_history`] compares the acked messages and
//!   changes with what the database holds.
//!
//! Duplicates come in two kinds. A *dropped* duplicate is a repeat the protocol allows (a
//! replay after a reconnect or a `resume` frame may repeat events the client already has): the
//! client drops it by id. A *duplicate* is the same id delivered twice on one socket's live
//! stream with no resume in between: the protocol promises that never happens, so it counts as a
//! failure, as does a chat's `seq` going backwards within one live stream (`out_of_order`).
//!
//! Here: the run's configuration ([`ChaosConfig`], [`ResumeMode`]). `redis`, `gateways` and
//! `shared` hold the processes and the state the clients share, `client` the simulated client,
//! `checker` the verdict.

mod checker;
mod client;
mod gateways;
mod redis;
mod shared;
#[cfg(test)]
mod tests;
mod updates;

pub use checker::{FaultResult, Verdict, check, verify_history};
pub use client::{
    AckedChange, AckedMessage, Anomaly, ChangeKind, ClientReport, ClientSpec, PhaseCounters,
    SeenState, run_client,
};
pub use gateways::GatewayPool;
pub use redis::PrivateRedis;
pub use shared::Shared;

use std::time::Duration;

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
