//! chat-embedded: the whole system in one process for a machine with nothing installed —
//! chat-api, one or more gateways and the push worker as tasks sharing a SQLite store and the
//! in-memory bus. Same contract and ports as the scaled topology (8080 api, 8081 WebSocket);
//! `make run` starts it when neither `DATABASE_URL` nor `REDIS_URL` is set.
//!
//! The services read the rest of their settings from the same environment variables as their
//! own binaries (`CHAT_JWT_SECRET`, `CHAT_MSG_RATE_PER_SEC`, `CHAT_PUSH_URL`, ...); only the
//! listen addresses, the database and the bus are decided here.

use std::net::SocketAddr;

use anyhow::Context;
use chat_auth::SecretArgs;
use chat_bus::Bus;
use chat_ops::{LogFormat, RuntimeArgs};
use chat_store::Store;
use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "chat-embedded",
    version,
    about = "chat-api, WebSocket gateway(s) and push worker in one process (SQLite, in-memory bus)"
)]
struct Config {
    /// Address of the HTTP API and the web client (host:port).
    #[arg(long, env = "CHAT_API_LISTEN", default_value = "0.0.0.0:8080")]
    api_listen: SocketAddr,

    /// Address(es) of the WebSocket gateway(s), comma-separated: one gateway per address, node
    /// ids gw1, gw2, ... (several only to try multi-node behaviour on one machine).
    #[arg(
        long,
        env = "CHAT_WS_LISTEN",
        default_value = "0.0.0.0:8081",
        value_delimiter = ','
    )]
    ws_listen: Vec<SocketAddr>,

    /// SQLite database (created with its directory when missing); a mysql:// URL works too.
    #[arg(long, env = "DATABASE_URL", default_value = "sqlite://data/chat.db")]
    database_url: String,

    /// Namespace of the bus's channels and keys (kept for parity with the Redis topology).
    #[arg(long, env = "CHAT_REDIS_PREFIX", default_value = "chat")]
    redis_prefix: String,

    /// How long the bus's recent-event log keeps an event per channel (seconds; 0: off), as
    /// in the Redis topology: resumes from a younger cursor are served from it.
    #[arg(long, env = "CHAT_RECENT_LOG_SECS", default_value_t = 120)]
    recent_log_secs: u64,

    /// How many events the recent-event log keeps per channel at most.
    #[arg(long, env = "CHAT_RECENT_LOG_MAX", default_value_t = 1000)]
    recent_log_max: u32,

    #[command(flatten)]
    secret: SecretArgs,

    /// Log format: json or text.
    #[arg(long, env = "CHAT_LOG_FORMAT", value_enum, default_value = "json")]
    log_format: LogFormat,

    #[command(flatten)]
    runtime: RuntimeArgs,
}

fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    config.runtime.run(serve(config))
}

async fn serve(config: Config) -> anyhow::Result<()> {
    chat_ops::init_logging(config.log_format);
    anyhow::ensure!(!config.ws_listen.is_empty(), "CHAT_WS_LISTEN is empty");
    let prometheus = chat_ops::install_metrics()?;
    // One key ring for every service: with --dev the random secret must be the same one.
    let keys = config.secret.keys()?;
    let store = Store::connect_lazy(&config.database_url, 8).context("DATABASE_URL")?;
    let bus = Bus::memory(&config.redis_prefix).with_recent_log(chat_bus::RecentLogConfig {
        window: std::time::Duration::from_secs(config.recent_log_secs),
        max_len: config.recent_log_max,
    });
    tracing::info!(
        api_listen = %config.api_listen,
        ws_listen = ?config.ws_listen,
        database_url = %chat_ops::mask_url(&config.database_url),
        "starting chat-embedded"
    );

    // Bind everything first, so a taken port fails the start instead of half of the system.
    let api_listener = bind(config.api_listen).await?;
    let api_addr = api_listener.local_addr()?;
    let mut gateway_listeners = Vec::with_capacity(config.ws_listen.len());
    for addr in &config.ws_listen {
        gateway_listeners.push(bind(*addr).await?);
    }

    let signal = chat_ops::cancel_on_shutdown_signal();
    let api_stop = CancellationToken::new();
    let api_config = service_config::<chat_api::Config>(&[
        "chat-api",
        "--listen",
        &api_addr.to_string(),
        "--database-url",
        &config.database_url,
        "--redis-prefix",
        &config.redis_prefix,
    ])?;
    let api_parts = chat_api::ApiParts {
        store,
        bus: bus.clone(),
        keys: keys.clone(),
        metrics: prometheus.clone(),
    };
    let api = tokio::spawn(chat_api::serve(
        api_config,
        api_parts,
        api_listener,
        api_stop.clone(),
    ));

    let api_url = format!("http://{}", loopback(api_addr));
    let mut gateways = Vec::with_capacity(gateway_listeners.len());
    for (n, listener) in gateway_listeners.into_iter().enumerate() {
        let gateway_config = service_config::<chat_gateway::Config>(&[
            "chat-gateway",
            "--listen",
            &listener.local_addr()?.to_string(),
            "--api-url",
            &api_url,
            "--node-id",
            &format!("gw{}", n + 1),
            "--redis-prefix",
            &config.redis_prefix,
        ])?;
        let parts = chat_gateway::GatewayParts {
            bus: bus.clone(),
            keys: keys.clone(),
            prometheus: prometheus.clone(),
        };
        gateways.push(tokio::spawn(chat_gateway::run(
            gateway_config,
            parts,
            listener,
            signal.clone(),
        )));
    }

    let worker_config = service_config::<chat_worker::Config>(&["chat-worker"])?;
    let push = worker_config.push.normalized();
    push.validate().map_err(anyhow::Error::msg)?;
    let consumers = chat_worker::start_consumers(&push, &bus, &push.resolved_worker_id(), &signal)?;

    // Gateways drain first (their sockets may still send through the api), then the api stops.
    for gateway in gateways {
        gateway.await.context("gateway task")??;
    }
    for consumer in consumers {
        let _ = consumer.await;
    }
    api_stop.cancel();
    api.await.context("api task")??;
    tracing::info!("chat-embedded stopped");
    Ok(())
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// A service's own configuration: these arguments, and its environment variables for the rest.
fn service_config<C: Parser>(args: &[&str]) -> anyhow::Result<C> {
    C::try_parse_from(args).map_err(|e| anyhow::anyhow!("{}: {e}", args.first().unwrap_or(&"")))
}

/// Where this process reaches its own listener (a wildcard address is not a destination).
fn loopback(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}
