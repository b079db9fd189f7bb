//! Frames that need chat-api (send, read, typing) run one at a time per socket, in the order the
//! client sent them (so a client's messages keep their order), on a task started at the first
//! such frame. The reader keeps reading meanwhile.

use std::sync::Arc;

use bytes::Bytes;
use chat_proto::{ErrorCode, Reply, RequestId, SendMessageRequest, ServerEvent, WireFormat};
use tokio::sync::mpsc;

use super::writer::{Control, EventKey, OutEvent, data_opcode};
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
    /// Replay from a cursor (the writer has been paused), then go live again.
    Resume {
        since: String,
    },
}

/// What a request worker needs from its socket.
#[derive(Clone)]
pub struct SocketContext {
    /// Consecutive `rate_limited` answers to sends before the socket is closed with 1008.
    pub abuse_strikes: u32,
    pub api: ApiClient,
    pub token: Arc<str>,
    pub format: WireFormat,
    pub control: mpsc::Sender<Control>,
    pub signal: Arc<CloseSignal>,
}

impl SocketContext {
    /// Queues a reply frame; a client that does not read its replies is too slow.
    pub fn reply(&self, reply: &Reply) {
        let frame = Control::Frame(data_opcode(self.format), self.format.encode(reply));
        if self.control.try_send(frame).is_err() {
            self.signal.close(close_code::TOO_SLOW);
        }
    }
}

#[derive(Default)]
pub struct RequestQueue {
    sender: Option<mpsc::Sender<Request>>,
}

impl RequestQueue {
    /// Queues a request, starting the worker on first use; `false` when too many are waiting.
    pub fn submit(&mut self, context: &SocketContext, request: Request) -> bool {
        let sender = self.sender.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(IN_FLIGHT);
            tokio::spawn(work(context.clone(), rx));
            tx
        });
        sender.try_send(request).is_ok()
    }
}

async fn work(context: SocketContext, mut requests: mpsc::Receiver<Request>) {
    // Sustained abuse: a client that keeps sending into a full bucket is closed (1008).
    let mut strikes = 0u32;
    while let Some(request) = requests.recv().await {
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
            Request::Typing { chat_id } => {
                // No reply to typing; a failure is not worth the client's attention.
                let _ = context.api.typing(&context.token, chat_id).await;
                continue;
            }
            Request::Resume { since } => {
                replay(&context, &since).await;
                let _ = context.control.send(Control::Activate).await;
                continue;
            }
        };
        match reply {
            ApiReply::Done(message) => {
                strikes = 0;
                context.reply(&Reply::Ack { id, message });
            }
            ApiReply::Failed { code, message } => {
                context.reply(&Reply::error(id, code, message));
                if code == ErrorCode::RateLimited {
                    strikes += 1;
                    if context.abuse_strikes > 0 && strikes >= context.abuse_strikes {
                        metrics::counter!("chat_gateway_refused_total", "reason" => "abuse")
                            .increment(1);
                        context.signal.close(close_code::POLICY);
                        return;
                    }
                }
                if code == ErrorCode::Unauthorized {
                    // The token expired or was revoked while the socket was open.
                    context.signal.close(close_code::UNAUTHORIZED);
                }
            }
        }
    }
}

/// Sends the socket every event since the cursor, page by page, as `Replayed` frames (the writer
/// holds live events meanwhile), then `synced`. A refused cursor gets an error frame instead.
pub async fn replay(context: &SocketContext, since: &str) {
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
            let replayed = Control::Replayed(OutEvent {
                bytes: context.format.encode(event),
                key: EventKey::of(event),
            });
            if context.control.send(replayed).await.is_err() {
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
    let _ = context.control.send(frame).await;
}

/// An encoded reply, for callers outside a socket (the hub's logout handling).
pub fn encode_reply(format: WireFormat, reply: &Reply) -> Control {
    let bytes: Bytes = format.encode(reply);
    Control::Frame(data_opcode(format), bytes)
}
