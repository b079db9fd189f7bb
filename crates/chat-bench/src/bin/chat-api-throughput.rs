//! chat-api write throughput: provisioned users (`chat-provision --pairs`) post messages to their
//! pair chats over REST with a fixed number of requests in flight for a fixed time. Every 201 is
//! a message committed to MySQL and published; prints persisted messages per second and the
//! request latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_bench::{Api, cpu_seconds, percentile};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Measure chat-api persisted messages per second and request latency")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// Token file written by `chat-provision --pairs`.
    #[arg(long)]
    tokens: PathBuf,
    /// Requests in flight (one sender task each, each on its own user and chat).
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to send.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Process ids to report CPU seconds for (chat-api, mariadbd, redis-server...).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
}

struct Sender {
    token: String,
    chat_id: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.tokens)
        .with_context(|| format!("reading {}", args.tokens.display()))?;
    let users: Vec<serde_json::Value> = serde_json::from_str(&text).context("token file")?;
    let senders: Vec<Sender> = users
        .iter()
        .filter_map(|u| {
            Some(Sender {
                token: u["token"].as_str()?.to_string(),
                chat_id: u["pair_chat_id"].as_u64()?,
            })
        })
        .take(args.concurrency)
        .collect();
    if senders.len() < args.concurrency {
        bail!(
            "{} users with a pair chat for concurrency {} (provision with --pairs)",
            senders.len(),
            args.concurrency
        );
    }

    let api = Arc::new(Api::new(&args.api_url));
    let failures = Arc::new(AtomicUsize::new(0));
    let cpu_before: Vec<f64> = args
        .pids
        .iter()
        .map(|p| cpu_seconds(*p))
        .collect::<Result<_, _>>()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(n, sender)| {
            let (api, failures) = (api.clone(), failures.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let path = format!("/v1/chats/{}/messages", sender.chat_id);
                let mut i = 0u64;
                while Instant::now() < until {
                    i += 1;
                    let body =
                        json!({"client_msg_id": format!("tp-{n}-{i}"), "text": "throughput"});
                    let sent = Instant::now();
                    match api.post(&path, Some(&sender.token), body).await {
                        Ok(_) => latencies.push(sent.elapsed()),
                        Err(_) => {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{} messages persisted in {elapsed:.1} s with {} in flight: {:.0} messages/s, {} failed",
        latencies.len(),
        args.concurrency,
        latencies.len() as f64 / elapsed,
        failures.load(Ordering::Relaxed)
    );
    println!(
        "request latency p50 {:.2} ms, p95 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 95.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    for (pid, before) in args.pids.iter().zip(cpu_before) {
        let used = cpu_seconds(*pid)? - before;
        println!(
            "pid {pid}: {used:.1} CPU-s ({:.0}% of one core)",
            100.0 * used / elapsed
        );
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
