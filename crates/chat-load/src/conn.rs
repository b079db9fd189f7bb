//! An open, upgraded socket as the scenarios use it: `recv` is cancel-safe (the pending read
//! lives in the struct, so a `select!` on a timer loses nothing), pings are handed back to be
//! answered, and a close from either side is one event.

use std::future::Future;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use fastwebsockets::{OpCode, WebSocketError};

use crate::ws::{self, ConnectError, Incoming, Reader, Target, Writer};

type ReadFuture = Pin<Box<dyn Future<Output = (Reader, Result<Incoming, WebSocketError>)>>>;

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
    read: Option<ReadFuture>,
    wr: Writer,
}

impl Conn {
    pub async fn open(
        target: &Target,
        source: Ipv4Addr,
        query: &str,
        limit: Duration,
    ) -> Result<Conn, ConnectError> {
        let (rd, wr) = tokio::time::timeout(limit, ws::connect(target, source, query))
            .await
            .map_err(|_| ConnectError::Timeout)??;
        Ok(Conn {
            read: Some(Box::pin(ws::next(rd))),
            wr,
        })
    }

    /// The next event. Cancel-safe.
    pub async fn recv(&mut self) -> Event {
        let Some(read) = self.read.as_mut() else {
            // Closed already: never completes, so a select! arm on it stays quiet.
            return std::future::pending().await;
        };
        let (rd, result) = read.await;
        match result {
            Ok(Incoming { opcode, payload }) => {
                self.read = Some(Box::pin(ws::next(rd)));
                match opcode {
                    OpCode::Text | OpCode::Binary => Event::Text(payload),
                    OpCode::Ping => Event::Ping(payload),
                    OpCode::Close => {
                        self.read = None;
                        Event::Closed {
                            code: Some(ws::close_code(&payload)),
                            reason: "close frame".into(),
                        }
                    }
                    // Pongs (to no ping of ours) and continuations: nothing to do.
                    _ => Event::Text(BytesMut::new()),
                }
            }
            Err(e) => {
                self.read = None;
                Event::Closed {
                    code: None,
                    reason: read_error_code(&e).to_string(),
                }
            }
        }
    }

    pub async fn send(&mut self, text: impl Into<Vec<u8>>) -> Result<(), WebSocketError> {
        ws::send_text(&mut self.wr, text).await
    }

    pub async fn pong(&mut self, payload: BytesMut) -> Result<(), WebSocketError> {
        ws::pong(&mut self.wr, payload).await
    }

    /// Our close: a close frame, then wait (at most `limit`) for the server's close or EOF, so
    /// that the server closes the TCP connection first and the TIME_WAIT is on its side, not on
    /// the driver's source ports.
    pub async fn close(mut self, limit: Duration) {
        if ws::close(&mut self.wr).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(limit, async {
            loop {
                match self.recv().await {
                    Event::Closed { .. } => break,
                    _ => continue,
                }
            }
        })
        .await;
    }
}

fn read_error_code(e: &WebSocketError) -> &'static str {
    match e {
        WebSocketError::UnexpectedEOF => "eof",
        WebSocketError::IoError(io) => ws::io_code(io),
        _ => "protocol",
    }
}
