//! A WebSocket client for the gateway, built on `tokio-tungstenite` (independent of the
//! gateway's own WebSocket stack), speaking JSON text frames or MessagePack binary frames.
//!
//! Receiving helpers panic with the socket's label and what was seen, so a failing test says which
//! socket missed which frame. WebSocket pings from the server are answered automatically while the
//! client reads.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How the client authenticates.
#[derive(Debug, Clone, Copy)]
pub enum Auth<'a> {
    /// `Authorization: Bearer <token>` on the upgrade request.
    Header(&'a str),
    /// `?token=<token>` in the upgrade URL.
    Query(&'a str),
    /// `{"type":"auth","token":...}` as the first frame, sent right after the upgrade.
    FirstFrame(&'a str),
    /// Nothing (to test the auth timeout or a wrong first frame).
    None,
}

/// The frame encoding of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text frames (the default).
    Json,
    /// `?format=msgpack`: MessagePack maps in binary frames.
    Msgpack,
}

/// One thing read from the socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// A close frame with its code (None: a close frame without a code).
    Close(Option<u16>),
    /// The connection ended without a close frame (reset, EOF), with the error text.
    Gone(String),
}

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A connected WebSocket session.
pub struct WsClient {
    label: String,
    format: Format,
    stream: Stream,
    /// Frames read by `expect_no_frame_of_type` and kept for the next receive.
    pending: VecDeque<Value>,
    /// Set once the connection is closed or gone.
    ended: Option<Frame>,
    user_id: Option<u64>,
    session_id: Option<String>,
}

impl std::fmt::Debug for WsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsClient")
            .field("label", &self.label)
            .field("format", &self.format)
            .field("user_id", &self.user_id)
            .finish()
    }
}

fn with_query(url: &str, key: &str, value: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{key}={value}")
}

