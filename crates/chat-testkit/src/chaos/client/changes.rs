//! Edits and deletions during the faults: now and then, instead of a new message, a client
//! edits or deletes one of its own acked messages (a `edit`/`delete` frame, or `PATCH`/`DELETE`
//! over REST for the REST clients), retried like a send until acked. Every client records the
//! latest state it saw of each changed message, from `message_updated` events and from replayed
//! `new_message`s that already show it, so the checker can tell whether an update was lost.

use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Client, InFlight, Outgoing};

/// Of the messages a client creates, about this many in a hundred are an edit of one of its
/// messages instead, and about `DELETE_PERCENT` a deletion.
const EDIT_PERCENT: u32 = 12;
const DELETE_PERCENT: u32 = 6;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    Edit,
    Delete,
}

/// An edit or deletion the server acked.
#[derive(Debug, Clone)]
pub struct AckedChange {
    pub message_id: u64,
    pub chat_id: u64,
    pub actor: u64,
    pub kind: ChangeKind,
    /// The new text of an edit.
    pub text: Option<String>,
    /// The phase in which the client made the change.
    pub phase: usize,
}

/// The latest state of a changed message as one client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenState {
    /// The later of `edited_at` and `deleted_at` (RFC 3339 with milliseconds, so the text order
    /// is the time order).
    pub at: String,
    pub text: Option<String>,
    pub deleted: bool,
}

/// The change a client is making.
#[derive(Debug, Clone)]
pub(super) struct PendingChange {
    message_id: u64,
    kind: ChangeKind,
}

impl Client {
    /// Perhaps turns the next message into a change of an own message; true when it did.
    pub(super) fn maybe_create_change(&mut self, now: Instant) -> bool {
        let roll = rand::random_range(0..100u32);
        let kind = match roll {
            r if r < EDIT_PERCENT => ChangeKind::Edit,
            r if r < EDIT_PERCENT + DELETE_PERCENT => ChangeKind::Delete,
            _ => return false,
        };
        let deleted: std::collections::HashSet<u64> = self
            .report
            .changes
            .iter()
            .filter(|c| c.kind == ChangeKind::Delete)
            .map(|c| c.message_id)
            .collect();
        let own: Vec<(u64, u64)> = self
            .report
            .acked
            .iter()
            .filter(|m| !deleted.contains(&m.id))
            .map(|m| (m.id, m.chat_id))
            .collect();
        if own.is_empty() {
            return false;
        }
        let (message_id, chat_id) = own[rand::random_range(0..own.len())];
        self.sent_count += 1;
        let text = format!("chaos edit {} #{}", self.spec.user_id, self.sent_count);
        self.pending = Some(Outgoing {
            change: Some(PendingChange { message_id, kind }),
            chat_id,
            client_msg_id: format!("{kind:?} of message {message_id}"),
            text,
            phase: self.phase(),
            attempts: 0,
            created: now,
        });
        self.retry_at = now;
        self.shared.pending_sends.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Sends the pending change (its attempt already counted).
    pub(super) async fn send_change(&mut self, now: Instant) {
        let Some(pending) = &mut self.pending else {
            return;
        };
        let Some(change) = pending.change.clone() else {
            return;
        };
        let chat_id = pending.chat_id;
        let text = pending.text.clone();
        let message_id = change.message_id;
        if self.spec.send_over_rest {
            let url = format!(
                "{}/v1/chats/{chat_id}/messages/{message_id}",
                self.shared.api_base
            );
            let request = match change.kind {
                ChangeKind::Edit => self.http.patch(url).json(&json!({ "text": text })),
                ChangeKind::Delete => self.http.delete(url),
            }
            .bearer_auth(&self.spec.token);
            self.rest = Some(Box::pin(async move {
                let resp = request.send().await?;
                let status = resp.status().as_u16();
                let bytes = resp.bytes().await?;
                let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                Ok((status, value))
            }));
            self.in_flight = Some(InFlight::Rest);
            return;
        }
        let Some(ws) = self.ws.as_mut() else {
            // Sent once connected.
            pending.attempts -= 1;
            return;
        };
        self.request_count += 1;
        let request_id = format!("c{}", self.request_count);
        let frame = match change.kind {
            ChangeKind::Edit => json!({
                "type": "edit", "id": request_id, "chat_id": chat_id,
                "message_id": message_id, "text": text,
            }),
            ChangeKind::Delete => json!({
                "type": "delete", "id": request_id, "chat_id": chat_id, "message_id": message_id,
            }),
        };
        match ws.try_send_json(&frame).await {
            Ok(()) => {
                self.in_flight = Some(InFlight::Ws {
                    request_id,
                    sent: now,
                });
            }
            Err(_) => self.socket_ended("send failed".into()),
        }
    }

    /// The change was acked: record it. An edit's answer carries the message, which must show
    /// the new text.
    pub(super) fn on_change_acked(&mut self, message: &Value) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let Some(change) = pending.change else {
            return;
        };
        self.in_flight = None;
        self.shared.pending_sends.fetch_sub(1, Ordering::Relaxed);
        if change.kind == ChangeKind::Edit
            && message.get("text").and_then(Value::as_str) != Some(pending.text.as_str())
        {
            let detail = format!(
                "user {} edit of message {}: the answer shows {message}",
                self.spec.user_id, change.message_id
            );
            self.anomaly("bad_edit_ack", detail);
        }
        self.report.changes.push(AckedChange {
            message_id: change.message_id,
            chat_id: pending.chat_id,
            actor: self.spec.user_id,
            kind: change.kind,
            text: (change.kind == ChangeKind::Edit).then_some(pending.text),
            phase: pending.phase,
        });
        self.shared.touch();
        // A change does not take a new message's turn: the run's message count stays as it was.
        self.next_send_at = Instant::now();
    }

    /// Keeps the latest state of a changed message (an event or a replayed message).
    pub(super) fn note_update(&mut self, message: &Value) {
        let Some(id) = message.get("id").and_then(Value::as_u64) else {
            return;
        };
        let at = |key: &str| message.get(key).and_then(Value::as_str).map(str::to_string);
        let deleted_at = at("deleted_at");
        let Some(latest) = deleted_at.clone().or_else(|| at("edited_at")) else {
            return;
        };
        let seen = SeenState {
            at: latest,
            text: at("text"),
            deleted: deleted_at.is_some(),
        };
        let entry = self.report.updates_seen.entry(id).or_insert(seen.clone());
        if seen.at > entry.at || (seen.at == entry.at && seen.deleted) {
            *entry = seen;
        }
    }
}
