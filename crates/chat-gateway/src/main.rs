//! The chat-gateway binary: configuration from flags and env, then [`chat_gateway::run`] until
//! SIGTERM starts the drain.

use anyhow::Context;
use chat_bus::Bus;
use chat_gateway::{Config, GatewayParts};
use clap::Parser;

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.runtime.run(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    chat_ops::init_logging(config.log_format);
    let prometheus = chat_ops::install_metrics()?;
    let keys = config.secret.keys()?;
    let bus = Bus::new(&config.redis.bus_config())?;
    let listener = chat_gateway::listener::bind(config.listen, config.listen_backlog)
        .with_context(|| format!("binding {}", config.listen))?;
    let shutdown = chat_ops::cancel_on_shutdown_signal();
    let parts = GatewayParts {
        bus,
        keys,
        prometheus,
    };
    chat_gateway::run(config, parts, listener, shutdown).await
}
