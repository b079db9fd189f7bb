//! chat-worker: the home of queued side work (offline push notifications arrive with issue 9).
//! For now it is an operable, idle service: it serves health, readiness (Redis reachable) and
//! metrics, and exits cleanly on SIGTERM, so deployments can already run and scale it.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chat_bus::{RedisArgs, RedisBus};
use chat_ops::LogFormat;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-worker",
    version,
    about = "Chat background worker (queued jobs)"
)]
struct Config {
    /// Address of the health and metrics listener (host:port).
    #[arg(long, env = "CHAT_LISTEN", default_value = "0.0.0.0:8082")]
    listen: SocketAddr,

    #[command(flatten)]
    redis: RedisArgs,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,
}

#[derive(Clone)]
struct AppState {
    bus: RedisBus,
    metrics: PrometheusHandle,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    chat_ops::init_logging(config.log_format);
    let metrics = chat_ops::install_metrics()?;
    tracing::info!(
        listen = %config.listen,
        redis_url = %chat_ops::mask_url(&config.redis.redis_url),
        redis_mode = ?config.redis.redis_mode,
        redis_prefix = %config.redis.redis_prefix,
        "starting chat-worker (no job kinds are enabled yet)"
    );
    let bus = RedisBus::new(&config.redis.bus_config())?;
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .with_state(AppState { bus, metrics });
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(chat_ops::shutdown_signal())
        .await?;
    tracing::info!("stopped");
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(1), state.bus.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable"),
    }
}
