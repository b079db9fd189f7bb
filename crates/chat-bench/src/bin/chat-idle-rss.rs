//! Gateway memory per idle authenticated socket: opens one socket per provisioned user (tokens
//! from `chat-provision`), spread round-robin over the gateways, waits for every `auth_ok`, lets
//! the gateways settle, and prints each gateway's RSS growth divided by its sockets.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use chat_bench::{connect, rss_kib};
use clap::Parser;
use futures_util::StreamExt;

#[derive(Parser)]
#[command(about = "Measure gateway RSS per idle authenticated WebSocket")]
struct Args {
    /// Token file written by chat-provision (`[{id, token, ...}]`).
    #[arg(long)]
    tokens: PathBuf,
    /// Gateway WebSocket URLs, comma-separated.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws,ws://127.0.0.1:8083/ws")]
    ws: String,
    /// Process ids of the gateways, in the order of `--ws`.
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// Sockets to open (at most one per token).
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Sockets being opened at once.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Idle time before the second reading.
    #[arg(long, default_value_t = 5)]
    settle_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let gateways: Vec<String> = args.ws.split(',').map(String::from).collect();
    if gateways.len() != args.gateway_pids.len() {
        bail!("give one --gateway-pids entry per --ws URL");
    }
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading {}", args.tokens.display()))?;
    let users: Vec<serde_json::Value> = serde_json::from_str(&text).context("token file")?;
    let tokens: Vec<String> = users
        .iter()
        .filter_map(|u| u["token"].as_str().map(String::from))
        .take(args.connections)
        .collect();
    if tokens.len() < args.connections {
        bail!(
            "{} tokens for {} connections",
            tokens.len(),
            args.connections
        );
    }

    let before: Vec<u64> = args
        .gateway_pids
        .iter()
        .map(|pid| rss_kib(*pid))
        .collect::<Result<_, _>>()?;
    let started = std::time::Instant::now();
    let sockets: Vec<_> = futures_util::stream::iter(tokens.iter().enumerate())
        .map(|(i, token)| connect(&gateways[i % gateways.len()], token))
        .buffer_unordered(args.parallel)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let opened_in = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    println!(
        "{} idle authenticated sockets opened in {:.1} s over {} gateways",
        sockets.len(),
        opened_in.as_secs_f64(),
        gateways.len()
    );
    for (n, pid) in args.gateway_pids.iter().enumerate() {
        let after = rss_kib(*pid)?;
        let count = (0..sockets.len())
            .filter(|i| i % gateways.len() == n)
            .count();
        let per_socket = (after.saturating_sub(before[n]) * 1024) as f64 / count.max(1) as f64;
        println!(
            "gateway {} (pid {pid}): RSS {} KiB before, {after} KiB with {count} sockets -> {per_socket:.0} bytes per socket",
            gateways[n], before[n]
        );
    }
    drop(sockets);
    Ok(())
}