/// Percent-encodes a token for a query string (JWTs only hold URL-safe characters, but a test
/// may pass anything).
fn encode_query_value(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Whether `bytes` starts with a MessagePack map marker (fixmap, map16 or map32).
pub fn is_msgpack_map(bytes: &[u8]) -> bool {
    matches!(bytes.first(), Some(0x80..=0x8f | 0xde | 0xdf))
}

impl WsClient {
    /// Opens a session without waiting for `auth_ok` (with [`Auth::FirstFrame`] the auth frame
    /// is already sent).
    pub async fn connect(url: &str, auth: Auth<'_>, format: Format) -> anyhow::Result<WsClient> {
        let mut url = url.to_string();
        if format == Format::Msgpack {
            url = with_query(&url, "format", "msgpack");
        }
        if let Auth::Query(token) = auth {
            url = with_query(&url, "token", &encode_query_value(token));
        }
        let mut request = url
            .as_str()
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {url}"))?;
        if let Auth::Header(token) = auth {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a valid header value")?;
            request.headers_mut().insert("authorization", value);
        }
        let (stream, response) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(request),
        )
        .await
        .with_context(|| format!("WebSocket upgrade to {url} timed out"))?
        .with_context(|| format!("WebSocket upgrade to {url}"))?;
        if response.status().as_u16() != 101 {
            bail!("upgrade to {url} answered {}", response.status());
        }
        let mut client = WsClient {
            label: "ws".to_string(),
            format,
            stream,
            pending: VecDeque::new(),
            ended: None,
            user_id: None,
            session_id: None,
        };
        if let Auth::FirstFrame(token) = auth {
            client
                .try_send_json(&json!({"type": "auth", "token": token}))
                .await?;
        }
        Ok(client)
    }

    /// Opens a session and asserts that the first frame is `auth_ok`; returns the session and
    /// that frame.
    pub async fn connect_ok(url: &str, auth: Auth<'_>, format: Format) -> (WsClient, Value) {
        let mut client = Self::connect(url, auth, format)
            .await
            .unwrap_or_else(|e| panic!("connect {url} ({auth:?}): {e:#}"));
        let first = client.recv_json(Duration::from_secs(10)).await;
        assert_eq!(
            first.get("type").and_then(Value::as_str),
            Some("auth_ok"),
            "first frame after authenticating with {auth:?} on {url}: {first}"
        );
        client.user_id = first.get("user_id").and_then(Value::as_u64);
        client.session_id = first
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        (client, first)
    }

    /// A JSON session (header auth, `auth_ok` awaited) whose TCP receive buffer is tiny, so that
    /// a client that stops reading makes the server's writes block soon: for the "too slow"
    /// close.
    pub async fn connect_small_buffer(url: &str, token: &str) -> anyhow::Result<WsClient> {
        let mut request = url
            .into_client_request()
            .with_context(|| format!("bad WebSocket URL {url}"))?;
        request.headers_mut().insert(
            "authorization",
            HeaderValue::from_str(&format!("Bearer {token}"))
                .context("token is not a valid header value")?,
        );
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str().to_string())
            .context("URL without host")?;
        let addr = tokio::net::lookup_host(&host)
            .await?
            .next()
            .context("host does not resolve")?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(4096)?;
        let tcp = socket.connect(addr).await?;
        let (stream, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await?;
        let mut client = WsClient {
            label: "small-buffer".to_string(),
            format: Format::Json,
            stream,
            pending: VecDeque::new(),
            ended: None,
            user_id: None,
            session_id: None,
        };
        let first = client.recv_json(Duration::from_secs(10)).await;
        if first.get("type").and_then(Value::as_str) != Some("auth_ok") {
            bail!("expected auth_ok, got {first}");
        }
        client.user_id = first.get("user_id").and_then(Value::as_u64);
        Ok(client)
    }

    /// A JSON session authenticated with the header; panics unless `auth_ok` comes.
    pub async fn authed(url: &str, token: &str) -> WsClient {
        Self::connect_ok(url, Auth::Header(token), Format::Json)
            .await
            .0
    }

    /// Names the socket in failure messages.
    pub fn labeled(mut self, label: &str) -> WsClient {
        self.label = label.to_string();
        self
    }

    /// The label used in failure messages.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The `user_id` of `auth_ok`, if the session was opened with [`WsClient::connect_ok`].
    pub fn user_id(&self) -> Option<u64> {
        self.user_id
    }

    /// The `session_id` of `auth_ok`.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// The session's encoding.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Sends a frame in the session's encoding (JSON text or MessagePack binary).
    pub async fn try_send_json(&mut self, frame: &Value) -> anyhow::Result<()> {
        let message = match self.format {
            Format::Json => Message::text(frame.to_string()),
            Format::Msgpack => Message::binary(
                rmp_serde::to_vec_named(frame).context("encoding a frame as MessagePack")?,
            ),
        };
        self.send_message(message).await
    }

    /// Sends a frame in the session's encoding; panics if the socket is gone.
    pub async fn send_json(&mut self, frame: &Value) {
        if let Err(e) = self.try_send_json(frame).await {
            panic!("[{}] sending {frame}: {e:#}", self.label);
        }
    }

    /// Sends a text frame as is.
    pub async fn send_text(&mut self, text: &str) {
        if let Err(e) = self.send_message(Message::text(text)).await {
            panic!("[{}] sending a text frame: {e:#}", self.label);
        }
    }

    /// Sends a binary frame as is.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        if let Err(e) = self.send_message(Message::binary(bytes)).await {
            panic!("[{}] sending a binary frame: {e:#}", self.label);
        }
    }

    /// Sends a WebSocket ping (control frame).
    pub async fn send_ping(&mut self, payload: Vec<u8>) {
        if let Err(e) = self.send_message(Message::Ping(Bytes::from(payload))).await {
            panic!("[{}] sending a ping: {e:#}", self.label);
        }
    }

    /// Sends any message (a raw escape hatch).
    pub async fn send_message(&mut self, message: Message) -> anyhow::Result<()> {
        tokio::time::timeout(Duration::from_secs(10), self.stream.send(message))
            .await
            .context("send timed out")?
            .context("send failed")
    }

    /// Reads the next data or close frame, answering pings and skipping pongs on the way. `None`
    /// when nothing came within `timeout`. After the end of the connection it keeps returning
    /// how it ended.
    pub async fn recv_frame(&mut self, timeout: Duration) -> Option<Frame> {
        if let Some(ended) = &self.ended {
            return Some(ended.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let next = match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            let frame = match next {
                None => Frame::Gone("stream ended".into()),
                Some(Err(e)) => Frame::Gone(e.to_string()),
                Some(Ok(Message::Text(text))) => return Some(Frame::Text(text.to_string())),
                Some(Ok(Message::Binary(bytes))) => return Some(Frame::Binary(bytes.to_vec())),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(close))) => {
                    Frame::Close(close.map(|c: CloseFrame| u16::from(c.code)))
                }
            };
            self.ended = Some(frame.clone());
            return Some(frame);
        }
    }

    /// Decodes a data frame in the session's encoding. A frame of the other kind is an error:
    /// the contract says every frame of a MessagePack session is binary, and JSON ones are text.
    fn decode(&self, frame: &Frame) -> Result<Value, String> {
        match (frame, self.format) {
            (Frame::Text(text), Format::Json) => serde_json::from_str(text)
                .map_err(|e| format!("text frame is not JSON ({e}): {text:?}")),
            (Frame::Binary(bytes), Format::Msgpack) => {
                if !is_msgpack_map(bytes) {
                    return Err(format!(
                        "binary frame is not a MessagePack map: {bytes:02x?}"
                    ));
                }
                rmp_serde::from_slice(bytes)
                    .map_err(|e| format!("binary frame is not MessagePack ({e}): {bytes:02x?}"))
            }
            (Frame::Text(text), Format::Msgpack) => {
                Err(format!("text frame in a MessagePack session: {text:?}"))
            }
            (Frame::Binary(bytes), Format::Json) => {
                Err(format!("binary frame in a JSON session: {bytes:02x?}"))
            }
            (other, _) => Err(format!("not a data frame: {other:?}")),
        }
    }

    /// The next frame as JSON, or `None` if nothing came within `timeout`. Panics if the
    /// connection ends or the frame cannot be decoded.
    pub async fn recv_json_opt(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(value) = self.pending.pop_front() {
            return Some(value);
        }
        let frame = self.recv_frame(timeout).await?;
        match &frame {
            Frame::Close(_) | Frame::Gone(_) => {
                panic!(
                    "[{}] expected a frame, the connection ended: {frame:?}",
                    self.label
                )
            }
            _ => {}
        }
        match self.decode(&frame) {
            Ok(value) => Some(value),
            Err(e) => panic!("[{}] {e}", self.label),
        }
    }

    /// The next `new_message` event's `(seq, client_msg_id)` within `within`, skipping other
    /// events; `None` when none came in time.
    pub async fn next_new_message(&mut self, within: Duration) -> Option<(u64, String)> {
        let deadline = Instant::now() + within;
        loop {
            let frame = self
                .recv_json_opt(deadline.saturating_duration_since(Instant::now()))
                .await?;
            if frame["type"] == json!("new_message") {
                let message = &frame["message"];
                let client_msg_id = message["client_msg_id"].as_str().unwrap_or_default();
                return Some((crate::id_of(message, "seq"), client_msg_id.to_string()));
            }
        }
    }

    /// The next frame as JSON; panics on timeout, end of connection or a bad frame.
    pub async fn recv_json(&mut self, timeout: Duration) -> Value {
        match self.recv_json_opt(timeout).await {
            Some(value) => value,
            None => panic!("[{}] no frame within {timeout:?}", self.label),
        }
    }

    /// Reads until a frame with `"type": kind` arrives and returns it; other frames are dropped.
    pub async fn recv_until(&mut self, kind: &str, timeout: Duration) -> Value {
        self.recv_matching(timeout, &format!("a `{kind}` frame"), |v| {
            v.get("type").and_then(Value::as_str) == Some(kind)
        })
        .await
    }

    /// Reads until a frame satisfying `pred` arrives and returns it; other frames are dropped.
    pub async fn recv_matching(
        &mut self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_json_opt(left).await {
                Some(value) if pred(&value) => return value,
                Some(value) => skipped.push(value),
                None => panic!(
                    "[{}] no {what} within {timeout:?}; frames seen meanwhile: {}",
                    self.label,
                    show(&skipped)
                ),
            }
        }
    }

    /// Sends a request frame (which must carry an `id`) and waits for the `ack`, `error` or
    /// `pong` frame echoing that id; other frames are dropped.
    pub async fn request(&mut self, frame: &Value, timeout: Duration) -> Value {
        let id = frame
            .get("id")
            .cloned()
            .unwrap_or_else(|| panic!("request frame without an id: {frame}"));
        self.send_json(frame).await;
        self.recv_matching(timeout, &format!("reply to {frame}"), |v| {
            v.get("id") == Some(&id)
                && matches!(
                    v.get("type").and_then(Value::as_str),
                    Some("ack" | "error" | "pong")
                )
        })
        .await
    }

    /// Every frame that arrives within `duration` (plus the ones kept from before).
    pub async fn collect_for(&mut self, duration: Duration) -> Vec<Value> {
        let mut out: Vec<Value> = self.pending.drain(..).collect();
        let deadline = Instant::now() + duration;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.recv_frame(left).await {
                None => return out,
                Some(Frame::Close(_) | Frame::Gone(_)) => return out,
                Some(frame) => match self.decode(&frame) {
                    Ok(value) => out.push(value),
                    Err(e) => panic!("[{}] {e}", self.label),
                },
            }
        }
    }

    /// Reads for `duration` and panics if a frame with `"type": kind` arrives. Other frames are
    /// kept for the next receive.
    pub async fn expect_no_frame_of_type(&mut self, kind: &str, duration: Duration) {
        let frames = self.collect_for(duration).await;
        if let Some(bad) = frames
            .iter()
            .find(|v| v.get("type").and_then(Value::as_str) == Some(kind))
        {
            panic!(
                "[{}] expected no `{kind}` frame for {duration:?}, got {bad} (all: {})",
                self.label,
                show(&frames)
            );
        }
        self.pending.extend(frames);
    }

    /// Waits for the server to close the connection and asserts the close code; data frames on
    /// the way are skipped. Returns the code.
    pub async fn expect_close(&mut self, code: u16, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        let mut skipped: Vec<String> = self.pending.drain(..).map(|v| v.to_string()).collect();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv_frame(left).await {
                None => panic!(
                    "[{}] no close {code} within {timeout:?}; frames seen meanwhile: [{}]",
                    self.label,
                    skipped.join(", ")
                ),
                Some(Frame::Close(got)) => {
                    assert_eq!(
                        got,
                        Some(code),
                        "[{}] close code (frames before it: [{}])",
                        self.label,
                        skipped.join(", ")
                    );
                    return code;
                }
                Some(Frame::Gone(e)) => panic!(
                    "[{}] expected close {code}, the connection ended without a close frame: \
                     {e} (frames before: [{}])",
                    self.label,
                    skipped.join(", ")
                ),
                Some(frame) => {
                    let mut text = match self.decode(&frame) {
                        Ok(v) => v.to_string(),
                        Err(e) => e,
                    };
                    if text.len() > 300 {
                        let cut = (0..=300)
                            .rev()
                            .find(|i| text.is_char_boundary(*i))
                            .unwrap_or(0);
                        text.truncate(cut);
                        text.push_str("...");
                    }
                    skipped.push(text);
                    if skipped.len() > 10 {
                        skipped.remove(0);
                    }
                }
            }
        }
    }

    /// Whether the connection has ended (as far as the client has read).
    pub fn is_ended(&self) -> bool {
        self.ended.is_some()
    }

    /// Closes the session normally (1000) and waits briefly for the server's close reply.
    pub async fn close(mut self) {
        if self.ended.is_some() {
            return;
        }
        let _ = self
            .send_message(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "bye".into(),
            })))
            .await;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(None) | Ok(Some(Err(_))) | Err(_) => return,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

fn show(values: &[Value]) -> String {
    let parts: Vec<String> = values.iter().map(Value::to_string).collect();
    format!("[{}]", parts.join(", "))
}
