//! Per-client-address limits of this gateway node: a handshake token bucket and a cap on
//! concurrent sockets per address. In memory and sharded, O(1) per upgrade; nothing here runs
//! per frame.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

const SHARDS: usize = 16;
/// A shard is swept of idle entries when it grows past this many addresses.
const SWEEP_AT: usize = 4096;

#[derive(Debug, Clone, Copy)]
pub struct IpLimits {
    /// Handshakes per second per address (refill); 0 disables the rate.
    pub handshakes_per_sec: f64,
    /// Handshakes an address may make in a burst.
    pub handshake_burst: u32,
    /// Concurrent sockets per address; 0 disables the cap.
    pub max_connections: u32,
    /// Loopback peers are not limited (local proxies, benchmarks, k6 on the same host).
    pub exempt_loopback: bool,
}

struct Entry {
    tokens: f64,
    refilled: Instant,
    connections: u32,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    HandshakeRate,
    TooManyConnections,
}

pub struct IpLimiter {
    limits: IpLimits,
    shards: Vec<Mutex<HashMap<IpAddr, Entry>>>,
}

/// Holds one of an address's connection slots until dropped (when the socket ends).
pub struct IpSlot {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut shard = self.limiter.shard(&self.ip);
        if let Some(entry) = shard.get_mut(&self.ip) {
            entry.connections = entry.connections.saturating_sub(1);
        }
    }
}

impl IpLimiter {
    pub fn new(limits: IpLimits) -> Self {
        Self {
            limits,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let index = match ip {
            IpAddr::V4(v4) => u32::from(*v4) as usize,
            IpAddr::V6(v6) => (u128::from(*v6) as u64 ^ (u128::from(*v6) >> 64) as u64) as usize,
        } % SHARDS;
        self.shards[index].lock()
    }

    /// Admits one handshake from `ip`: a slot to hold for the socket's life, `None` when the
    /// address is exempt, or the reason for refusing.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Option<IpSlot>, Refusal> {
        let limits = self.limits;
        if limits.exempt_loopback && ip.is_loopback() {
            return Ok(None);
        }
        let rate_on = limits.handshakes_per_sec > 0.0 && limits.handshake_burst > 0;
        if !rate_on && limits.max_connections == 0 {
            return Ok(None);
        }
        let now = Instant::now();
        let burst = f64::from(limits.handshake_burst);
        let mut shard = self.shard(&ip);
        if shard.len() >= SWEEP_AT {
            // Forget addresses with no socket whose bucket has refilled anyway.
            let full_after = burst / limits.handshakes_per_sec.max(f64::MIN_POSITIVE);
            shard.retain(|_, e| {
                e.connections > 0 || now.duration_since(e.refilled).as_secs_f64() < full_after
            });
        }
        let entry = shard.entry(ip).or_insert(Entry {
            tokens: burst,
            refilled: now,
            connections: 0,
        });
        if rate_on {
            let elapsed = now.duration_since(entry.refilled).as_secs_f64();
            entry.tokens = (entry.tokens + elapsed * limits.handshakes_per_sec).min(burst);
            entry.refilled = now;
            if entry.tokens < 1.0 {
                return Err(Refusal::HandshakeRate);
            }
            entry.tokens -= 1.0;
        }
        if limits.max_connections > 0 && entry.connections >= limits.max_connections {
            return Err(Refusal::TooManyConnections);
        }
        entry.connections += 1;
        Ok(Some(IpSlot {
            limiter: self.clone(),
            ip,
        }))
    }
}

/// Whether a browser's `Origin` may open a socket: any when the allow-list is empty, and any
/// request without an Origin header (not a browser).
pub fn origin_allowed(allowed: &[String], origin: Option<&str>) -> bool {
    match origin {
        None => true,
        Some(origin) => {
            allowed.is_empty()
                || allowed
                    .iter()
                    .any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/')))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, max: u32, exempt: bool) -> Arc<IpLimiter> {
        Arc::new(IpLimiter::new(IpLimits {
            handshakes_per_sec: rate,
            handshake_burst: burst,
            max_connections: max,
            exempt_loopback: exempt,
        }))
    }

    #[test]
    fn handshake_bucket_refuses_past_the_burst() {
        let l = limiter(0.001, 3, 0, false);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let slots: Vec<_> = (0..3).map(|_| l.admit(ip).expect("admitted")).collect();
        assert_eq!(l.admit(ip).err(), Some(Refusal::HandshakeRate));
        // Another address has its own bucket.
        assert!(l.admit("10.0.0.2".parse().expect("ip")).is_ok());
        drop(slots);
    }

    #[test]
    fn connection_cap_frees_slots_on_drop() {
        let l = limiter(0.0, 0, 2, false);
        let ip: IpAddr = "10.0.0.1".parse().expect("ip");
        let a = l.admit(ip).expect("1");
        let _b = l.admit(ip).expect("2");
        assert_eq!(l.admit(ip).err(), Some(Refusal::TooManyConnections));
        drop(a);
        assert!(l.admit(ip).is_ok());
    }

    #[test]
    fn loopback_exemption() {
        let l = limiter(0.001, 1, 1, true);
        let ip: IpAddr = "127.0.0.1".parse().expect("ip");
        for _ in 0..5 {
            assert!(matches!(l.admit(ip), Ok(None)));
        }
    }

    #[test]
    fn origins() {
        let list = vec!["https://chat.example".to_string()];
        assert!(origin_allowed(&[], Some("https://evil.example")));
        assert!(origin_allowed(&list, None));
        assert!(origin_allowed(&list, Some("https://chat.example")));
        assert!(origin_allowed(&list, Some("https://CHAT.example/")));
        assert!(!origin_allowed(&list, Some("https://evil.example")));
        assert!(!origin_allowed(&list, Some("null")));
    }
}
