//! chat-worker: delivers offline push notifications. It consumes the push-job stream that
//! chat-api fills (see `push`), serves health, readiness (Redis reachable) and metrics, and on
//! SIGTERM stops taking jobs, finishes the ones in flight and exits.

mod config;
mod push;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use chat_bus::Bus;
use clap::Parser;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Clone)]
struct AppState {
    bus: Bus,
    metrics: PrometheusHandle,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut config = Config::parse();
    // Deployment files may pass these as empty strings: that means "not set".
    config.push.push_url = config.push.push_url.filter(|u| !u.trim().is_empty());
    config.push.push_auth_header = config
        .push
        .push_auth_header
        .filter(|h| !h.trim().is_empty());
    chat_ops::init_logging(config.log_format);
    config.push.validate().map_err(anyhow::Error::msg)?;
    let metrics = chat_ops::install_metrics()?;
    let worker_id = config
        .push
        .worker_id
        .clone()
        .unwrap_or_else(|| format!("w-{:08x}", rand::random::<u32>()));
    tracing::info!(
        listen = %config.listen,
        redis_url = %chat_ops::mask_url(&config.redis.redis_url),
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
    let bus = Bus::new(&config.redis.bus_config())?;
    let shutdown = CancellationToken::new();

    let mut consumers = Vec::new();
    if let Some(url) = &config.push.push_url {
        let pusher = Arc::new(push::Pusher::new(
            bus.clone(),
            url.clone(),
            config.push.clone(),
        )?);
        for n in 0..config.push.concurrency {
            consumers.push(tokio::spawn(push::consume(
                pusher.clone(),
                format!("{worker_id}-{n}"),
                shutdown.clone(),
            )));
        }
        tokio::spawn(push::sample_gauges(bus.clone(), shutdown.clone()));
    } else {
        tracing::warn!("CHAT_PUSH_URL is not set: push jobs are not consumed");
    }

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
    let stop = shutdown.clone();
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            chat_ops::shutdown_signal().await;
            stop.cancel();
        })
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
