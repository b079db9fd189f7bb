//! Frames that need chat-api (send, read, typing, edit, delete) run one at a time per socket, in the order the
//! client sent them (so a client's messages keep their order), on a task started when one arrives
//! and ending when none is left. The reader keeps reading meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use chat_proto::cursor::OVERLAP_MS;
use chat_proto::{
    Cursor, EditMessageRequest, ErrorCode, Reply, RequestId, SendMessageRequest, ServerEvent,
    WireFormat,
};
use parking_lot::Mutex;

use super::outbox::Outbox;
use super::writer::{Control, OutEvent, data_opcode};
use crate::Gateway;
use crate::api_client::{ApiClient, ApiReply};
use crate::hub::{CloseSignal, close_code};

/// Requests queued per socket before new ones are refused with `rate_limited`.
const IN_FLIGHT: usize = 32;

pub enum Request {
    Send {
        id: Option<RequestId>,
        chat_id: u64,
        body: SendMessageRequest,
    },
    Read {
        id: Option<RequestId>,
        chat_id: u64,
        up_to_seq: u64,
    },
    Typing {
        chat_id: u64,
    },
    Edit {
        id: Option<RequestId>,
        chat_id: u64,
        message_id: u64,
        body: EditMessageRequest,
    },
    Delete {
        id: Option<RequestId>,
        chat_id: u64,
        message_id: u64,
    },
    /// Replay from a cursor (the writer has been paused), then go live again.
    Resume {
        since: String,
    },
}

/// What a request worker needs from its socket.
pub struct SocketContext {
    pub gateway: Arc<Gateway>,
    pub user_id: u64,
    /// Consecutive `rate_limited` answers to sends before the socket is closed with 1008.
    pub abuse_strikes: u32,
    pub api: Arc<ApiClient>,
    pub token: Arc<str>,
    pub format: WireFormat,
    pub outbox: Arc<Outbox>,
    pub signal: Arc<CloseSignal>,
}

impl SocketContext {
    /// Queues a reply frame; a client that does not read its replies is too slow.
    pub fn reply(&self, reply: &Reply) {
        let frame = Control::Frame(data_opcode(self.format), self.format.encode(reply));
        if self.outbox.try_control(frame).is_err() {
            self.signal.close(close_code::TOO_SLOW);
        }
    }
}

/// The socket's pending requests. The worker task runs only while there is something to do:
/// an idle socket holds neither a task nor a channel for it.
#[derive(Default)]
pub struct RequestQueue {
    shared: Arc<Mutex<Pending>>,
}

#[derive(Default)]
struct Pending {
    queue: VecDeque<Request>,
    worker_running: bool,
    /// Consecutive `rate_limited` answers; any other answer resets it.
    strikes: u32,
}

impl RequestQueue {
    /// Queues a request, starting the worker (with the context `context` builds) if it is not
    /// running; `false` when too many are waiting.
    pub fn submit(&self, context: impl FnOnce() -> SocketContext, request: Request) -> bool {
        let mut pending = self.shared.lock();
        if pending.queue.len() >= IN_FLIGHT {
            return false;
        }
        pending.queue.push_back(request);
        if !pending.worker_running {
            pending.worker_running = true;
            tokio::spawn(work(context(), self.shared.clone()));
        }
        true
    }
}

