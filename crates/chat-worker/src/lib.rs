//! chat-worker: delivers offline push notifications. It consumes the push-job stream that
//! chat-api fills (see `push`). The library holds the consumers; the `chat-worker` binary adds
//! health, readiness and metrics endpoints, and the embedded single-process mode runs the
//! consumers beside chat-api and a gateway.

mod config;
mod push;

use std::sync::Arc;

use chat_bus::Bus;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, PushArgs};

/// Starts `config.concurrency` consumers (named `<worker_id>-<n>`) and the queue gauges, or
/// nothing when no push endpoint is configured. The consumers stop taking jobs once `shutdown`
/// is cancelled; await the handles to let them finish the job in hand.
pub fn start_consumers(
    config: &PushArgs,
    bus: &Bus,
    worker_id: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    let Some(url) = &config.push_url else {
        tracing::warn!("CHAT_PUSH_URL is not set: push jobs are not consumed");
        return Ok(Vec::new());
    };
    let pusher = Arc::new(push::Pusher::new(bus.clone(), url.clone(), config.clone())?);
    let mut consumers: Vec<JoinHandle<()>> = (0..config.concurrency)
        .map(|n| {
            tokio::spawn(push::consume(
                pusher.clone(),
                format!("{worker_id}-{n}"),
                shutdown.clone(),
            ))
        })
        .collect();
    consumers.push(tokio::spawn(push::sample_gauges(
        bus.clone(),
        shutdown.clone(),
    )));
    Ok(consumers)
}

impl PushArgs {
    /// Deployment files may pass the URL and header as empty strings: that means "not set".
    pub fn normalized(mut self) -> Self {
        self.push_url = self.push_url.filter(|u| !u.trim().is_empty());
        self.push_auth_header = self.push_auth_header.filter(|h| !h.trim().is_empty());
        self
    }

    /// The configured consumer-name stem, or a random one.
    pub fn resolved_worker_id(&self) -> String {
        self.worker_id
            .clone()
            .unwrap_or_else(|| format!("w-{:08x}", rand::random::<u32>()))
    }
}
