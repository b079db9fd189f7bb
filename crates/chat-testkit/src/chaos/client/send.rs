//! Sending: a new message every so often, one at a time, over WebSocket or REST, re-sent with
//! the same `client_msg_id` after a failure until acked.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::{
    ACK_TIMEOUT, AckedMessage, Client, InFlight, Outgoing, SEND_GIVE_UP, SYNCED_TIMEOUT, backoff,
    jitter, message_fields,
};

impl Client {
    pub(super) fn maybe_create_message(&mut self, now: Instant) {
        if self.pending.is_some()
            || !self.shared.traffic.load(Ordering::Relaxed)
            || now < self.next_send_at
            || self.spec.chats.is_empty()
        {
            return;
        }
        if self.maybe_create_change(now) {
            return;
        }
        self.sent_count += 1;
        let chat_id = self.spec.chats[rand::random_range(0..self.spec.chats.len())];
        let client_msg_id = format!("cx-{}-{}", self.spec.user_id, self.sent_count);
        self.pending = Some(Outgoing {
            change: None,
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

    pub(super) async fn maybe_send(&mut self, now: Instant) {
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
        if pending.change.is_some() {
            self.send_change(now).await;
        } else if self.spec.send_over_rest {
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

    pub(super) fn check_timeouts(&mut self, now: Instant) {
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

    pub(super) fn schedule_retry(&mut self) {
        let attempts = self.pending.as_ref().map(|p| p.attempts).unwrap_or(1);
        self.retry_at = Instant::now() + backoff(attempts.saturating_sub(1));
    }

    pub(super) fn on_acked(&mut self, message: &Value) {
        if self.pending.as_ref().is_some_and(|p| p.change.is_some()) {
            self.on_change_acked(message);
            return;
        }
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

    pub(super) fn on_send_error(&mut self, code: &str) {
        *self.report.send_errors.entry(code.to_string()).or_default() += 1;
        self.in_flight = None;
        self.schedule_retry();
    }

    pub(super) fn on_rest_result(&mut self, result: anyhow::Result<(u16, Value)>) {
        match result {
            Ok((200 | 201 | 204, body)) => {
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
}