/// Runs the queued requests one at a time, in order, and ends when the queue is empty.
async fn work(context: SocketContext, shared: Arc<Mutex<Pending>>) {
    loop {
        let request = {
            let mut pending = shared.lock();
            match pending.queue.pop_front() {
                Some(request) => request,
                None => {
                    pending.worker_running = false;
                    pending.queue = VecDeque::new();
                    return;
                }
            }
        };
        let outcome = run(&context, request).await;
        let strikes = {
            let mut pending = shared.lock();
            pending.strikes = match outcome {
                Outcome::RateLimited => pending.strikes + 1,
                Outcome::Done => 0,
            };
            pending.strikes
        };
        if outcome == Outcome::RateLimited {
            // Sustained abuse: a client that keeps sending into a full bucket is closed (1008).
            if context.abuse_strikes > 0 && strikes >= context.abuse_strikes {
                metrics::counter!("chat_gateway_refused_total", "reason" => "abuse").increment(1);
                context.signal.close(close_code::POLICY);
                return;
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Outcome {
    Done,
    RateLimited,
}

async fn run(context: &SocketContext, request: Request) -> Outcome {
    let (id, reply) = match request {
        Request::Send { id, chat_id, body } => (
            id,
            context
                .api
                .send_message(&context.token, chat_id, &body)
                .await,
        ),
        Request::Read {
            id,
            chat_id,
            up_to_seq,
        } => (
            id,
            context
                .api
                .mark_read(&context.token, chat_id, up_to_seq)
                .await,
        ),
        Request::Edit {
            id,
            chat_id,
            message_id,
            body,
        } => (
            id,
            context
                .api
                .edit_message(&context.token, chat_id, message_id, &body)
                .await,
        ),
        Request::Delete {
            id,
            chat_id,
            message_id,
        } => (
            id,
            context
                .api
                .delete_message(&context.token, chat_id, message_id)
                .await,
        ),
        Request::Typing { chat_id } => {
            // No reply to typing; a failure is not worth the client's attention.
            let _ = context.api.typing(&context.token, chat_id).await;
            return Outcome::Done;
        }
        Request::Resume { since } => {
            replay(context, &since).await;
            let _ = context.outbox.send_control(Control::Activate).await;
            return Outcome::Done;
        }
    };
    match reply {
        ApiReply::Done(message) => {
            context.reply(&Reply::Ack { id, message });
            Outcome::Done
        }
        ApiReply::Failed { code, message } => {
            context.reply(&Reply::error(id, code, message));
            if code == ErrorCode::Unauthorized {
                // The token expired or was revoked while the socket was open.
                context.signal.close(close_code::UNAUTHORIZED);
            }
            if code == ErrorCode::RateLimited {
                Outcome::RateLimited
            } else {
                Outcome::Done
            }
        }
    }
}

/// Sends the socket every event since the cursor as `Replayed` frames (the writer holds live
/// events meanwhile), then `synced`: from the bus's recent-event log when it covers the cursor
/// (`super::recent`), otherwise from chat-api's sync, page by page. A refused cursor gets an
/// error frame instead.
pub async fn replay(context: &SocketContext, since: &str) {
    // Taken before reading, like `/v1/sync` does: `synced` never claims more than was read.
    let now_ms = chrono::Utc::now().timestamp_millis();
    if let Ok(cursor) = Cursor::parse(since, now_ms)
        && let Some(events) =
            super::recent::events_since(&context.gateway, context.user_id, cursor.from_ms).await
    {
        metrics::counter!("chat_gateway_replays_total", "source" => "log").increment(1);
        for event in &events {
            let replayed = Control::Replayed(OutEvent::replayed(context.format, event));
            if context.outbox.send_control(replayed).await.is_err() {
                return;
            }
        }
        // The rule of `/v1/sync` when it is caught up.
        let cursor = Cursor::at((now_ms - OVERLAP_MS).max(cursor.from_ms));
        let synced = ServerEvent::Synced {
            cursor: cursor.to_string(),
        };
        let frame = Control::Frame(data_opcode(context.format), context.format.encode(&synced));
        let _ = context.outbox.send_control(frame).await;
        return;
    }
    metrics::counter!("chat_gateway_replays_total", "source" => "api").increment(1);
    let mut cursor = since.to_string();
    loop {
        let page = match context.api.sync(&context.token, &cursor).await {
            Ok(page) => page,
            Err((code, message)) => {
                context.reply(&Reply::error(None, code, message));
                return;
            }
        };
        for event in &page.events {
            let replayed = Control::Replayed(OutEvent::replayed(context.format, event));
            if context.outbox.send_control(replayed).await.is_err() {
                return;
            }
        }
        cursor = page.cursor;
        if !page.has_more {
            break;
        }
    }
    let synced = ServerEvent::Synced { cursor };
    let frame = Control::Frame(data_opcode(context.format), context.format.encode(&synced));
    let _ = context.outbox.send_control(frame).await;
}

/// An encoded reply, for callers outside a socket (the hub's logout handling).
pub fn encode_reply(format: WireFormat, reply: &Reply) -> Control {
    let bytes: Bytes = format.encode(reply);
    Control::Frame(data_opcode(format), bytes)
}
