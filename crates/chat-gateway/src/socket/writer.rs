//! The writing half of a socket. It frames outbound messages itself (with the library's header
//! formatting) into one buffer per wake-up, so a burst of events costs one write syscall, and no
//! buffer is held while the socket is idle.
//!
//! Order of service: control frames (replies, pongs, close echoes) first, then a close request,
//! then events. Events are held back until `Activate`, so `auth_ok` is always the first frame.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chat_proto::WireFormat;
use fastwebsockets::{Frame, OpCode, Payload};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::hub::CloseSignal;

/// Stop adding frames to a batch beyond this size.
const BATCH_BYTES: usize = 64 * 1024;
/// Keep a grown buffer between batches only up to this size.
const KEEP_BYTES: usize = 16 * 1024;

pub enum Control {
    /// A frame to write as is (replies, pong and close answers to the peer).
    Frame(OpCode, Bytes),
    /// Start writing queued events (after `auth_ok`).
    Activate,
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
    control: mpsc::Receiver<Control>,
    events: mpsc::Receiver<Bytes>,
    signal: Arc<CloseSignal>,
    ping_every: Duration,
    active: bool,
    events_open: bool,
    finished: bool,
    batch: Vec<u8>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(
        io: W,
        format: WireFormat,
        control: mpsc::Receiver<Control>,
        events: mpsc::Receiver<Bytes>,
        signal: Arc<CloseSignal>,
        ping_every: Duration,
    ) -> Self {
        Self {
            io,
            data_opcode: data_opcode(format),
            control,
            events,
            signal,
            ping_every,
            active: false,
            events_open: true,
            finished: false,
            batch: Vec::new(),
        }
    }

    pub async fn run(mut self) {
        let start = tokio::time::Instant::now() + self.ping_every;
        let mut ping = tokio::time::interval_at(start, self.ping_every);
        while !self.finished {
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    Some(control) => self.take_control(control),
                    None => self.push_close(),
                },
                () = self.signal.requested() => self.push_close(),
                event = self.events.recv(), if self.active && self.events_open => match event {
                    Some(bytes) => push_frame(&mut self.batch, self.data_opcode, &bytes),
                    None => self.events_open = false,
                },
                _ = ping.tick() => push_frame(&mut self.batch, OpCode::Ping, &[]),
            }
            self.fill_batch();
            if self.flush_batch().await.is_err() {
                break;
            }
        }
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
            Control::Activate => self.active = true,
        }
    }

    /// Adds whatever else is ready, without waiting, up to the batch size.
    fn fill_batch(&mut self) {
        while !self.finished && self.batch.len() < BATCH_BYTES {
            if let Ok(control) = self.control.try_recv() {
                self.take_control(control);
                continue;
            }
            if self.signal.code().is_some() {
                self.push_close();
                break;
            }
            if !(self.active && self.events_open) {
                break;
            }
            match self.events.try_recv() {
                Ok(bytes) => push_frame(&mut self.batch, self.data_opcode, &bytes),
                Err(_) => break,
            }
        }
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
mod tests {
    use super::push_frame;
    use fastwebsockets::OpCode;

    #[test]
    fn frame_headers_follow_rfc6455() {
        let mut out = Vec::new();
        push_frame(&mut out, OpCode::Text, b"hi");
        assert_eq!(out, vec![0x81, 2, b'h', b'i']);
        let mut out = Vec::new();
        push_frame(&mut out, OpCode::Binary, &[0u8; 300]);
        assert_eq!(&out[..4], &[0x82, 126, 1, 44]);
        assert_eq!(out.len(), 304);
        let mut out = Vec::new();
        push_frame(&mut out, OpCode::Close, &4008u16.to_be_bytes());
        assert_eq!(out, vec![0x88, 2, 0x0f, 0xa8]);
    }
}
