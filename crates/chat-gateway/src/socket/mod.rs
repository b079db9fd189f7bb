//! One WebSocket connection: authenticate, register with the hub, then read frames until the
//! client leaves, idles out, breaks the protocol, or someone asks the socket to close.
//!
//! Each socket runs two tasks: this reader (which owns the read half) and a writer (which owns
//! the write half and the outbound queues). A third, for chat-api calls, starts on demand.

mod assembler;
mod frames;
pub mod outbox;
mod recent;
mod requests;
pub mod writer;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chat_auth::TokenError;
use chat_proto::{
    ClientFrame, EditMessageRequest, ErrorCode, Reply, SendMessageRequest, WireFormat,
};
use fastwebsockets::OpCode;
use fastwebsockets::upgrade::UpgradeFut;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use self::assembler::{Assembler, CloseCause, Message};
use self::frames::{FrameReader, ReadError};
use self::outbox::Outbox;
use self::requests::{Request, RequestQueue, SocketContext};
use self::writer::{Control, Writer, data_opcode};
use crate::Gateway;
use crate::hub::{CloseSignal, ConnHandle, close_code};

pub use self::requests::encode_reply;

/// Control frames (replies, pongs) waiting for the writer before the client counts as too slow.
const CONTROL_QUEUE: usize = 64;
/// How long a closing socket's writer may take to put out its last frames.
const WRITER_GRACE: Duration = Duration::from_secs(5);
/// A socket forwards at most one `typing` per chat in this interval.
const TYPING_INTERVAL: Duration = Duration::from_secs(2);
/// How long registration (subscription + presence) may take before the socket gives up.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the upgrade request said about the socket.
pub struct SocketParams {
    pub format: WireFormat,
    pub token: Option<String>,
    /// Resume from this cursor (`?since=`).
    pub since: Option<String>,
    /// The client address's connection slot, released when the socket ends.
    pub ip_slot: Option<crate::limits::IpSlot>,
}

