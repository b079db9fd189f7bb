//! chat-api: the HTTP/JSON service that owns users, chats and messages in MySQL and publishes
//! events to the per-user Redis channels after each commit. The library is the service itself;
//! the `chat-api` binary and the embedded single-process mode (chat-embedded) both run [`serve`].

mod admission;
mod announce;
mod config;
mod error;
mod extract;
mod fanout;
mod push;
mod recent_log;
mod routes;
mod state;
mod storage;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chat_auth::TokenKeys;
use chat_bus::Bus;
use chat_ops::Backoff;
use chat_store::{Store, StoreError};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::Config;
use crate::state::{AppState, Limits};

/// What chat-api runs on, built by the caller: the standalone binary makes them from its
/// config; the embedded single-process mode shares them with a gateway and a worker.
pub struct ApiParts {
    pub store: Store,
    pub bus: Bus,
    pub keys: TokenKeys,
    pub metrics: PrometheusHandle,
}

/// Serves the API on `listener` until `shutdown` is cancelled, then closes the store.
pub async fn serve(
    config: Config,
    parts: ApiParts,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let ApiParts {
        store,
        bus,
        keys,
        metrics,
    } = parts;
    anyhow::ensure!(
        keys.can_sign(),
        "chat-api issues tokens: set CHAT_JWT_PRIVATE_KEY_FILE with CHAT_JWT_ALG={:?}",
        config.secret.jwt_alg
    );
    tracing::info!(
        listen = %listener.local_addr()?,
        store = store.backend(),
        database_url = %chat_ops::mask_url(&config.database_url),
        redis_url = %config.redis.url_for_log(&bus),
        redis_mode = bus.backend_name(),
        redis_prefix = %config.redis.redis_prefix,
        jwt_ttl_secs = config.jwt_ttl_secs,
        attachments_store = ?config.storage.attachments_store,
        attachments_dir = %config.storage.attachments_dir.display(),
        attachments_max_bytes = config.storage.attachments_max_bytes,
        jwt_alg = ?config.secret.jwt_alg,
        admission = ?config.admission(),
        "starting chat-api"
    );

    // A storage problem disables attachments (503) rather than the whole api.
    let storage = match storage::Storage::new(&config.storage) {
        Ok(storage) => Some(storage),
        Err(e) => {
            tracing::error!(error = %e, "attachment storage is unusable; uploads and downloads answer 503");
            None
        }
    };
    let state = AppState::from(state::Shared {
        store: store.clone(),
        bus: bus.clone(),
        keys,
        token_ttl: Duration::from_secs(config.jwt_ttl_secs),
        internal_key: config.secret.internal_key().map(Arc::from),
        limits: Limits {
            messages: chat_bus::Bucket {
                burst: config.msg_burst,
                per_sec: config.msg_rate_per_sec,
            },
            login_max_failures: config.login_max_failures,
            login_window: Duration::from_secs(config.login_window_secs.max(1)),
            max_json_depth: config.max_json_depth.max(1),
            trust_forwarded_for: config.trust_forwarded_for,
        },
        migrated: Arc::new(AtomicBool::new(false)),
        push: push::PushQueue::start(store.clone(), bus.clone(), config.push_stream_max_len),
        storage,
        chat_kinds: Default::default(),
        announcer: announce::Announcer::new(),
    });
    tokio::spawn(migrate_until_done(store.clone(), state.migrated.clone()));
    tokio::spawn(announce::sweep(state.clone(), shutdown.clone()));

    let web = routes::WebConfig {
        ws_url: config.web_ws_url.clone(),
    };
    let admission = admission::Admission::new(&config.admission());
    let app = routes::router(state, metrics, web, &admission)
        .into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await?;
    store.close().await;
    tracing::info!("chat-api stopped");
    Ok(())
}

/// Runs migrations, waiting for the database to come up rather than exiting.
async fn migrate_until_done(store: Store, migrated: Arc<AtomicBool>) {
    let mut delays = Backoff::new(Duration::from_millis(200), Duration::from_secs(5)).delays();
    loop {
        match store.migrate().await {
            Ok(()) => {
                migrated.store(true, Ordering::Release);
                tracing::info!("database migrations are applied");
                return;
            }
            Err(e @ StoreError::Unavailable(_)) => {
                tracing::warn!(error = %e, "database not reachable yet; retrying");
            }
            Err(e) => tracing::error!(error = %e, "migrations failed; retrying"),
        }
        tokio::time::sleep(delays.next_delay()).await;
    }
}
