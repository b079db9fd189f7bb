//! A TCP proxy with a switch, to cut a service's connection to MySQL or Redis and see how it
//! copes (503 `unavailable`, `/readyz` 503) without touching the shared servers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Forwards `127.0.0.1:<port>` to a target. While down, it drops every open connection and
/// closes new ones right after accepting them.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts forwarding to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the proxy")?;
        let addr = listener.local_addr()?;
        let down = Arc::new(AtomicBool::new(false));
        let (cut, _) = watch::channel(0u64);
        let task = tokio::spawn(accept_loop(
            listener,
            target.to_string(),
            down.clone(),
            cut.clone(),
        ));
        Ok(TcpProxy {
            addr,
            down,
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
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.cut.send_modify(|generation| *generation += 1);
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: String,
    down: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if down.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let target = target.clone();
        let mut cut_rx = cut.subscribe();
        tokio::spawn(async move {
            let Ok(mut upstream) = TcpStream::connect(&target).await else {
                return;
            };
            let mut client = client;
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                _ = cut_rx.changed() => {}
            }
        });
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
