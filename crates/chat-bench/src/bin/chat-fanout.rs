//! Fan-out: one sender posts to a group whose members each hold a socket, spread over the
//! gateways; or, with `--chat-size`, to many small groups in turn (the sender is in each). Prints
//! deliveries per second and the send -> delivered latency per delivery. Run it once per Redis
//! topology to compare standalone and cluster.
//!
//! Members coming online send each other presence events (about n² of them for a group of n).
//! The measurement starts only once the receivers have heard nothing for a while, so the gateway
//! CPU it reports is spent on the messages and not on that presence traffic.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_bench::{Api, RedisStats, connect, cpu_split, next_text, percentile, send_paced};
use chat_load::probe;
use clap::Parser;
use serde_json::json;

/// The fields of an event frame the receivers read; serde skips the rest without building it
/// (a `Value` a frame made this client cost more CPU than the gateways it measures).
#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    message: Option<EventMessage<'a>>,
}

#[derive(serde::Deserialize)]
struct EventMessage<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Parser)]
#[command(about = "Measure fan-out throughput and delivery latency")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// Gateway WebSocket URLs, comma-separated; receivers are spread over them.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws,ws://127.0.0.1:8083/ws")]
    ws: String,
    #[arg(long, default_value_t = 200)]
    receivers: usize,
    /// Messages to each chat (every receiver gets this many).
    #[arg(long, default_value_t = 300)]
    messages: usize,
    /// Members of each chat, the sender included: the receivers are split into chats of this
    /// size and the messages go to the chats in turn. 0: one chat of every receiver.
    #[arg(long, default_value_t = 0)]
    chat_size: usize,
    /// Requests in flight from the sender.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Messages a second, paced (open loop), with at most `concurrency` in flight; 0: as fast
    /// as `concurrency` allows (closed loop, where the latency is the queue it builds).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Gateway process ids: prints deliveries per gateway CPU-second (user + system time the
    /// gateways spent between the first send and the last delivery).
    #[arg(long, value_delimiter = ',')]
    gateway_pids: Vec<u32>,
    /// Redis servers (`redis://host:port`, comma-separated; every node of a cluster): prints the
    /// PUBLISH/SPUBLISH calls and the Redis CPU per message sent.
    #[arg(long, value_delimiter = ',')]
    redis: Vec<String>,
    /// Milliseconds without a frame on any receiver before the sends start.
    #[arg(long, default_value_t = 1000)]
    quiet_ms: u64,
}

