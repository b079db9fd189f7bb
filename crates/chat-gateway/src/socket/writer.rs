//! The writing half of a socket. It frames outbound messages itself (with the library's header
//! formatting) into one buffer per wake-up, so a burst of events costs one write syscall, and no
//! buffer is held while the socket is idle.
//!
//! Order of service: control frames (replies, pongs, close echoes) first, then a close request,
//! then events. Events are held back until `Activate`, so `auth_ok` is always the first frame.
//!
//! Resuming: `Pause` holds live events back again, the replayed events arrive as control frames
//! (`Replayed`, their keys remembered), and after `Activate` the held live events that the
//! replay already covered are skipped for a short seam window: no gap and no repeat at the seam.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use super::outbox::Outbox;
use crate::hub::CloseSignal;
use bytes::Bytes;
use chat_proto::WireFormat;
use fastwebsockets::{Frame, OpCode, Payload};
use metrics::Histogram;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Stop adding frames to a batch beyond this size.
const BATCH_BYTES: usize = 64 * 1024;
/// Keep a grown buffer between batches only up to this size.
const KEEP_BYTES: usize = 16 * 1024;

/// How long after a replay live events are checked against what it covered.
const SEAM_WINDOW: Duration = Duration::from_secs(10);

/// What identifies an event for de-duplication at a resume seam.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKey {
    Message {
        chat: u64,
        seq: u64,
    },
    Read {
        chat: u64,
        user: u64,
        seq: u64,
    },
    Delivered {
        chat: u64,
        user: u64,
        seq: u64,
    },
    /// An edit or deletion: the message and the time of the change.
    Updated {
        message: u64,
        at_ms: i64,
    },
    Other,
}

impl EventKey {
    pub fn of(event: &chat_proto::ServerEvent) -> Self {
        use chat_proto::ServerEvent;
        match event {
            ServerEvent::NewMessage { message, .. } => Self::Message {
                chat: message.chat_id,
                seq: message.seq,
            },
            ServerEvent::MessageRead {
                chat_id,
                user_id,
                up_to_seq,
                ..
            } => Self::Read {
                chat: *chat_id,
                user: *user_id,
                seq: *up_to_seq,
            },
            ServerEvent::MessageDelivered {
                chat_id,
                user_id,
                up_to_seq,
                ..
            } => Self::Delivered {
                chat: *chat_id,
                user: *user_id,
                seq: *up_to_seq,
            },
            ServerEvent::MessageUpdated { message, .. } => Self::Updated {
                message: message.id,
                at_ms: message.updated_at().map_or(0, |at| at.timestamp_millis()),
            },
            _ => Self::Other,
        }
    }
}

/// An encoded event on its way to one socket.
pub struct OutEvent {
    pub bytes: Bytes,
    pub key: EventKey,
    /// When chat-api published it, for a live event: timed from there to its socket write.
    pub published_at_ms: Option<i64>,
}

impl OutEvent {
    /// An event read back for a resume (from the recent-event log or chat-api), not timed.
    pub fn replayed(format: WireFormat, event: &chat_proto::ServerEvent) -> Self {
        Self {
            bytes: format.encode(event),
            key: EventKey::of(event),
            published_at_ms: None,
        }
    }
}

pub enum Control {
    /// A frame to write as is (replies, pong and close answers to the peer).
    Frame(OpCode, Bytes),
    /// Start (or resume) writing queued live events.
    Activate,
    /// Hold live events back (a replay is coming).
    Pause,
    /// A replayed event: write it and remember its key for the seam.
    Replayed(OutEvent),
}

/// Keys a replay covered, checked against live events until `until`.
struct Seam {
    keys: HashSet<EventKey>,
    until: Option<tokio::time::Instant>,
}

pub fn data_opcode(format: WireFormat) -> OpCode {
    match format {
        WireFormat::Json => OpCode::Text,
        WireFormat::MsgPack => OpCode::Binary,
    }
}

pub struct Writer<W> {
    io: W,
    data_opcode: OpCode,
    outbox: Arc<Outbox>,
    signal: Arc<CloseSignal>,
    ping_every: Duration,
    active: bool,
    seam: Option<Seam>,
    finished: bool,
    batch: Vec<u8>,
    /// Publish times of the live events in `batch`, recorded in `delivery` once it is written.
    published: Vec<i64>,
    delivery: Histogram,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(
        io: W,
        format: WireFormat,
        outbox: Arc<Outbox>,
        signal: Arc<CloseSignal>,
        ping_every: Duration,
        delivery: Histogram,
    ) -> Self {
        Self {
            io,
            data_opcode: data_opcode(format),
            outbox,
            signal,
            ping_every,
            active: false,
            seam: None,
            finished: false,
            batch: Vec::new(),
            published: Vec::new(),
            delivery,
        }
    }

