//! The gateway's listening socket, with an accept queue sized for a reconnect storm.
//!
//! `tokio::net::TcpListener::bind` listens with mio's backlog of 1,024. When a gateway dies, the
//! survivors take its clients within the reconnect jitter: 7,500 connections in two seconds at
//! 15,000 clients (docs/performance.md, "A gateway killed under load"). Handshakes that find the
//! queue full are dropped by the kernel and retried by the client's TCP a second later, which
//! showed up as a one-second tail in reconnect → `synced`. The kernel caps the backlog at
//! `net.core.somaxconn`.

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// The accept queue asked for by default (`CHAT_LISTEN_BACKLOG`).
pub const DEFAULT_BACKLOG: u32 = 4096;

/// Binds `addr` (with `SO_REUSEADDR`, as tokio's own bind does) and listens with `backlog`.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog.max(1))
}

#[cfg(test)]
mod tests;
