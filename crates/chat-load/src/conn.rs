//! An open, upgraded socket as the scenarios use it: `recv` is cancel-safe (frames are decoded
//! from the socket's own buffer, and a read that is dropped has read nothing, so a `select!` on
//! a timer loses nothing), pings are handed back to be answered, and a close from either side is
//! one event.

use std::io;
use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::ws::{self, ConnectError, Target};

pub enum Event {
    Text(BytesMut),
    /// Answer with [`Conn::pong`].
    Ping(BytesMut),
    /// The server closed (with its close code) or the connection broke.
    Closed {
        code: Option<u16>,
        reason: String,
    },
}

pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not decoded yet.
    rbuf: BytesMut,
    /// The frame being written (kept: one allocation a socket, not one a frame).
    wbuf: Vec<u8>,
    /// xorshift32 state for the client frames' masks, which RFC 6455 wants unpredictable to
    /// intermediaries, not secret.
    mask: u32,
    /// No more frames will come (a close frame, EOF, or an error was seen).
    done: bool,
}

impl Conn {
    pub async fn open(
        target: &Target,
        source: Ipv4Addr,
        query: &str,
        limit: Duration,
    ) -> Result<Conn, ConnectError> {
        let (stream, rbuf) = tokio::time::timeout(limit, ws::connect(target, source, query))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        Ok(Conn {
            stream,
            rbuf,
            wbuf: Vec::new(),
            mask: rand::random::<u32>() | 1,
            done: false,
        })
    }

    /// The next event. Cancel-safe.
    pub async fn recv(&mut self) -> Event {
        if self.done {
            // Closed already: never completes, so a select! arm on it stays quiet.
            return std::future::pending().await;
        }
        loop {
            match ws::decode(&mut self.rbuf) {
                Ok(Some(frame)) => return self.event(frame),
                Ok(None) => {}
                Err(_) => return self.end(None, "protocol"),
            }
            if self.rbuf.capacity() - self.rbuf.len() < ws::READ_CHUNK / 4 {
                self.rbuf.reserve(ws::READ_CHUNK);
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => return self.end(None, "eof"),
                Ok(_) => {}
                Err(e) => return self.end(None, ws::io_code(&e)),
            }
        }
    }

    fn event(&mut self, frame: ws::Incoming) -> Event {
        match frame.opcode {
            ws::OP_TEXT | ws::OP_BINARY => Event::Text(frame.payload),
            ws::OP_PING => Event::Ping(frame.payload),
            ws::OP_CLOSE => self.end(Some(ws::close_code(&frame.payload)), "close frame"),
            // Pongs (to no ping of ours) and continuations: nothing to do.
            _ => Event::Text(BytesMut::new()),
        }
    }

    fn end(&mut self, code: Option<u16>, reason: &str) -> Event {
        self.done = true;
        Event::Closed {
            code,
            reason: reason.to_string(),
        }
    }

    async fn write(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        // xorshift32: a fresh mask a frame without a call into the thread's RNG.
        let mut x = self.mask;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask = x;
        ws::encode(&mut self.wbuf, opcode, payload, x.to_ne_bytes());
        self.stream.write_all(&self.wbuf).await
    }

    pub async fn send(&mut self, text: impl AsRef<[u8]>) -> io::Result<()> {
        self.write(ws::OP_TEXT, text.as_ref()).await
    }

    pub async fn pong(&mut self, payload: BytesMut) -> io::Result<()> {
        self.write(ws::OP_PONG, &payload).await
    }

    /// Our close: a close frame, then wait (at most `limit`) for the server's close or EOF, so
    /// that the server closes the TCP connection first and the TIME_WAIT is on its side, not on
    /// the driver's source ports.
    pub async fn close(mut self, limit: Duration) {
        if self
            .write(ws::OP_CLOSE, &1000u16.to_be_bytes())
            .await
            .is_err()
        {
            return;
        }
        let _ = tokio::time::timeout(limit, async {
            loop {
                if let Event::Closed { .. } = self.recv().await {
                    break;
                }
            }
        })
        .await;
    }
}
