//! chat-gateway: a stateless WebSocket node. It authenticates clients, holds their sockets,
//! subscribes to the Redis channel of each user connected here and of each group chat with a
//! member connected here, and fans events out to every socket of those users. Any node can die; clients reconnect to another. The library is the
//! service itself; the `chat-gateway` binary and the embedded single-process mode run [`run`].

mod api_client;
mod config;
mod delivered;
mod dispatch;
mod groups;
mod http;
mod hub;
mod ids;
mod limits;
pub mod listener;
mod metrics;
mod pacing;
mod registry;
mod socket;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chat_auth::TokenKeys;
use chat_bus::Bus;
use chat_ops::Backoff;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api_client::{ApiClient, InternalCredential};
pub use crate::config::Config;
use crate::hub::{Hub, close_code};
use crate::metrics::GatewayMetrics;
use crate::registry::Registry;

/// Everything a socket task needs, shared by all of them.
pub struct Gateway {
    pub config: Config,
    pub node_id: String,
    pub keys: TokenKeys,
    pub bus: Bus,
    pub hub: Hub,
    /// Which local users are in which group chats.
    pub groups: Arc<groups::GroupRoutes>,
    pub api: Arc<ApiClient>,
    /// Where sockets' `delivered` frames are coalesced on their way to chat-api.
    pub delivered: delivered::DeliveredLanes,
    pub metrics: GatewayMetrics,
    pub prometheus: PrometheusHandle,
    pub draining: AtomicBool,
    /// False from a subscription disconnect until every subscription is back.
    pub subscriptions_up: AtomicBool,
    /// Resumes are served from the bus's recent-event log only for cursors from this ms on:
    /// set when a lost subscription is back (what Redis lost meanwhile may include the log),
    /// `i64::MAX` while it is down (`socket::recent`).
    pub log_trusted_from_ms: AtomicI64,
    pub next_conn_id: AtomicU64,
    pub ip_limiter: Arc<limits::IpLimiter>,
    /// `CHAT_ALLOWED_ORIGINS`, normalized.
    pub origins: Vec<String>,
}

/// What a gateway runs on, built by the caller: the standalone binary makes them from its
/// config; the embedded single-process mode shares the bus and keys with chat-api.
pub struct GatewayParts {
    pub bus: Bus,
    pub keys: TokenKeys,
    pub prometheus: PrometheusHandle,
}

/// Serves WebSockets on `listener` until `shutdown` is cancelled, then drains: stops accepting,
/// closes every socket with 1012 spread over the drain window, and leaves the presence registry.
pub async fn run(
    config: Config,
    parts: GatewayParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let GatewayParts {
        bus,
        keys,
        prometheus,
    } = parts;
    let node_id = config.resolved_node_id();
    tracing::info!(
        listen = %listener.local_addr()?,
        node_id = %node_id,
        api_url = %config.api_url,
        redis_url = %config.redis.url_for_log(&bus),
        redis_mode = bus.backend_name(),
        redis_prefix = %config.redis.redis_prefix,
        outbound_queue = config.outbound_queue,
        max_frame_bytes = config.max_frame_bytes,
        drain_secs = config.drain_secs,
        "starting chat-gateway"
    );

    let metrics = GatewayMetrics::register();
    let (subscriber, bus_messages) = connect_subscriber(&bus).await;
    metrics.bus_up.set(1.0);
    let credential = match config.secret.internal_key() {
        Some(key) => InternalCredential::Key(key),
        None if keys.can_sign() => InternalCredential::ServiceToken(Box::new(keys.clone())),
        None => anyhow::bail!(
            "CHAT_INTERNAL_KEY is required: with CHAT_JWT_ALG={:?} a gateway holds no signing key",
            config.secret.jwt_alg
        ),
    };
    let api = ApiClient::new(
        &config.api_url,
        credential,
        node_id.clone(),
        metrics.clone(),
        config.pacing(),
        usize::from(config.api_connections),
    )?;
    let (news_tx, news_rx) = tokio::sync::mpsc::unbounded_channel();
    let groups = Arc::new(groups::GroupRoutes::default());
    let (registry, registry_handle) = Registry::new(
        subscriber,
        bus.clone(),
        node_id.clone(),
        config.presence_ttl(),
        (api.clone(), groups.clone()),
        metrics.clone(),
        news_tx,
    );
    let ip_limiter = Arc::new(limits::IpLimiter::new(config.ip_limits()));
    let origins = config.origins();
    let gateway = Arc::new(Gateway {
        ip_limiter,
        origins,
        hub: Hub::new(registry_handle, metrics.clone()),
        groups,
        config,
        node_id,
        keys,
        bus,
        delivered: delivered::DeliveredLanes::start(api.clone()),
        api,
        metrics: metrics.clone(),
        prometheus,
        draining: AtomicBool::new(false),
        subscriptions_up: AtomicBool::new(true),
        log_trusted_from_ms: AtomicI64::new(i64::MIN),
        next_conn_id: AtomicU64::new(1),
    });
    let registry_stop = CancellationToken::new();
    let registry_task = tokio::spawn(registry.run(registry_stop.clone()));
    tokio::spawn(dispatch::run(bus_messages, news_rx, gateway.clone()));

    let accept_stop = CancellationToken::new();
    let server = tokio::spawn(http::serve(gateway.clone(), listener, accept_stop.clone()));

    shutdown.cancelled().await;
    gateway.draining.store(true, Ordering::Release);
    gateway.metrics.draining.set(1.0);
    accept_stop.cancel();
    let _ = server.await;
    drain(&gateway).await;
    registry_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), registry_task).await;
    tracing::info!(node_id = %gateway.node_id, "chat-gateway stopped");
    Ok(())
}

/// The subscription connection, retried until Redis answers (the node is not ready before).
async fn connect_subscriber(
    bus: &Bus,
) -> (
    chat_bus::Subscriber,
    tokio::sync::mpsc::UnboundedReceiver<chat_bus::BusMessage>,
) {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).delays();
    loop {
        match bus.subscriber().await {
            Ok(pair) => return pair,
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable yet; retrying");
                tokio::time::sleep(delays.next_delay()).await;
            }
        }
    }
}

/// Closes every socket with 1012, spread over the drain window so that reconnecting clients do
/// not all land on the other nodes at once, then waits for the sockets to finish.
async fn drain(gateway: &Gateway) {
    let signals = gateway.hub.all_signals();
    let window = gateway.config.drain_window();
    // At most one slice per 100 ms, and no more slices than sockets, so the closes cover the
    // whole window whatever the number of sockets.
    let slices = ((window.as_millis() / 100) as usize).clamp(1, signals.len().max(1));
    let per_slice = signals.len().div_ceil(slices).max(1);
    tracing::info!(
        sockets = signals.len(),
        window_secs = window.as_secs(),
        "draining"
    );
    let mut chunks = signals.chunks(per_slice).peekable();
    while let Some(chunk) = chunks.next() {
        for signal in chunk {
            signal.close(close_code::RESTART);
        }
        if chunks.peek().is_some() {
            tokio::time::sleep(window / slices as u32).await;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while gateway.hub.connection_count() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
