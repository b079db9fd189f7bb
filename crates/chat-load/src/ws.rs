//! One WebSocket client connection: TCP from a chosen source address, the HTTP/1.1 upgrade, and
//! the few frames a client reads and writes, encoded and decoded here.
//!
//! The upgrade request is written and its answer parsed here (httparse for the response, the
//! RFC 6455 accept-key check with sha1 + base64) rather than through hyper's client connection,
//! which spawns a connection task and keeps hyper's buffers per socket, while a load driver
//! opening 900 sockets a second, or holding 100,000, should spend as little of the machine as it
//! can on itself. For the same reason the frames are not fastwebsockets': its read is not
//! cancel-safe, so a socket task that waits on a read and a timer at once had to box a new read
//! future for every frame, and its halves shut the socket down on drop (one more syscall a
//! session). Here a frame is decoded from the front of the socket's own read buffer, so a read
//! can be dropped and started again at no cost, and a client frame is encoded (masked) into one
//! buffer and written with one syscall.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use base64::Engine;
use bytes::{Buf, BytesMut};
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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
/// on the path. Returns the stream once the 101 arrived, with the bytes that came in behind the
/// response (the first frames) as the start of its read buffer.
pub async fn connect(
    target: &Target,
    source: Ipv4Addr,
    query: &str,
) -> Result<(TcpStream, BytesMut), ConnectError> {
    let socket = TcpSocket::new_v4()?;
    // Closed sockets' ports in TIME_WAIT may be bound again (loopback reuses them safely).
    socket.set_reuseaddr(true)?;
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

    let mut buf = BytesMut::with_capacity(READ_CHUNK);
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
            Ok(httparse::Status::Partial) if buf.len() < 8192 => {
                buf.reserve(READ_CHUNK);
                continue;
            }
            Ok(httparse::Status::Partial) => {
                return Err(ConnectError::Response("headers too long"));
            }
            Err(_) => return Err(ConnectError::Response("not HTTP")),
        }
    };
    // Frames the gateway sent right behind the 101 (auth_ok with ?token=) are decoded first.
    buf.advance(header_len);
    Ok((stream, buf))
}

/// RFC 6455: base64(SHA-1(key + GUID)).
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// How much a read asks for at least: the gateway's frames are a few hundred bytes, and a
/// socket's buffer is kept small because a worker may hold 18,000 of them.
pub const READ_CHUNK: usize = 1024;

/// Frames larger than this are a protocol error (the gateway sends nothing near it).
pub const MAX_FRAME: usize = 1 << 20;

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// A frame decoded off the front of a read buffer. Fragments are not joined: the gateway sends
/// each protocol frame whole in one frame.
#[derive(Debug)]
pub struct Incoming {
    pub opcode: u8,
    pub payload: BytesMut,
}

/// What makes a server's byte stream not WebSocket frames.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits set")]
    Reserved,
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
    #[error("a frame of {0} bytes")]
    TooLarge(u64),
    #[error("a fragmented or oversized control frame")]
    BadControl,
}

/// The first whole frame in `buf`, taken off it; `None` while it is incomplete (and then `buf`
/// has room reserved for the rest, so that the next read can complete it).
pub fn decode(buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
    let Some(&[b0, b1]) = buf.get(..2) else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(FrameError::Reserved);
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0F;
    match opcode {
        OP_CONTINUATION | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG if fin && b1 & 0x7F <= 125 => {}
        OP_CLOSE | OP_PING | OP_PONG => return Err(FrameError::BadControl),
        other => return Err(FrameError::Opcode(other)),
    }
    let masked = b1 & 0x80 != 0;
    let (extra, len) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (2, u64::from(u16::from_be_bytes([b[0], b[1]]))),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (8, u64::from_be_bytes(b)),
            None => return Ok(None),
        },
        n => (0, u64::from(n)),
    };
    if len >= MAX_FRAME as u64 {
        return Err(FrameError::TooLarge(len));
    }
    // Below MAX_FRAME, so it fits a usize.
    let len = len as usize;
    let header = 2 + extra + if masked { 4 } else { 0 };
    if buf.len() < header + len {
        buf.reserve(header + len - buf.len());
        return Ok(None);
    }
    let mask = masked.then(|| {
        [
            buf[header - 4],
            buf[header - 3],
            buf[header - 2],
            buf[header - 1],
        ]
    });
    buf.advance(header);
    let mut payload = buf.split_to(len);
    if let Some(mask) = mask {
        apply_mask(&mut payload, mask);
    }
    Ok(Some(Incoming { opcode, payload }))
}

/// A client frame (FIN set, masked with `mask`) of `opcode` and `payload`, in `out` (cleared
/// first).
pub fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.clear();
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if let Ok(len) = u16::try_from(len) {
        out.push(0x80 | 126);
        out.extend_from_slice(&len.to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

fn apply_mask(bytes: &mut [u8], mask: [u8; 4]) {
    for (i, b) in bytes.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// The close code of a close frame's payload (1005 when it carries none).
pub fn close_code(payload: &[u8]) -> u16 {
    if payload.len() >= 2 {
        u16::from_be_bytes([payload[0], payload[1]])
    } else {
        1005
    }
}

#[cfg(test)]
mod tests;
