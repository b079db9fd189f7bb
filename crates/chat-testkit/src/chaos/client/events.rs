//! What a client does with each frame: acks, deliveries (with the duplicate and order checks),
//! `resync`, `synced`, the final resume, and the history refill of the fallback mode.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Client, InFlight, describe, message_fields};
use crate::chaos::ResumeMode;
use crate::ws::Frame;

impl Client {
    pub(super) async fn on_frame(&mut self, frame: Frame) {
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
                // A replay shows a message as it now is, edits and deletion included.
                self.note_update(&message);
                match message_fields(&message) {
                    Some((id, chat_id, seq)) => {
                        let what = describe(&message);
                        self.on_delivery(id, chat_id, seq, what);
                    }
                    None => self.anomaly("bad_event", value.to_string()),
                }
                self.take_cursor(&value);
            }
            Some("message_read" | "message_delivered") => self.take_cursor(&value),
            Some("message_updated") => {
                let message = value.get("message").cloned().unwrap_or(Value::Null);
                self.note_update(&message);
                self.take_cursor(&value);
            }
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

    pub(super) fn is_reply(&self, value: &Value) -> bool {
        match (&self.in_flight, value.get("id").and_then(Value::as_str)) {
            (Some(InFlight::Ws { request_id, .. }), Some(id)) => request_id == id,
            _ => false,
        }
    }

    pub(super) fn take_cursor(&mut self, value: &Value) {
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

    pub(super) fn on_delivery(&mut self, id: u64, chat_id: u64, seq: u64, what: String) {
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

    pub(super) async fn on_resync(&mut self) {
        let phase = self.phase();
        self.report.counters(phase).resyncs += 1;
        match self.shared.resume {
            ResumeMode::Cursor => self.send_resume(false).await,
            ResumeMode::History => self.refill_needed = true,
            ResumeMode::Off => {}
        }
    }

    /// Sends `{"type":"resume"}` with the stored cursor on the current socket.
    pub(super) async fn send_resume(&mut self, final_resume: bool) {
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

    pub(super) fn on_synced(&mut self, value: &Value) {
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

    pub(super) fn finish_final(&mut self) {
        if self.final_pending {
            self.final_pending = false;
            self.report.final_synced = true;
            self.shared.final_done.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) async fn check_final_round(&mut self) {
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
    pub(super) async fn refill(&mut self) {
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