/// How long a receiver waits for its next frame before giving up on the rest; covers the wait
/// for quiet as well as the sends.
const RECEIVER_IDLE_LIMIT: Duration = Duration::from_secs(120);
/// How long the bench waits for the presence traffic to settle before it fails.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Arc::new(Api::new(&args.api_url));
    let gateways: Vec<String> = args.ws.split(',').map(String::from).collect();
    let sender = api.register("fan_s_").await?;
    let mut receivers = Vec::with_capacity(args.receivers);
    for _ in 0..args.receivers {
        receivers.push(api.register("fan_r_").await?);
    }
    let per_chat = match args.chat_size {
        0 => receivers.len(),
        1 => anyhow::bail!("--chat-size must be 0 or at least 2 (the sender and a receiver)"),
        size => size - 1,
    };
    let mut chats = Vec::new();
    for (index, members) in receivers.chunks(per_chat.max(1)).enumerate() {
        let member_ids: Vec<u64> = members.iter().map(|r| r.id).collect();
        let chat = api
            .post(
                "/v1/chats",
                Some(&sender.token),
                json!({"type": "group", "title": format!("fanout {index}"), "member_ids": member_ids}),
            )
            .await?;
        chats.push(chat["id"].as_u64().context("chat id")?);
    }

    // Message i goes to chat i % chats: it is message i / chats of that chat.
    let sends = args.messages * chats.len();
    let sent_at: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..sends).map(|_| OnceLock::new()).collect());
    let frames_seen = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let chat_count = chats.len();
    for (i, receiver) in receivers.iter().enumerate() {
        let mut socket = connect(&gateways[i % gateways.len()], &receiver.token).await?;
        let sent_at = sent_at.clone();
        let frames_seen = frames_seen.clone();
        let expected = args.messages;
        let chat = i / per_chat.max(1);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            let mut seen = vec![false; expected];
            let mut duplicates = 0usize;
            let mut last = Instant::now();
            while latencies.len() < expected {
                let Ok(frame) = next_text(&mut socket, RECEIVER_IDLE_LIMIT).await else {
                    break;
                };
                frames_seen.fetch_add(1, Ordering::Relaxed);
                let Ok(event) = serde_json::from_str::<Event>(&frame) else {
                    continue;
                };
                if event.kind != "new_message" {
                    continue;
                }
                let index = event
                    .message
                    .and_then(|m| m.text)
                    .and_then(|t| t.parse::<usize>().ok());
                let Some(index) =
                    index.filter(|i| i % chat_count == chat && i / chat_count < expected)
                else {
                    continue;
                };
                if std::mem::replace(&mut seen[index / chat_count], true) {
                    duplicates += 1;
                } else if let Some(at) = sent_at[index].get() {
                    last = Instant::now();
                    latencies.push(last - *at);
                }
            }
            (latencies, last, duplicates)
        }));
    }

    // User and system time of every gateway, and of this process (the receivers' client).
    let cpu = || -> anyhow::Result<[f64; 3]> {
        let mut times = [0.0; 3];
        for pid in &args.gateway_pids {
            let (user, system) = cpu_split(*pid)?;
            times[0] += user;
            times[1] += system;
        }
        let (user, system) = cpu_split(std::process::id())?;
        times[2] = user + system;
        Ok(times)
    };
    let (settle_frames, settle_time) =
        wait_for_quiet(&frames_seen, Duration::from_millis(args.quiet_ms)).await?;
    println!(
        "settled: {settle_frames} frames (presence) reached the receivers; quiet for {} ms at \
         {:.1} s after the last receiver connected",
        args.quiet_ms,
        settle_time.as_secs_f64()
    );
    let cpu_before = cpu()?;
    let redis_before = RedisStats::read(&args.redis).await?;
    let gateways_before = probe::read(None, &gateways);
    let started = Instant::now();
    let interval = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    send_paced(
        api.clone(),
        &sender.token,
        &chats,
        sent_at.clone(),
        args.concurrency,
        interval,
        |i| json!({"client_msg_id": format!("fan-{i}"), "text": i.to_string()}),
    )
    .await?;
    let mut latencies = Vec::new();
    let mut finished = started;
    let mut duplicates = 0;
    for task in tasks {
        let (mut got, last, repeated) = task.await?;
        latencies.append(&mut got);
        finished = finished.max(last);
        duplicates += repeated;
    }
    let cpu_after = cpu()?;
    let own = probe::read(None, &gateways).since(&gateways_before);
    let [user, system, client] = [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]);
    let cpu_used = user + system;
    let redis_used = RedisStats::read(&args.redis).await?.since(redis_before);
    latencies.sort();
    let expected = args.messages * args.receivers;
    let elapsed = finished - started;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "fan-out: {} messages x {} receivers over {} gateways, sender concurrency {}{}, {} chat(s) \
         of {} members",
        args.messages,
        args.receivers,
        gateways.len(),
        args.concurrency,
        if args.rate > 0.0 {
            format!(" at {} messages/s", args.rate)
        } else {
            String::new()
        },
        chat_count,
        per_chat + 1
    );
    println!(
        "deliveries: {} of {expected} ({duplicates} repeated) in {:.2} s = {:.0} deliveries/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "delivery latency ms: p50 {:.2}  p99 {:.2}  max {:.2}",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(percentile(&latencies, 100.0))
    );
    if !args.gateway_pids.is_empty() {
        println!(
            "gateway CPU: {cpu_used:.2} s (user {user:.2}, system {system:.2}) over {} gateways = \
             {:.0} deliveries per gateway CPU-second",
            args.gateway_pids.len(),
            latencies.len() as f64 / cpu_used.max(0.01)
        );
    }
    // The services' share without this client's: a closed loop of 999-frame messages queues
    // them in its own reads, which the latency above includes.
    if let (Some(p50), Some(p99), Some(within)) = (
        own.delivery_quantile_ms(0.5),
        own.delivery_quantile_ms(0.99),
        own.delivery_share_within_ms(50.0),
    ) {
        println!(
            "gateways' own delivery time (publish -> written to the socket): p50 {p50:.1} ms  \
             p99 {p99:.1} ms  within 50 ms {:.2}% of {:.0} deliveries",
            100.0 * within,
            own.delivery_count()
        );
    }
    println!(
        "bench client CPU (the receivers and the sender): {client:.2} s = {:.0}% of one core",
        100.0 * client / elapsed.as_secs_f64().max(0.001)
    );
    if !args.redis.is_empty() {
        // Presence and receipts publish too: what is left per message is an upper bound on
        // the message's own publishes.
        println!(
            "redis: {} publishes = {:.2} per message sent; CPU {:.3} s = {:.1} us per message              ({} servers)",
            redis_used.publishes,
            redis_used.publishes as f64 / sends as f64,
            redis_used.cpu_seconds,
            redis_used.cpu_seconds * 1e6 / sends as f64,
            args.redis.len()
        );
    }
    anyhow::ensure!(duplicates == 0, "{duplicates} deliveries arrived twice");
    anyhow::ensure!(
        latencies.len() == expected,
        "lost deliveries: {} of {expected}",
        latencies.len()
    );
    Ok(())
}

/// Waits until no receiver has had a frame for `quiet`; returns the frames seen and the time it
/// took.
async fn wait_for_quiet(
    frames_seen: &AtomicU64,
    quiet: Duration,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let poll = (quiet / 4).max(Duration::from_millis(10));
    let mut seen = frames_seen.load(Ordering::Relaxed);
    let mut unchanged_since = Instant::now();
    loop {
        tokio::time::sleep(poll).await;
        let now_seen = frames_seen.load(Ordering::Relaxed);
        if now_seen != seen {
            seen = now_seen;
            unchanged_since = Instant::now();
        } else if unchanged_since.elapsed() >= quiet {
            return Ok((seen, started.elapsed()));
        }
        anyhow::ensure!(
            started.elapsed() < SETTLE_LIMIT,
            "the receivers were still getting frames after {SETTLE_LIMIT:?} ({seen} so far)"
        );
    }
}
