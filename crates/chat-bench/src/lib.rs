//! Benchmarks that talk to a running system over its public contract only (REST + WebSocket),
//! so they measure what a client sees. Shared helpers live here; each benchmark is a binary.

mod redis_stats;
pub use redis_stats::RedisStats;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A registered user: id and token.
pub struct Account {
    pub id: u64,
    pub token: String,
}

pub struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("POST {path} answered {status}: {body}");
        }
        Ok(body)
    }

    /// Registers a fresh user with a random name.
    pub async fn register(&self, tag: &str) -> anyhow::Result<Account> {
        let username = format!("{tag}{:08x}", rand::random::<u32>());
        let body = self
            .post(
                "/v1/auth/register",
                None,
                json!({"username": username, "password": "bench-password"}),
            )
            .await?;
        Ok(Account {
            id: body["user"]["id"].as_u64().context("user id")?,
            token: body["token"].as_str().context("token")?.to_string(),
        })
    }
}

/// Posts `sent_at.len()` messages with `concurrency` requests in flight, message `i` to
/// `chats[i % chats.len()]`, recording in `sent_at[i]` when it was sent; `body(i)` builds its
/// request body.
pub async fn send_concurrently(
    api: Arc<Api>,
    token: &str,
    chats: &[u64],
    sent_at: Arc<Vec<OnceLock<Instant>>>,
    concurrency: usize,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> anyhow::Result<()> {
    send_paced(api, token, chats, sent_at, concurrency, None, body).await
}

/// [`send_concurrently`], with message `i` not sent before `i * interval` from the start when
/// an interval is given: an open-loop rate, so that latency is measured at a load the stack
/// keeps up with instead of in the queue a closed loop of `concurrency` requests builds.
pub async fn send_paced(
    api: Arc<Api>,
    token: &str,
    chats: &[u64],
    sent_at: Arc<Vec<OnceLock<Instant>>>,
    concurrency: usize,
    interval: Option<Duration>,
    body: impl Fn(usize) -> Value + Send + Sync + 'static,
) -> anyhow::Result<()> {
    anyhow::ensure!(!chats.is_empty(), "no chat to send to");
    let start = tokio::time::Instant::now();
    let total = sent_at.len();
    let chats: Arc<[u64]> = chats.into();
    let next = Arc::new(AtomicUsize::new(0));
    let body = Arc::new(body);
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (api, next, sent_at, body) = (api.clone(), next.clone(), sent_at.clone(), body.clone());
        let chats = chats.clone();
        let token = token.to_string();
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return anyhow::Ok(());
                }
                if let Some(interval) = interval {
                    let offset = interval.mul_f64(i as f64);
                    tokio::time::sleep_until(start + offset).await;
                }
                let chat_id = chats[i % chats.len()];
                let _ = sent_at[i].set(Instant::now());
                api.post(
                    &format!("/v1/chats/{chat_id}/messages"),
                    Some(&token),
                    body(i),
                )
                .await?;
            }
        }));
    }
    for sender in senders {
        sender.await??;
    }
    Ok(())
}

/// Opens an authenticated socket (token in the query) and waits for `auth_ok`.
pub async fn connect(ws_url: &str, token: &str) -> anyhow::Result<Socket> {
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("{ws_url}?token={token}"))
        .await
        .with_context(|| format!("connecting {ws_url}"))?;
    let first = next_json(&mut socket, Duration::from_secs(10)).await?;
    if first["type"] != "auth_ok" {
        bail!("expected auth_ok, got {first}");
    }
    Ok(socket)
}

/// The next JSON text frame.
pub async fn next_json(socket: &mut Socket, limit: Duration) -> anyhow::Result<Value> {
    Ok(serde_json::from_str(&next_text(socket, limit).await?)?)
}

/// The next text frame, unparsed: a reader of many frames parses only the fields it needs.
pub async fn next_text(socket: &mut Socket, limit: Duration) -> anyhow::Result<Utf8Bytes> {
    loop {
        let frame = tokio::time::timeout(limit, socket.next())
            .await
            .context("timed out waiting for a frame")?
            .context("socket closed")??;
        match frame {
            Message::Text(text) => return Ok(text),
            Message::Close(close) => bail!("socket closed: {close:?}"),
            _ => continue,
        }
    }
}

/// Resident set size of process `pid` in KiB (Linux `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the process running?)"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// CPU time (user + system) process `pid` has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let (user, system) = cpu_split(pid)?;
    Ok(user + system)
}

/// CPU time process `pid` has used so far in user mode and in the kernel: a gateway's write
/// syscalls (and the loopback receiver's TCP work inside them) are its system time.
pub fn cpu_split(pid: u32) -> anyhow::Result<(f64, f64)> {
    cpu_times_in(&format!("/proc/{pid}/stat"))
}

/// CPU time (user + system) the calling thread has used so far.
pub fn thread_cpu_seconds() -> anyhow::Result<f64> {
    let (user, system) = cpu_times_in("/proc/thread-self/stat")?;
    Ok(user + system)
}

fn cpu_times_in(stat_path: &str) -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string(stat_path)
        .with_context(|| format!("reading {stat_path} (is the process running?)"))?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let after_name = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("malformed {stat_path}"))?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no field {i} in {stat_path}"))
    };
    // /proc reports in USER_HZ ticks, 100 per second on every Linux architecture we build for.
    const USER_HZ: f64 = 100.0;
    Ok((ticks(11)? / USER_HZ, ticks(12)? / USER_HZ))
}

/// Percentile (0–100) of sorted samples, nearest-rank.
pub fn percentile(sorted: &[Duration], pct: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((pct / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::percentile;
    use std::time::Duration;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&samples, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&samples, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&samples, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
