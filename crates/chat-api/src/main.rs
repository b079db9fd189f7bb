//! The chat-api binary: configuration from flags and env, then [`chat_api::serve`] until SIGTERM.

use anyhow::Context;
use chat_api::{ApiParts, Config};
use chat_bus::Bus;
use chat_store::Store;
use clap::Parser;

// Each request allocates and frees many small buffers (HTTP, JSON, SQL rows, Redis commands);
// under load glibc's malloc/free took about 14% of chat-api's CPU (docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.runtime.run(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    anyhow::ensure!(
        u32::from(config.send_writers) < config.db_max_connections,
        "CHAT_SEND_WRITERS ({}) must be below CHAT_DB_MAX_CONNECTIONS ({}): each writer keeps one \
         connection, and the other queries share the rest",
        config.send_writers,
        config.db_max_connections
    );
    chat_ops::init_logging(config.log_format);
    let metrics = chat_ops::install_metrics()?;
    let keys = config.secret.keys()?;
    let store = Store::connect_lazy(&config.database_url, config.db_max_connections)
        .context("DATABASE_URL")?
        .with_send_writers(usize::from(config.send_writers));
    let bus = Bus::new(&config.redis.bus_config())?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = chat_ops::cancel_on_shutdown_signal();
    let parts = ApiParts {
        store,
        bus,
        keys,
        metrics,
    };
    chat_api::serve(config, parts, listener, shutdown).await
}
