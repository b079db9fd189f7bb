//! A raw WebSocket client over plain TCP, for the frames a well-behaved library never sends:
//! unmasked client frames, invalid UTF-8 in text frames, hand-made fragments. It also reads the
//! upgrade's HTTP status, so refused handshakes (429, 403) can be checked.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;

/// One frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        (self.opcode == OP_CLOSE && self.payload.len() >= 2)
            .then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }

    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

pub struct RawWs {
    stream: TcpStream,
    buffer: Vec<u8>,
}

/// The answer to an upgrade request: the status, and the connection when it was 101.
pub struct Handshake {
    pub status: u16,
    /// Response headers and body as text (for error messages).
    pub head: String,
    pub ws: Option<RawWs>,
}

impl RawWs {
    /// Sends an upgrade request to `addr` (`host:port`) for `path_and_query`, with extra headers.
    pub async fn handshake(
        addr: &str,
        path_and_query: &str,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<Handshake> {
        let mut stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let mut request = format!(
            "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut buffer = Vec::new();
        let end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
                .await
                .context("waiting for the upgrade response")??;
            if n == 0 {
                bail!("connection closed during the handshake");
            }
            buffer.extend_from_slice(&chunk[..n]);
        };
        let mut head = String::from_utf8_lossy(&buffer[..end]).into_owned();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no status in {head:?}"))?;
        let rest = buffer.split_off(end);
        if status != 101 {
            // Read what is left of the (small) error body.
            let mut body = rest;
            let mut chunk = [0u8; 4096];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), stream.read(&mut chunk)).await
            {
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..n]);
            }
            head.push_str(&String::from_utf8_lossy(&body));
            return Ok(Handshake {
                status,
                head,
                ws: None,
            });
        }
        Ok(Handshake {
            status,
            head,
            ws: Some(RawWs {
                stream,
                buffer: rest,
            }),
        })
    }

    /// Upgrades with a bearer token in the header; panics unless the answer is 101.
    pub async fn connect_authed(addr: &str, token: &str) -> RawWs {
        let auth = format!("Bearer {token}");
        let handshake = Self::handshake(addr, "/ws", &[("Authorization", &auth)])
            .await
            .unwrap_or_else(|e| panic!("raw upgrade to {addr}: {e:#}"));
        assert_eq!(handshake.status, 101, "upgrade: {}", handshake.head);
        handshake
            .ws
            .unwrap_or_else(|| panic!("no socket after 101"))
    }

    /// Writes one frame; `mask` false makes it an (illegal) unmasked client frame.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: bool) {
        let mut frame = vec![(u8::from(fin) << 7) | opcode];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => frame.push(mask_bit | n as u8),
            n if n <= 0xffff => {
                frame.push(mask_bit | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(mask_bit | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            let key: [u8; 4] = rand::random();
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            frame.extend_from_slice(payload);
        }
        // The server may already have closed on an earlier frame; the reader will see that.
        let _ = self.stream.write_all(&frame).await;
    }

    /// Sends a whole masked text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(true, OP_TEXT, text.as_bytes(), true).await;
    }

    async fn fill(&mut self, want: usize, deadline: tokio::time::Instant) -> anyhow::Result<()> {
        while self.buffer.len() < want {
            let mut chunk = [0u8; 8192];
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .context("timed out waiting for a frame")??;
            if n == 0 {
                bail!("connection closed");
            }
            self.buffer.extend_from_slice(&chunk[..n]);
        }
        Ok(())
    }

    /// Reads the next server frame.
    pub async fn read_frame(&mut self, timeout: Duration) -> anyhow::Result<RawFrame> {
        let deadline = tokio::time::Instant::now() + timeout;
        self.fill(2, deadline).await?;
        let fin = self.buffer[0] & 0x80 != 0;
        let opcode = self.buffer[0] & 0x0f;
        let masked = self.buffer[1] & 0x80 != 0;
        let (len, mut offset) = match self.buffer[1] & 0x7f {
            126 => {
                self.fill(4, deadline).await?;
                (
                    u16::from_be_bytes([self.buffer[2], self.buffer[3]]) as usize,
                    4,
                )
            }
            127 => {
                self.fill(10, deadline).await?;
                let mut bytes = [0u8; 8];
                bytes.copy_from_slice(&self.buffer[2..10]);
                (u64::from_be_bytes(bytes) as usize, 10)
            }
            n => (n as usize, 2),
        };
        if masked {
            offset += 4;
        }
        self.fill(offset + len, deadline).await?;
        let payload = self.buffer[offset..offset + len].to_vec();
        self.buffer.drain(..offset + len);
        Ok(RawFrame {
            fin,
            opcode,
            payload,
        })
    }

    /// Reads frames until a close frame and returns its code; panics if none comes in time.
    pub async fn expect_close(&mut self, timeout: Duration) -> u16 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.read_frame(left).await {
                Ok(frame) if frame.opcode == OP_CLOSE => {
                    return frame.close_code().unwrap_or(1005);
                }
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame: {e:#}"),
            }
        }
    }

    /// Reads frames until a JSON text frame of `kind` arrives.
    pub async fn recv_type(&mut self, kind: &str, timeout: Duration) -> serde_json::Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let frame = self
                .read_frame(left)
                .await
                .unwrap_or_else(|e| panic!("waiting for {kind}: {e:#}"));
            assert_ne!(
                frame.opcode,
                OP_CLOSE,
                "closed ({:?}) while waiting for {kind}",
                frame.close_code()
            );
            if let Some(json) = frame.json()
                && json["type"] == kind
            {
                return json;
            }
        }
    }
}
