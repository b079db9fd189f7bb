//! A TCP proxy with a switch, to cut a service's connection to MySQL or Redis and see how it
//! copes (503 `unavailable`, `/readyz` 503) without touching the shared servers; and, for MySQL,
//! one-shot traps that break the connection at a COMMIT, after or before the server got it, or
//! after a chosen prepared statement ran, so the client cannot know whether its write landed.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where a MySQL connection breaks at its next `COMMIT` (see [`TcpProxy::arm_commit_trap`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitTrap {
    /// The COMMIT reaches the server and runs; its answer is thrown away.
    LoseReply = 1,
    /// The COMMIT never reaches the server, which rolls the transaction back.
    LoseCommit = 2,
}

const NO_TRAP: u8 = 0;

/// Forwards `127.0.0.1:<port>` to a target. While down, it drops every open connection and
/// closes new ones right after accepting them.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    commit_trap: Arc<AtomicU8>,
    statement_trap: StatementTrap,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

/// The SQL text whose next execution loses its answer (see [`TcpProxy::arm_statement_trap`]).
type StatementTrap = Arc<Mutex<Option<&'static [u8]>>>;

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let commit_trap = Arc::new(AtomicU8::new(NO_TRAP));
        let statement_trap = StatementTrap::default();
        let (cut, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            target.to_string(),
            Switches {
                down: down.clone(),
                commit_trap: commit_trap.clone(),
                statement_trap: statement_trap.clone(),
                cut: cut.clone(),
            },
        ));
        Ok(TcpProxy {
            addr,
            down,
            commit_trap,
            statement_trap,
            cut,
            task,
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection and refuses new ones (`true`), or forwards again (`false`).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        if down {
            self.cut.send_modify(|generation| *generation += 1);
        }
    }

    /// Arms a one-shot trap: the next `COMMIT` query from any client connection breaks that
    /// connection, as `trap` says. The client sees its connection break mid-COMMIT either way.
    pub fn arm_commit_trap(&self, trap: CommitTrap) {
        self.commit_trap.store(trap as u8, Ordering::SeqCst);
    }

    /// Whether an armed trap is still waiting for its COMMIT.
    pub fn commit_trap_armed(&self) -> bool {
        self.commit_trap.load(Ordering::SeqCst) != NO_TRAP
    }

    /// Arms a one-shot trap for a single-statement write (autocommit, no COMMIT to catch): the
    /// next connection that prepares a statement containing `sql` runs it and then breaks
    /// before its answer comes back. sqlx prepares a statement once per connection, so the
    /// statement must not have run on the pool's connections before.
    pub fn arm_statement_trap(&self, sql: &'static str) {
        *self
            .statement_trap
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(sql.as_bytes());
    }

    /// Whether an armed statement trap is still waiting for its statement.
    pub fn statement_trap_armed(&self) -> bool {
        self.statement_trap
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|generation| *generation += 1);
    }
}

/// What the proxy's owner can flip while connections run.
struct Switches {
    down: Arc<AtomicBool>,
    commit_trap: Arc<AtomicU8>,
    statement_trap: StatementTrap,
    cut: watch::Sender<u64>,
}

/// MySQL command bytes, after a packet's 4-byte header (3 bytes of length, 1 of sequence).
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;

/// The command byte of the first packet in a client chunk.
fn command_of(chunk: &[u8]) -> Option<u8> {
    chunk.get(4).copied()
}

/// Whether a client chunk prepares a statement containing `sql`.
fn prepares(chunk: &[u8], sql: &[u8]) -> bool {
    command_of(chunk) == Some(COM_STMT_PREPARE) && chunk.windows(sql.len()).any(|w| w == sql)
}

/// A MySQL text-protocol `COM_QUERY` (0x03) of `COMMIT`, as sqlx sends it, or a COMMIT that ends
/// a multi-statement query, as chat-store's send batches send it with their last UPDATE.
fn carries_commit(chunk: &[u8]) -> bool {
    const ALONE: &[u8] = b"\x03COMMIT";
    const LAST: &[u8] = b"; COMMIT";
    chunk.windows(ALONE.len()).any(|w| w == ALONE) || chunk.ends_with(LAST)
}

