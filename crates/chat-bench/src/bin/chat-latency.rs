//! Send → delivered latency across gateways: user A on one gateway sends N messages one after
//! another; user B on another gateway receives them. Each sample is the time from A writing the
//! `send` frame to B reading the matching `new_message` (through chat-api, MySQL commit, Redis
//! and the other gateway). Prints percentiles.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chat_bench::{Api, connect, next_json, percentile};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
#[command(about = "Measure send -> delivered latency between two gateways")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// Gateway of the sender.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws")]
    sender_ws: String,
    /// Gateway of the receiver.
    #[arg(long, default_value = "ws://127.0.0.1:8083/ws")]
    receiver_ws: String,
    #[arg(long, default_value_t = 1000)]
    messages: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Api::new(&args.api_url);
    let alice = api.register("lat_a_").await?;
    let bob = api.register("lat_b_").await?;
    let chat = api
        .post(
            "/v1/chats",
            Some(&alice.token),
            json!({"type": "private", "peer_id": bob.id}),
        )
        .await?;
    let chat_id = chat["id"].as_u64().context("chat id")?;
    let sender = connect(&args.sender_ws, &alice.token).await?;
    let mut receiver = connect(&args.receiver_ws, &bob.token).await?;

    // The sender's own frames (ack, its copy of new_message) are read off in the background.
    let (mut sender_tx, mut sender_rx) = futures_util::StreamExt::split(sender);
    let drain = tokio::spawn(async move {
        while let Some(Ok(_)) = futures_util::StreamExt::next(&mut sender_rx).await {}
    });

    let mut samples = Vec::with_capacity(args.messages);
    let started = Instant::now();
    for i in 0..args.messages {
        let frame = json!({"type": "send", "id": format!("r{i}"), "chat_id": chat_id,
                           "client_msg_id": format!("lat-{i}"), "text": format!("message {i}")});
        let sent_at = Instant::now();
        futures_util::SinkExt::send(
            &mut sender_tx,
            tokio_tungstenite::tungstenite::Message::Text(frame.to_string().into()),
        )
        .await?;
        loop {
            let event = next_json(&mut receiver, Duration::from_secs(10)).await?;
            if event["type"] == "new_message" {
                if event["message"]["client_msg_id"] != format!("lat-{i}") {
                    bail!("out of order delivery: {event}");
                }
                samples.push(sent_at.elapsed());
                break;
            }
        }
    }
    let total = started.elapsed();
    drain.abort();
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / samples.len().max(1) as u32;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "messages: {} sequential, sender {} -> receiver {}",
        samples.len(),
        args.sender_ws,
        args.receiver_ws
    );
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}  mean {:.2}",
        ms(percentile(&samples, 50.0)),
        ms(percentile(&samples, 90.0)),
        ms(percentile(&samples, 99.0)),
        ms(percentile(&samples, 100.0)),
        ms(mean)
    );
    println!(
        "throughput: {:.0} messages/s (one at a time)",
        samples.len() as f64 / total.as_secs_f64()
    );
    Ok(())
}
