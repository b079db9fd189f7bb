//! [`Shared`]: what the orchestrator and the clients of one run share.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::ResumeMode;

/// What the orchestrator and the clients share.
#[derive(Debug)]
pub struct Shared {
    pub gateways: Arc<RwLock<Vec<String>>>,
    pub api_base: String,
    pub resume: ResumeMode,
    pub send_interval: Duration,
    /// Index of the current phase (deliveries, anomalies and new messages are attributed to it).
    pub phase: AtomicUsize,
    /// Clients create new messages while set (pending ones are retried regardless).
    pub traffic: AtomicBool,
    /// Incremented to ask every client for a final resume.
    pub final_round: AtomicU64,
    /// Clients stop when set.
    pub stop: AtomicBool,
    started: Instant,
    /// Milliseconds since `started` of the last ack or delivery.
    last_activity_ms: AtomicU64,
    pub acked: AtomicU64,
    pub deliveries: AtomicU64,
    pub connected: AtomicUsize,
    pub pending_sends: AtomicUsize,
    pub final_done: AtomicUsize,
    pub reconnects: AtomicU64,
}

impl Shared {
    pub fn new(
        gateways: Arc<RwLock<Vec<String>>>,
        api_base: &str,
        resume: ResumeMode,
        send_interval: Duration,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            gateways,
            api_base: api_base.trim_end_matches('/').to_string(),
            resume,
            send_interval,
            phase: AtomicUsize::new(0),
            traffic: AtomicBool::new(false),
            final_round: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            started: Instant::now(),
            last_activity_ms: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            connected: AtomicUsize::new(0),
            pending_sends: AtomicUsize::new(0),
            final_done: AtomicUsize::new(0),
            reconnects: AtomicU64::new(0),
        })
    }

    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Time since the last ack or delivery anywhere.
    pub fn idle_for(&self) -> Duration {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(now.saturating_sub(self.last_activity_ms.load(Ordering::Relaxed)))
    }

    pub(super) fn gateway_url(&self, i: usize) -> Option<String> {
        let urls = self.gateways.read().ok()?;
        if urls.is_empty() {
            return None;
        }
        urls.get(i % urls.len()).cloned()
    }

    pub(super) fn gateway_count(&self) -> usize {
        self.gateways.read().map(|u| u.len()).unwrap_or(0).max(1)
    }

    /// One progress line.
    pub fn progress(&self) -> String {
        format!(
            "connected={} acked={} deliveries={} pending_sends={} reconnects={}",
            self.connected.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.deliveries.load(Ordering::Relaxed),
            self.pending_sends.load(Ordering::Relaxed),
            self.reconnects.load(Ordering::Relaxed),
        )
    }
}