async fn accept_loop(listener: TcpListener, target: String, switches: Switches) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if switches.down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = target.clone();
        let mut cut_rx = switches.cut.subscribe();
        let trap = switches.commit_trap.clone();
        let statement_trap = switches.statement_trap.clone();
        tokio::spawn(async move {
            let Ok(upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let (client_read, client_write) = client.into_split();
            let (upstream_read, upstream_write) = upstream.into_split();
            // Set once this connection's COMMIT was let through: its answer must not be.
            let swallow = Arc::new(AtomicBool::new(false));
            tokio::select! {
                _ = forward_watching_commit(
                    client_read, upstream_write, trap, statement_trap, swallow.clone(),
                ) => {}
                _ = forward_until_swallowed(upstream_read, client_write, swallow) => {}
                _ = cut_rx.changed() => {}
            }
        });
    }
}

/// Client to server. When a trap is armed and a COMMIT comes, disarms it and either passes the
/// COMMIT on and marks this connection's next answer to be swallowed, or ends here without it.
/// When a statement trap is armed and this connection prepares its statement, disarms it and
/// swallows the answer to the next execution here.
async fn forward_watching_commit(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    trap: Arc<AtomicU8>,
    statement_trap: StatementTrap,
    swallow: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut trapped_statement_prepared = false;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let chunk = &buf[..n];
        if trap.load(Ordering::SeqCst) != NO_TRAP && carries_commit(chunk) {
            match trap.swap(NO_TRAP, Ordering::SeqCst) {
                t if t == CommitTrap::LoseReply as u8 => swallow.store(true, Ordering::SeqCst),
                t if t == CommitTrap::LoseCommit as u8 => return,
                _ => {}
            }
        }
        if trapped_statement_prepared && command_of(chunk) == Some(COM_STMT_EXECUTE) {
            swallow.store(true, Ordering::SeqCst);
        }
        {
            let mut armed = statement_trap.lock().unwrap_or_else(|e| e.into_inner());
            if armed.is_some_and(|sql| prepares(chunk, sql)) {
                *armed = None;
                trapped_statement_prepared = true;
            }
        }
        if to.write_all(chunk).await.is_err() {
            return;
        }
    }
}

/// Server to client, until an answer arrives that is to be swallowed: then it ends (and with
/// it the connection) without passing that answer on.
async fn forward_until_swallowed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    swallow: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if swallow.load(Ordering::SeqCst) || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Replaces the `host:port` of a `scheme://[user@]host:port[/path]` URL.
pub(crate) fn with_host_port(url: &str, addr: SocketAddr) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (userinfo, hostpath) = match rest.rsplit_once('@') {
        Some((user, hp)) => (format!("{user}@"), hp),
        None => (String::new(), rest),
    };
    let path = hostpath.find('/').map(|i| &hostpath[i..]).unwrap_or("");
    format!("{scheme}://{userinfo}{addr}{path}")
}

/// The `host:port` of a `scheme://[user@]host:port[/path]` URL (`default_port` if none).
pub(crate) fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let hostpath = rest.rsplit_once('@').map(|(_, hp)| hp).unwrap_or(rest);
    let host_port = hostpath.split('/').next().unwrap_or(hostpath);
    if host_port.contains(':') {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_surgery() {
        let addr: SocketAddr = "127.0.0.1:5555".parse().expect("addr");
        assert_eq!(
            with_host_port("mysql://root@127.0.0.1:3306/db", addr),
            "mysql://root@127.0.0.1:5555/db"
        );
        assert_eq!(
            with_host_port("redis://127.0.0.1:6379", addr),
            "redis://127.0.0.1:5555"
        );
        assert_eq!(host_port("mysql://root@db:3306/x", 3306), "db:3306");
        assert_eq!(host_port("redis://h", 6379), "h:6379");
    }
}
