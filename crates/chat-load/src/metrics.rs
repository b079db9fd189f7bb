//! What a worker measured in the last second, handed to the coordinator as one JSON line on
//! the worker's stdout: counter increments and trend samples under the k6 scripts' metric names
//! (so plot.py and the summaries read them unchanged), tagged like theirs (`kind=socket,code=…`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Counter and trend names, as in loadtest/*.js.
pub mod name {
    pub const AUTH_OK: &str = "ws_auth_ok";
    pub const ERRORS: &str = "ws_errors";
    pub const CLOSED: &str = "ws_closed";
    pub const CLOSED_UNEXPECTED: &str = "ws_closed_unexpected";
    pub const SESSIONS_FAILED: &str = "ws_sessions_failed";
    pub const SESSIONS_COMPLETED: &str = "ws_sessions_completed";
    pub const DROPPED_ITERATIONS: &str = "dropped_iterations";
    pub const RESUMED: &str = "ws_resumed";
    pub const DROPPED: &str = "ws_dropped";
    pub const SENT: &str = "msgs_sent";
    pub const ACKED: &str = "msgs_acked";
    pub const EXPECTED: &str = "msgs_expected";
    pub const RECEIVED: &str = "msgs_received";
    pub const LATE: &str = "msgs_late";
    pub const LOST: &str = "msgs_lost";
    pub const UNACKED: &str = "msgs_unacked";
    pub const DUPLICATE: &str = "msgs_duplicate";
    pub const REFUSED: &str = "sends_refused";
    pub const REPLAYS_REFUSED: &str = "final_replays_refused";
    /// A resume's replay refused (`unavailable`): asked again from the same cursor.
    pub const RESUMES_REFUSED: &str = "resumes_refused";
    /// A socket refused before `auth_ok` (`unavailable`, then 1012): the client reconnects.
    pub const AUTH_REFUSED: &str = "auth_refused";
    pub const AUTHED_USERS: &str = "users_authenticated";
    pub const SESSION_AUTH: &str = "session_auth_ms";
    pub const AUTH: &str = "auth_ms";
    pub const DELIVERY: &str = "chat_delivery_ms";
    pub const SEND_ACK: &str = "send_ack_ms";
    pub const RESUME: &str = "resume_ms";
    /// storm: from the reconnect attempt (after the jitter) to `synced`.
    pub const RESUME_RECONNECT: &str = "resume_reconnect_ms";
}

/// One worker's second.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Tick {
    /// Unix time of the end of the second, in seconds.
    pub t: f64,
    pub worker: usize,
    /// Sockets open (or sessions running) now.
    pub active: u64,
    /// The worker's CPU time so far (user + system), seconds.
    pub cpu_s: f64,
    /// (name, tags, increment)
    pub counters: Vec<(String, String, f64)>,
    /// (name, tags, samples in ms)
    pub samples: Vec<(String, String, Vec<f32>)>,
    /// The worker's last tick: its scenario is over.
    pub done: bool,
}

/// A worker's measurements since its last tick.
#[derive(Debug, Default)]
pub struct Recorder {
    counters: HashMap<(&'static str, String), f64>,
    samples: HashMap<(&'static str, &'static str), Vec<f32>>,
}

impl Recorder {
    pub fn add(&mut self, name: &'static str, value: f64) {
        *self.counters.entry((name, String::new())).or_default() += value;
    }

    /// A counter with tags, e.g. `("ws_errors", "kind=socket,code=reset")`.
    pub fn add_tagged(&mut self, name: &'static str, tags: String, value: f64) {
        *self.counters.entry((name, tags)).or_default() += value;
    }

    pub fn sample(&mut self, name: &'static str, tags: &'static str, ms: f64) {
        self.samples
            .entry((name, tags))
            .or_default()
            .push(ms as f32);
    }

    /// Everything since the last call, as a tick (the caller fills in time, worker, CPU).
    pub fn drain(&mut self) -> Tick {
        Tick {
            counters: self
                .counters
                .drain()
                .filter(|(_, v)| *v != 0.0)
                .map(|((n, t), v)| (n.to_string(), t, v))
                .collect(),
            samples: self
                .samples
                .drain()
                .map(|((n, t), v)| (n.to_string(), t.to_string(), v))
                .collect(),
            ..Tick::default()
        }
    }
}

/// This process's CPU time (user + system) in seconds, from /proc/self/stat.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // utime, stime: fields 14 and 15 of the line, in USER_HZ (100 on Linux).
    Some((ticks(11)? + ticks(12)?) / 100.0)
}

/// Resident memory of a process in KiB, from /proc/<pid>/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests;