    pub async fn run(mut self) {
        let start = tokio::time::Instant::now() + self.ping_every;
        let mut ping = tokio::time::interval_at(start, self.ping_every);
        // One wait for the close request for the writer's whole life, not one per wake-up: each
        // new wait registers with the token and deregisters when dropped.
        let signal = self.signal.clone();
        let close_requested = signal.requested();
        tokio::pin!(close_requested);
        let mut close_seen = false;
        let mut more_ready = false;
        while !self.finished {
            // A batch that stopped at its size limit left work queued: no need to wait.
            if !more_ready {
                tokio::select! {
                    biased;
                    () = self.outbox.wait_queued() => {}
                    () = &mut close_requested, if !close_seen => close_seen = true,
                    _ = ping.tick() => push_frame(&mut self.batch, OpCode::Ping, &[]),
                }
            }
            more_ready = self.fill_batch();
            if self.flush_batch().await.is_err() {
                break;
            }
        }
        self.outbox.close();
        let _ = self.io.shutdown().await;
    }

    fn take_control(&mut self, control: Control) {
        match control {
            Control::Frame(opcode, bytes) => {
                push_frame(&mut self.batch, opcode, &bytes);
                if opcode == OpCode::Close {
                    self.finished = true;
                }
            }
            Control::Activate => {
                self.active = true;
                if let Some(seam) = self.seam.as_mut() {
                    seam.until = Some(tokio::time::Instant::now() + SEAM_WINDOW);
                }
            }
            Control::Pause => {
                self.active = false;
                self.seam = None;
            }
            Control::Replayed(event) => {
                push_frame(&mut self.batch, self.data_opcode, &event.bytes);
                if event.key != EventKey::Other {
                    self.seam
                        .get_or_insert_with(|| Seam {
                            keys: HashSet::new(),
                            until: None,
                        })
                        .keys
                        .insert(event.key);
                }
            }
        }
    }

    /// Writes a live event unless a recent replay already wrote it.
    fn push_live(&mut self, event: OutEvent) {
        if let Some(seam) = &self.seam {
            if seam
                .until
                .is_some_and(|until| tokio::time::Instant::now() > until)
            {
                self.seam = None;
            } else if seam.keys.contains(&event.key) {
                return;
            }
        }
        push_frame(&mut self.batch, self.data_opcode, &event.bytes);
        if let Some(at_ms) = event.published_at_ms {
            self.published.push(at_ms);
        }
    }

    /// Takes what is queued, without waiting, up to the batch size: control frames first, then
    /// a requested close, then live events (once active). True when it stopped at the size limit
    /// with work possibly left.
    fn fill_batch(&mut self) -> bool {
        let outbox = Arc::clone(&self.outbox);
        while !self.finished {
            if self.batch.len() >= BATCH_BYTES {
                return true;
            }
            if let Some(control) = outbox.take_control() {
                self.take_control(control);
                continue;
            }
            if self.signal.code().is_some() {
                self.push_close();
                break;
            }
            if !self.active {
                break;
            }
            // Every queued event under one lock; it stops early for a control frame, which the
            // next round takes first.
            let mut full = false;
            let drained = outbox.take_events(|event| {
                self.push_live(event);
                full = self.batch.len() >= BATCH_BYTES;
                !full
            });
            if full {
                return true;
            }
            if drained {
                break;
            }
        }
        false
    }

    fn push_close(&mut self) {
        if self.finished {
            return;
        }
        let code = self.signal.code().unwrap_or(crate::hub::close_code::NORMAL);
        let mut payload = Vec::with_capacity(2);
        payload.extend_from_slice(&code.to_be_bytes());
        push_frame(&mut self.batch, OpCode::Close, &payload);
        self.finished = true;
    }

    async fn flush_batch(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self.io.write_all(&self.batch).await;
        if result.is_ok() && !self.published.is_empty() {
            let now_ms = chrono::Utc::now().timestamp_millis();
            for at_ms in self.published.drain(..) {
                self.delivery
                    .record((now_ms - at_ms).max(0) as f64 / 1000.0);
            }
        }
        self.published.clear();
        self.batch.clear();
        if self.batch.capacity() > KEEP_BYTES {
            self.batch = Vec::new();
        }
        result
    }
}

/// Appends one unmasked, final frame (server frames are never masked).
pub fn push_frame(batch: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    let mut frame = Frame::new(true, opcode, None, Payload::Borrowed(payload));
    let mut head = [0u8; 14];
    let len = frame.fmt_head(&mut head);
    batch.extend_from_slice(&head[..len]);
    batch.extend_from_slice(payload);
}

#[cfg(test)]
mod tests;
