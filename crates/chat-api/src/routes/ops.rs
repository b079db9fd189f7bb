//! Liveness, readiness and metrics.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

/// Ready while the schema is migrated and both MySQL and Redis answer within a second.
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    let limit = Duration::from_secs(1);
    let (db, redis) = tokio::join!(
        tokio::time::timeout(limit, state.store.ping()),
        tokio::time::timeout(limit, state.bus.ping()),
    );
    let db_up = matches!(db, Ok(Ok(())));
    let redis_up = matches!(redis, Ok(Ok(())));
    metrics::gauge!("chat_api_db_up").set(f64::from(u8::from(db_up)));
    metrics::gauge!("chat_api_redis_up").set(f64::from(u8::from(redis_up)));
    match (state.is_migrated(), db_up, redis_up) {
        (true, true, true) => (StatusCode::OK, "ready"),
        (false, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "migrations pending"),
        (_, false, _) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
        (_, _, false) => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable"),
    }
}

pub async fn metrics(State(handle): State<PrometheusHandle>) -> String {
    handle.render()
}
