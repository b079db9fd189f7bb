//! The socket's life: noticing its end, picking another gateway, reconnecting with backoff and
//! authenticating (with `since` when resuming).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Client, InFlight, StreamState, backoff, frame_kind};
use crate::chaos::ResumeMode;
use crate::ws::{Auth, Format, Frame, WsClient};

impl Client {
    pub(super) fn socket_ended(&mut self, how: String) {
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
    pub(super) fn next_gateway(&mut self) {
        let n = self.shared.gateway_count();
        if n > 1 {
            self.gateway = self.gateway % n + 1 + rand::random_range(0..n - 1);
        }
    }

    /// One connection attempt to the next gateway.
    pub(super) async fn connect(&mut self) {
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
    pub(super) async fn open(
        &mut self,
        base: &str,
        since: Option<&str>,
    ) -> Result<WsClient, String> {
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
}