/// Serves one upgraded connection to the end.
pub async fn serve(gateway: Arc<Gateway>, upgrade: UpgradeFut, params: SocketParams) {
    let ws = match upgrade.await {
        Ok(ws) => ws,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    // Back to the TCP stream (and whatever the client sent right after its upgrade request):
    // the reader and the writer each own a half, with no lock between them.
    let parts = match ws
        .into_inner()
        .into_inner()
        .downcast::<TokioIo<TcpStream>>()
    {
        Ok(parts) => parts,
        Err(_) => {
            tracing::error!("an upgraded connection is not a TCP stream; closing it");
            return;
        }
    };
    let (read_io, write_io) = parts.io.into_inner().into_split();
    let mut reader = FrameReader::new(read_io, parts.read_buf, gateway.config.max_frame_bytes);

    let signal = Arc::new(CloseSignal::default());
    let outbox = Arc::new(Outbox::new(CONTROL_QUEUE, gateway.config.outbound_queue));
    let writer = Writer::new(
        write_io,
        params.format,
        outbox.clone(),
        signal.clone(),
        gateway.config.ping_interval(),
        gateway.metrics.delivery_seconds.clone(),
    );
    let mut writer = tokio::spawn(writer.run());

    let mut socket = Socket {
        gateway: gateway.clone(),
        format: params.format,
        outbox,
        signal: signal.clone(),
        assembler: Assembler::new(gateway.config.max_frame_bytes),
        typing_sent: HashMap::new(),
        requests: RequestQueue::default(),
        delivered_pending: Arc::default(),
    };
    socket.run(&mut reader, params.token, params.since).await;
    drop(socket);
    // Every way out of `run` has asked for a close except a peer that left before
    // authenticating; either way the writer finishes with a close frame (first code wins).
    signal.close(close_code::NORMAL);
    drop(params.ip_slot);
    if tokio::time::timeout(WRITER_GRACE, &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

/// The authenticated identity of a socket.
struct Identity {
    user_id: u64,
    jti: Arc<str>,
    token: Arc<str>,
    /// A cursor given in the `auth` frame.
    since: Option<String>,
}

enum Incoming {
    Message(Message),
    /// A pong: proof of life, nothing to do.
    Alive,
    /// The peer sent a close frame (already answered) or the stream ended.
    Gone,
}

struct Socket {
    gateway: Arc<Gateway>,
    format: WireFormat,
    outbox: Arc<Outbox>,
    signal: Arc<CloseSignal>,
    assembler: Assembler,
    typing_sent: HashMap<u64, Instant>,
    requests: RequestQueue,
    /// `delivered` frames of this socket waiting for their lane's answer.
    delivered_pending: Arc<AtomicUsize>,
}

/// `delivered` frames one socket may have waiting before more are refused with `rate_limited`
/// (a client acknowledges each burst once per chat; this bounds what a flood can queue).
const DELIVERED_IN_FLIGHT: usize = 64;

impl Socket {
    async fn run(
        &mut self,
        reader: &mut FrameReader,
        token: Option<String>,
        since: Option<String>,
    ) {
        // The steps that run once (authentication with its Redis lookup, the replay with its
        // HTTP calls) are boxed: an async fn's future is as large as its largest await, and it
        // lives as long as the socket, so inline they would cost every idle socket kilobytes.
        let Some(identity) = Box::pin(self.authenticate(reader, token)).await else {
            return;
        };
        let since = since.or_else(|| identity.since.clone());
        let conn_id = self.gateway.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let handle = ConnHandle {
            id: conn_id,
            jti: identity.jti.clone(),
            token: identity.token.clone(),
            format: self.format,
            outbox: self.outbox.clone(),
            signal: self.signal.clone(),
        };
        let hub = &self.gateway.hub;
        let Some(registered) = hub.register(
            identity.user_id,
            handle,
            self.gateway.config.max_sockets_per_user,
        ) else {
            metrics::counter!("chat_gateway_refused_total", "reason" => "user_sockets")
                .increment(1);
            self.refuse(
                ErrorCode::RateLimited,
                &format!(
                    "too many open sockets for this user (limit {})",
                    self.gateway.config.max_sockets_per_user
                ),
                close_code::POLICY,
            );
            return;
        };
        let registering = Instant::now();
        if !matches!(
            tokio::time::timeout(REGISTER_TIMEOUT, registered).await,
            Ok(Ok(true))
        ) {
            hub.unregister(identity.user_id, conn_id);
            self.refuse(
                ErrorCode::Unavailable,
                "this gateway cannot reach redis; reconnect",
                close_code::RESTART,
            );
            return;
        }
        let session_id = format!("{}-{conn_id}", self.gateway.node_id);
        self.reply(&Reply::AuthOk {
            user_id: identity.user_id,
            session_id,
        });
        // One line per socket at debug: lets a client that saw no auth_ok be checked against
        // what the gateway did (the load tests' auth timeouts).
        tracing::debug!(
            user = identity.user_id,
            conn = conn_id,
            register_ms = registering.elapsed().as_secs_f64() * 1000.0,
            "auth_ok queued"
        );
        if let Some(since) = since {
            // Live events queue up (the writer is not active yet) while the replay goes out.
            Box::pin(requests::replay(&self.context(&identity), &since)).await;
        }
        let _ = self.outbox.send_control(Control::Activate).await;
        let metrics = &self.gateway.metrics;
        metrics.connections.increment(1.0);
        metrics.connections_opened.increment(1);

        self.read_until_closed(reader, &identity).await;

        self.gateway.hub.unregister(identity.user_id, conn_id);
        self.gateway.metrics.connections.decrement(1.0);
    }

    /// Finds the token (upgrade header or query, else a first `auth` frame within the timeout)
    /// and verifies it. On failure the client gets an error frame and close 4001.
    async fn authenticate(
        &mut self,
        reader: &mut FrameReader,
        token: Option<String>,
    ) -> Option<Identity> {
        let mut since = None;
        let token = match token {
            Some(token) => token,
            None => {
                match tokio::time::timeout(self.gateway.config.auth_timeout(), self.next(reader))
                    .await
                {
                    Err(_) => return self.fail_auth("authentication timed out"),
                    Ok(Ok(Incoming::Message(message))) => match self.decode(&message) {
                        Some(Ok(ClientFrame::Auth { token, since: from })) => {
                            since = from;
                            token
                        }
                        _ => {
                            return self.fail_auth(
                                "the first frame must be {\"type\":\"auth\",\"token\":...}",
                            );
                        }
                    },
                    Ok(Ok(Incoming::Alive)) => {
                        return self.fail_auth("the first frame must be auth");
                    }
                    Ok(Ok(Incoming::Gone)) => return None,
                    Ok(Err(cause)) => {
                        self.signal.close(cause.code);
                        return None;
                    }
                }
            }
        };
        let verified = match self.gateway.keys.verify_user_token(&token) {
            Ok(verified) => verified,
            Err(TokenError::Expired) => return self.fail_auth("token has expired"),
            Err(TokenError::NotYetValid) => return self.fail_auth("token is not valid yet"),
            Err(_) => return self.fail_auth("invalid token"),
        };
        match self.gateway.bus.is_revoked(&verified.jti).await {
            Ok(false) => Some(Identity {
                user_id: verified.user_id,
                jti: verified.jti.into(),
                token: token.into(),
                since,
            }),
            Ok(true) => self.fail_auth("token has been revoked"),
            Err(e) => {
                tracing::warn!(error = %e, "revocation check failed");
                self.refuse(
                    ErrorCode::Unavailable,
                    "cannot verify the token now; reconnect",
                    close_code::RESTART,
                );
                None
            }
        }
    }

    fn fail_auth(&self, message: &str) -> Option<Identity> {
        self.gateway.metrics.auth_failures.increment(1);
        self.refuse(ErrorCode::Unauthorized, message, close_code::UNAUTHORIZED);
        None
    }

    /// Sends an error frame, then closes with `code`.
    fn refuse(&self, code: ErrorCode, message: &str, close: u16) {
        self.reply(&Reply::error(None, code, message));
        self.signal.close(close);
    }

    async fn read_until_closed(&mut self, reader: &mut FrameReader, identity: &Identity) {
        let idle = self.gateway.config.idle_timeout();
        let mut deadline = Instant::now() + idle;
        let signal = self.signal.clone();
        loop {
            tokio::select! {
                biased;
                () = signal.requested() => return,
                () = tokio::time::sleep_until(deadline) => {
                    self.signal.close(close_code::GOING_AWAY);
                    return;
                }
                incoming = self.next(reader) => match incoming {
                    Ok(Incoming::Message(message)) => {
                        deadline = Instant::now() + idle;
                        self.handle(message, identity);
                    }
                    Ok(Incoming::Alive) => deadline = Instant::now() + idle,
                    Ok(Incoming::Gone) => {
                        self.signal.close(close_code::NORMAL);
                        return;
                    }
                    Err(cause) => {
                        tracing::debug!(code = cause.code, reason = cause.reason, "closing socket");
                        self.signal.close(cause.code);
                        return;
                    }
                },
            }
        }
    }

    /// Reads the next whole message or control frame. Pings and close frames are answered
    /// through the writer.
    async fn next(&mut self, reader: &mut FrameReader) -> Result<Incoming, CloseCause> {
        loop {
            let frame = match reader.next_frame().await {
                Ok(frame) => frame,
                Err(ReadError::Ended) => return Ok(Incoming::Gone),
                Err(ReadError::Broken(cause)) => return Err(cause),
            };
            match frame.opcode {
                OpCode::Close => {
                    frames::close_payload(&frame.payload)?;
                    // Echoes the peer's code; a full queue means the writer is finishing anyway.
                    let _ = self
                        .outbox
                        .try_control(Control::Frame(OpCode::Close, frame.payload));
                    return Ok(Incoming::Gone);
                }
                OpCode::Ping => {
                    if self
                        .outbox
                        .try_control(Control::Frame(OpCode::Pong, frame.payload))
                        .is_err()
                    {
                        return Err(CloseCause {
                            code: close_code::TOO_SLOW,
                            reason: "not reading replies",
                        });
                    }
                    // Answered here, not returned: a ping may come between the fragments of
                    // the `auth` frame (RFC 6455 5.4).
                }
                OpCode::Pong => return Ok(Incoming::Alive),
                opcode => {
                    if let Some(message) = self.assembler.push(frame.fin, opcode, &frame.payload)? {
                        return Ok(Incoming::Message(message));
                    }
                }
            }
        }
    }

    fn decode(&self, message: &Message) -> Option<Result<ClientFrame, chat_proto::DecodeError>> {
        let expected = data_opcode(self.format);
        if message.opcode != expected {
            let wanted = if expected == OpCode::Text {
                "text (JSON)"
            } else {
                "binary (MessagePack)"
            };
            self.reply(&Reply::error(
                None,
                ErrorCode::InvalidInput,
                format!("this connection takes {wanted} frames"),
            ));
            return None;
        }
        Some(
            self.format
                .decode_client_frame_limited(&message.payload, self.gateway.config.max_json_depth),
        )
    }

    fn handle(&mut self, message: Message, identity: &Identity) {
        let frame = match self.decode(&message) {
            None => return,
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                self.reply(&Reply::error(
                    e.request_id(),
                    ErrorCode::InvalidInput,
                    e.to_string(),
                ));
                return;
            }
        };
        let metrics = &self.gateway.metrics;
        match frame {
            ClientFrame::Auth { .. } => {
                metrics.frame_received("auth");
                self.reply(&Reply::error(
                    None,
                    ErrorCode::InvalidInput,
                    "already authenticated",
                ));
            }
            ClientFrame::Resume { since } => {
                metrics.frame_received("resume");
                // Pause first, so live events wait behind the replay.
                if self.outbox.try_control(Control::Pause).is_err() {
                    self.signal.close(close_code::TOO_SLOW);
                    return;
                }
                self.submit(identity, Request::Resume { since }, None);
            }
            ClientFrame::Ping { id } => {
                metrics.frame_received("ping");
                self.reply(&Reply::Pong {
                    ts: chrono::Utc::now().timestamp_millis(),
                    id,
                });
            }
            ClientFrame::Send {
                id,
                chat_id,
                client_msg_id,
                text,
                reply_to_id,
            } => {
                metrics.frame_received("send");
                let body = SendMessageRequest {
                    client_msg_id,
                    kind: None,
                    text: Some(text),
                    attachment_id: None,
                    reply_to_id,
                };
                self.submit(
                    identity,
                    Request::Send {
                        id: id.clone(),
                        chat_id,
                        body,
                    },
                    id,
                );
            }
            ClientFrame::Read {
                id,
                chat_id,
                up_to_seq,
            } => {
                metrics.frame_received("read");
                self.submit(
                    identity,
                    Request::Read {
                        id: id.clone(),
                        chat_id,
                        up_to_seq,
                    },
                    id,
                );
            }
            ClientFrame::Delivered {
                id,
                chat_id,
                up_to_seq,
            } => {
                metrics.frame_received("delivered");
                self.submit_delivered(identity, id, chat_id, up_to_seq);
            }
            ClientFrame::Edit {
                id,
                chat_id,
                message_id,
                text,
            } => {
                metrics.frame_received("edit");
                let request = Request::Edit {
                    id: id.clone(),
                    chat_id,
                    message_id,
                    body: EditMessageRequest { text },
                };
                self.submit(identity, request, id);
            }
            ClientFrame::Delete {
                id,
                chat_id,
                message_id,
            } => {
                metrics.frame_received("delete");
                let request = Request::Delete {
                    id: id.clone(),
                    chat_id,
                    message_id,
                };
                self.submit(identity, request, id);
            }
            ClientFrame::Typing { chat_id } => {
                metrics.frame_received("typing");
                let now = Instant::now();
                let recent = self
                    .typing_sent
                    .get(&chat_id)
                    .is_some_and(|at| now.duration_since(*at) < TYPING_INTERVAL);
                if !recent {
                    self.typing_sent
                        .retain(|_, at| now.duration_since(*at) < TYPING_INTERVAL);
                    self.typing_sent.insert(chat_id, now);
                    self.submit(identity, Request::Typing { chat_id }, None);
                }
            }
        }
    }

    fn context(&self, identity: &Identity) -> SocketContext {
        SocketContext {
            gateway: self.gateway.clone(),
            user_id: identity.user_id,
            abuse_strikes: self.gateway.config.ws_abuse_strikes,
            api: self.gateway.api.clone(),
            token: identity.token.clone(),
            format: self.format,
            outbox: self.outbox.clone(),
            signal: self.signal.clone(),
        }
    }

    fn submit(&mut self, identity: &Identity, request: Request, id: Option<chat_proto::RequestId>) {
        let context = || self.context(identity);
        if !self.requests.submit(context, request) {
            self.reply(&Reply::error(
                id,
                ErrorCode::RateLimited,
                "too many requests in flight",
            ));
        }
    }

    /// Hands a `delivered` frame to the gateway's coalescing lanes; the ack (or error) is
    /// written when the batch that carried it is answered.
    fn submit_delivered(
        &mut self,
        identity: &Identity,
        id: Option<chat_proto::RequestId>,
        chat_id: u64,
        up_to_seq: u64,
    ) {
        if self.delivered_pending.fetch_add(1, Ordering::AcqRel) >= DELIVERED_IN_FLIGHT {
            self.delivered_pending.fetch_sub(1, Ordering::AcqRel);
            self.reply(&Reply::error(
                id,
                ErrorCode::RateLimited,
                "too many delivered receipts in flight",
            ));
            return;
        }
        let context = self.context(identity);
        let pending = self.delivered_pending.clone();
        let answer: crate::delivered::Answer = Box::new(move |outcome| {
            pending.fetch_sub(1, Ordering::AcqRel);
            match outcome {
                Ok(()) => context.reply(&Reply::Ack { id, message: None }),
                Err((code, message)) => context.reply(&Reply::error(id, code, message)),
            }
        });
        self.gateway.delivered.submit(crate::delivered::Pending {
            one: chat_proto::DeliveredMove {
                user_id: identity.user_id,
                chat_id,
                up_to_seq,
            },
            answer,
        });
    }

    fn reply(&self, reply: &Reply) {
        let frame = Control::Frame(data_opcode(self.format), self.format.encode(reply));
        if self.outbox.try_control(frame).is_err() {
            self.signal.close(close_code::TOO_SLOW);
        }
    }
}
