//! The chat-worker binary: the push consumers of [`chat_worker::start_consumers`] plus health,
//! readiness (Redis reachable) and metrics; on SIGTERM it stops taking jobs, finishes the ones in
//! flight and exits.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chat_bus::Bus;
use chat_worker::Config;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;

#[derive(Clone)]
struct AppState {
    bus: Bus,
    metrics: PrometheusHandle,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.runtime.run(serve(config))
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    config.push = config.push.normalized();
    chat_ops::init_logging(config.log_format);
    config.push.validate().map_err(anyhow::Error::msg)?;
    let metrics = chat_ops::install_metrics()?;
    let worker_id = config.push.resolved_worker_id();
    let bus = Bus::new(&config.redis.bus_config())?;
    tracing::info!(
        listen = %config.listen,
        redis_url = %config.redis.url_for_log(&bus),
        redis_mode = ?config.redis.redis_mode,
        redis_prefix = %config.redis.redis_prefix,
        push_url = %config.push.push_url.as_deref().map(chat_ops::mask_url).unwrap_or_else(|| "(none: push disabled)".into()),
        push_auth_header = if config.push.push_auth_header.is_some() { "(set)" } else { "(none)" },
        max_attempts = config.push.max_attempts,
        backoff_base_ms = config.push.backoff_base_ms,
        backoff_max_ms = config.push.backoff_max_ms,
        timeout_ms = config.push.timeout_ms,
        reclaim_idle_ms = config.push.reclaim_idle_ms,
        concurrency = config.push.concurrency,
        worker_id = %worker_id,
        "starting chat-worker"
    );
    let shutdown = chat_ops::cancel_on_shutdown_signal();
    let consumers = chat_worker::start_consumers(&config.push, &bus, &worker_id, &shutdown)?;

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
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    // Consumers finish the job in hand (a job waiting for its next retry stays pending and is
    // reclaimed by another worker).
    for consumer in consumers {
        let _ = consumer.await;
    }
    tracing::info!("stopped");
    Ok(())
}

async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match tokio::time::timeout(Duration::from_secs(1), state.bus.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable"),
    }
}
