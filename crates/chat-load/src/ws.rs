//! One WebSocket client connection: TCP from a chosen source address, the HTTP/1.1 upgrade, and
//! fastwebsockets (the gateway's own WebSocket library) for the frames, split into a read half
//! and a write half so a socket's task can write while a read is pending.
//!
//! The upgrade request is written and its answer parsed here (httparse for the response, the
//! RFC 6455 accept-key check with sha1 + base64) rather than through hyper's client connection,
//! which fastwebsockets' `handshake::client` uses: that spawns a connection task and keeps
//! hyper's buffers per socket, while a load driver opening 900 sockets a second, or holding
//! 100,000, should spend as little of the machine as it can on itself. The stream stays a plain
//! `TcpStream`'s owned halves (no lock between them).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocketError, WebSocketRead, WebSocketWrite};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::TcpSocket;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub type Reader = WebSocketRead<Prefixed>;

/// `IP_BIND_ADDRESS_NO_PORT`: the bind to a source address leaves the port to `connect`, which
/// may then share a port among different destinations. Without it every bound socket reserves a
/// port of that address for itself: 100,000 sockets over eight addresses took 12,500 of each
/// address's 28,000 ephemeral ports, the services' own connections on 127.0.0.1 (gateways to
/// chat-api) ran out of them, and every connect searched a mostly taken range.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn defer_port_choice(socket: &TcpSocket) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let enable: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, a pointer to a c_int that outlives the call and its
    // size: what setsockopt(2) reads for this option.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&enable as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn defer_port_choice(_: &TcpSocket) -> io::Result<()> {
    Ok(())
}
pub type Writer = WebSocketWrite<OwnedWriteHalf>;

/// A gateway's WebSocket endpoint, parsed once.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    /// `host:port` for the Host header.
    pub authority: String,
    pub path: String,
}

impl Target {
    /// `ws://host:port/path` with a numeric IPv4 host (the load tests' gateways).
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("{url}: only ws:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr: SocketAddr = authority.parse().map_err(|_| {
            anyhow::anyhow!("{url}: the host must be ip:port (e.g. 127.0.0.1:18281)")
        })?;
        Ok(Target {
            addr,
            authority: authority.to_string(),
            path: path.to_string(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connecting: {0}")]
    Io(#[from] io::Error),
    #[error("the upgrade was answered with HTTP {0}")]
    Status(u16),
    #[error("malformed upgrade response: {0}")]
    Response(&'static str),
    #[error("timed out")]
    Timeout,
}

impl ConnectError {
    /// A short tag for the error counters (refused, reset, emfile, http_429, ...).
    pub fn code(&self) -> String {
        match self {
            ConnectError::Io(e) => io_code(e).to_string(),
            ConnectError::Status(s) => format!("http_{s}"),
            ConnectError::Response(_) => "bad_response".into(),
            ConnectError::Timeout => "timeout".into(),
        }
    }
}

pub fn io_code(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "refused",
        io::ErrorKind::ConnectionReset => "reset",
        io::ErrorKind::ConnectionAborted => "aborted",
        io::ErrorKind::AddrNotAvailable => "addr_not_available",
        io::ErrorKind::AddrInUse => "addr_in_use",
        io::ErrorKind::TimedOut => "timeout",
        io::ErrorKind::UnexpectedEof => "eof",
        io::ErrorKind::BrokenPipe => "broken_pipe",
        _ if e.raw_os_error() == Some(24) => "emfile",
        _ => "io",
    }
}

/// Opens a TCP connection from `source` and upgrades it; `query` (with its `?`, or empty) goes
/// on the path. Returns the halves once the 101 arrived.
pub async fn connect(
    target: &Target,
    source: Ipv4Addr,
    query: &str,
) -> Result<(Reader, Writer), ConnectError> {
    let socket = TcpSocket::new_v4()?;
    // Closed sockets' ports in TIME_WAIT may be bound again (loopback reuses them safely).
    socket.set_reuseaddr(true)?;
    defer_port_choice(&socket)?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(source, 0)))?;
    let mut stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let key_bytes: [u8; 16] = rand::random();
    let key = base64::engine::general_purpose::STANDARD.encode(key_bytes);
    let request = format!(
        "GET {}{} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.path, query, target.authority, key
    );
    stream.write_all(request.as_bytes()).await?;

    let mut buf = BytesMut::with_capacity(1024);
    let header_len = loop {
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ConnectError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let code = response.code.unwrap_or(0);
                if code != 101 {
                    return Err(ConnectError::Status(code));
                }
                let accept = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
                    .map(|h| h.value)
                    .ok_or(ConnectError::Response("no Sec-WebSocket-Accept"))?;
                if accept != accept_key(&key).as_bytes() {
                    return Err(ConnectError::Response("wrong Sec-WebSocket-Accept"));
                }
                break len;
            }
            Ok(httparse::Status::Partial) if buf.len() < 8192 => continue,
            Ok(httparse::Status::Partial) => {
                return Err(ConnectError::Response("headers too long"));
            }
            Err(_) => return Err(ConnectError::Response("not HTTP")),
        }
    };
    // Frames the gateway sent right behind the 101 (auth_ok with ?token=) are read first.
    buf.advance(header_len);
    let (read, write) = stream.into_split();
    let prefixed = Prefixed {
        prefix: buf.freeze(),
        inner: read,
    };
    let (mut rd, wr) = fastwebsockets::after_handshake_split(prefixed, write, Role::Client);
    rd.set_auto_pong(false);
    rd.set_auto_close(false);
    rd.set_max_message_size(1 << 20);
    Ok((rd, wr))
}

/// RFC 6455: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// A frame read, owned, so the read half can move on.
pub struct Incoming {
    pub opcode: OpCode,
    pub payload: BytesMut,
}

/// Reads the next frame; takes and gives back the read half, so that the future can live across
/// a socket task's `select!` loop (fastwebsockets' read is not cancel-safe).
pub async fn next(mut rd: Reader) -> (Reader, Result<Incoming, WebSocketError>) {
    let mut no_obligations = |_: Frame<'_>| async { Ok::<(), WebSocketError>(()) };
    let result = match rd.read_frame(&mut no_obligations).await {
        Ok(frame) => {
            let opcode = frame.opcode;
            let payload = match frame.payload {
                Payload::Bytes(b) => b,
                other => BytesMut::from(&other[..]),
            };
            Ok(Incoming { opcode, payload })
        }
        Err(e) => Err(e),
    };
    (rd, result)
}

pub async fn send_text(wr: &mut Writer, text: impl Into<Vec<u8>>) -> Result<(), WebSocketError> {
    wr.write_frame(Frame::text(Payload::Owned(text.into())))
        .await
}

pub async fn pong(wr: &mut Writer, payload: BytesMut) -> Result<(), WebSocketError> {
    wr.write_frame(Frame::pong(Payload::Owned(payload.to_vec())))
        .await
}

pub async fn close(wr: &mut Writer) -> Result<(), WebSocketError> {
    wr.write_frame(Frame::close(1000, b"")).await
}

/// The close code of a close frame's payload (1005 when it carries none).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

/// The read half, with the bytes that came in with the 101 response served first.
pub struct Prefixed {
    prefix: Bytes,
    inner: OwnedReadHalf,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            let head = self.prefix.split_to(n);
            buf.put_slice(&head);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

#[cfg(test)]
mod tests;
