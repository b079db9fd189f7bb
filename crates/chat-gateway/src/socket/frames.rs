//! Reading a client's WebSocket frames (RFC 6455, server side) straight from the TCP stream,
//! holding no buffer while the socket is idle.
//!
//! Why not fastwebsockets' reader: it keeps an 8 KiB buffer for each connection's whole life
//! (`BytesMut::with_capacity(8192)`, which a caller cannot size), and that buffer was 8,192 of
//! the 11,000-odd bytes an idle socket cost a gateway (DHAT, docs/performance.md). Here a socket
//! waits for readability with nothing allocated, reads into a buffer on the stack, and keeps only
//! the bytes of a frame that has not fully arrived. The library still does the upgrade and the
//! outbound frame headers; unmasking is its `unmask`.
//!
//! What this checks, so that the caller sees only well-formed frames: the mask (a client must
//! mask, 5.1), the reserved bits (no extension is negotiated), the opcode, that control frames
//! are whole and at most 125 bytes (5.5), and the frame size limit before any payload is read.
//! Message-level rules (fragment order, UTF-8 of text, the close payload) are the caller's
//! (`assembler`, `close_payload`).

use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::OpCode;
use tokio::net::tcp::OwnedReadHalf;

use super::assembler::CloseCause;
use crate::hub::close_code;

/// Bytes read from the kernel per call: enough for a burst of small frames in one system call.
/// It lives on the stack of a synchronous call, never in the socket's future.
const READ_CHUNK: usize = 8 * 1024;
/// The largest control frame payload (RFC 6455 5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One frame as the client sent it, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: OpCode,
    pub payload: Bytes,
}

/// Why no frame came.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The peer closed the stream or it failed: nothing more to read or answer.
    Ended,
    /// The peer broke the protocol: close with this code.
    Broken(CloseCause),
}

/// The reading half of one client connection.
pub struct FrameReader {
    io: OwnedReadHalf,
    /// Bytes read and not yet returned as frames: empty, with no allocation, between frames.
    pending: BytesMut,
    /// The largest payload one frame may carry.
    max_payload: usize,
}

impl FrameReader {
    /// `early` holds what was read past the upgrade request (a client may send its first frame
    /// without waiting for the 101).
    pub fn new(io: OwnedReadHalf, early: Bytes, max_payload: usize) -> Self {
        Self {
            io,
            pending: BytesMut::from(&early[..]),
            max_payload,
        }
    }

    /// The next frame. Cancel-safe: bytes already read stay for the next call.
    pub async fn next_frame(&mut self) -> Result<RawFrame, ReadError> {
        loop {
            if let Some(frame) = parse(&mut self.pending, self.max_payload)? {
                if self.pending.is_empty() {
                    // What an idle socket holds: nothing.
                    self.pending = BytesMut::new();
                }
                return Ok(frame);
            }
            self.fill().await?;
        }
    }

    /// Waits until the stream has bytes and appends them to `pending`.
    async fn fill(&mut self) -> Result<(), ReadError> {
        loop {
            self.io.readable().await.map_err(|_| ReadError::Ended)?;
            match read_now(&self.io, &mut self.pending) {
                Ok(0) => return Err(ReadError::Ended),
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return Err(ReadError::Ended),
            }
        }
    }
}

fn read_now(io: &OwnedReadHalf, pending: &mut BytesMut) -> std::io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let read = io.try_read(&mut chunk)?;
    pending.extend_from_slice(&chunk[..read]);
    Ok(read)
}

/// Takes one whole frame off the front of `buf`, or `None` when it has not all arrived. Nothing
/// is reserved for the rest of a frame: a header alone does not make the gateway allocate the
/// size it announces, so a slow client holds about what it has sent.
pub fn parse(buf: &mut BytesMut, max_payload: usize) -> Result<Option<RawFrame>, ReadError> {
    let [first, second, ..] = buf[..] else {
        return Ok(None);
    };
    if first & 0x70 != 0 {
        return broken(close_code::PROTOCOL_ERROR, "reserved bits must be 0");
    }
    let Ok(opcode) = OpCode::try_from(first & 0x0f) else {
        return broken(close_code::PROTOCOL_ERROR, "unknown opcode");
    };
    let fin = first & 0x80 != 0;
    if second & 0x80 == 0 {
        return broken(close_code::PROTOCOL_ERROR, "client frames must be masked");
    }
    let (length, length_bytes) = match second & 0x7f {
        126 => match buf.get(2..4) {
            Some(bytes) => (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 2),
            None => return Ok(None),
        },
        127 => match buf
            .get(2..10)
            .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        {
            Some(bytes) => (u64::from_be_bytes(bytes), 8),
            None => return Ok(None),
        },
        short => (u64::from(short), 0),
    };
    let control = matches!(opcode, OpCode::Close | OpCode::Ping | OpCode::Pong);
    if control && !fin {
        return broken(
            close_code::PROTOCOL_ERROR,
            "control frames must not be fragmented",
        );
    }
    if control && length > MAX_CONTROL_PAYLOAD {
        return broken(
            close_code::PROTOCOL_ERROR,
            "control frames carry at most 125 bytes",
        );
    }
    if length > max_payload as u64 {
        return broken(close_code::POLICY, "message too large");
    }
    // Within `max_payload`, so it fits a usize.
    let length = length as usize;
    let head = 2 + length_bytes + 4;
    if buf.len() < head + length {
        return Ok(None);
    }
    let mask = [buf[head - 4], buf[head - 3], buf[head - 2], buf[head - 1]];
    buf.advance(head);
    let mut payload = buf.split_to(length);
    fastwebsockets::unmask(&mut payload, mask);
    Ok(Some(RawFrame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

fn broken<T>(code: u16, reason: &'static str) -> Result<T, ReadError> {
    Err(ReadError::Broken(CloseCause { code, reason }))
}

/// Checks a close frame's payload (RFC 6455 5.5.1, 7.4): empty, or a code a peer may send and a
/// UTF-8 reason.
pub fn close_payload(payload: &[u8]) -> Result<(), CloseCause> {
    let protocol = |reason| CloseCause {
        code: close_code::PROTOCOL_ERROR,
        reason,
    };
    match payload {
        [] => Ok(()),
        [_] => Err(protocol("a close payload is a 2-byte code and a reason")),
        [high, low, reason @ ..] => {
            // The codes fastwebsockets accepted: the others are reserved, or never sent on the
            // wire (1005, 1006, 1015).
            let code = u16::from_be_bytes([*high, *low]);
            if !matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999) {
                return Err(protocol("close code not allowed"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(CloseCause {
                    code: close_code::INVALID_DATA,
                    reason: "close reason is not valid UTF-8",
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
