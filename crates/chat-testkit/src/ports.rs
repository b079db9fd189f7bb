//! Free local ports for the services, and a check that a port is really served by our child.
//!
//! Ports come from below the kernel's ephemeral range (where outgoing connections take theirs),
//! are checked to be bindable, and are never handed out twice by one test process. Another test
//! process may still grab one in the window before the child binds it, so readiness also checks
//! that the listener belongs to the child (via `/proc`).

use std::collections::HashSet;
use std::net::{SocketAddr, TcpListener};

use anyhow::bail;
use parking_lot::Mutex;

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// The low end of the kernel's ephemeral port range (32768 if unknown).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768)
}

/// A bindable `127.0.0.1` port not handed out before by this process.
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    let high = ephemeral_low().saturating_sub(1);
    let low = 10_000u16;
    for _ in 0..200 {
        let port = if high > low + 1000 {
            rand::random_range(low..high)
        } else {
            0
        };
        let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) else {
            continue;
        };
        let addr = listener.local_addr()?;
        let mut guard = HANDED_OUT.lock();
        if guard.get_or_insert_with(HashSet::new).insert(addr.port()) {
            return Ok(addr);
        }
    }
    bail!("no free local port found")
}

/// Whether process `pid` holds a listening TCP socket on `port`. `true` when `/proc` cannot
/// tell (not Linux): the check is then skipped.
pub(crate) fn pid_listens_on(pid: u32, port: u16) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    let inodes: HashSet<String> = fds
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .map(str::to_string)
        })
        .collect();
    let mut tables_read = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        tables_read = true;
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && *state == "0A" && inodes.contains(*inode) {
                return true;
            }
        }
    }
    !tables_read
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_our_own_listener() {
        let addr = free_addr().expect("free port");
        assert!(addr.port() < ephemeral_low());
        let listener = TcpListener::bind(addr).expect("bind the port");
        assert!(pid_listens_on(std::process::id(), addr.port()));
        drop(listener);
        assert!(!pid_listens_on(std::process::id(), addr.port()));
        let other = free_addr().expect("another port");
        assert_ne!(other, addr, "never the same port twice");
    }
}
