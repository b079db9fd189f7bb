//! Slow consumers: does one socket that stops reading hurt everyone else on its gateway?
//! Receivers in a group get messages while (a) nobody is slow and (b) one member's socket never
//! reads (small receive buffer). Prints the others' delivery latency for both, and the close
//! code the slow socket ends up with (4008 expected: its bounded queue overflowed).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use chat_bench::{Account, Api, Socket, connect, next_json, percentile, send_concurrently};
use clap::Parser;
use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(about = "Latency of normal sockets next to a socket that does not read")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    api_url: String,
    /// One gateway: the slow socket and the others share it.
    #[arg(long, default_value = "ws://127.0.0.1:8081/ws")]
    ws: String,
    #[arg(long, default_value_t = 50)]
    receivers: usize,
    #[arg(long, default_value_t = 1500)]
    messages: usize,
    /// Text size per message (bytes): larger fills the slow socket's queue sooner.
    #[arg(long, default_value_t = 2000)]
    text_bytes: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api = Arc::new(Api::new(&args.api_url));
    let sender = api.register("slow_s_").await?;
    let slow = api.register("slow_x_").await?;
    let mut receivers = Vec::new();
    for _ in 0..args.receivers {
        receivers.push(api.register("slow_r_").await?);
    }
    let mut members: Vec<u64> = receivers.iter().map(|r| r.id).collect();
    members.push(slow.id);
    let chat = api
        .post(
            "/v1/chats",
            Some(&sender.token),
            json!({"type": "group", "title": "slow", "member_ids": members}),
        )
        .await?;
    let chat_id = chat["id"].as_u64().context("chat id")?;

    let baseline = round(&api, &args, &sender, &receivers, chat_id, "base").await?;
    let slow_socket = connect_without_reading(&args.ws, &slow.token).await?;
    let with_slow = round(&api, &args, &sender, &receivers, chat_id, "slow").await?;
    let close_code = read_close_code(slow_socket).await;

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{} receivers on one gateway, {} messages of {} bytes",
        args.receivers, args.messages, args.text_bytes
    );
    for (name, samples) in [
        ("no slow socket", &baseline),
        ("one socket not reading", &with_slow),
    ] {
        println!(
            "{name:>24}: deliveries {} p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
            samples.len(),
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0)),
            ms(percentile(samples, 100.0))
        );
    }
    println!("slow socket closed with: {close_code}");
    Ok(())
}

/// Sends `messages` (4 in flight) and returns every receiver's delivery latencies.
async fn round(
    api: &Arc<Api>,
    args: &Args,
    sender: &Account,
    receivers: &[Account],
    chat_id: u64,
    tag: &str,
) -> anyhow::Result<Vec<Duration>> {
    let sent_at: Arc<Vec<OnceLock<Instant>>> =
        Arc::new((0..args.messages).map(|_| OnceLock::new()).collect());
    let mut tasks = Vec::new();
    for receiver in receivers {
        let mut socket = connect(&args.ws, &receiver.token).await?;
        let (sent_at, expected, tag) = (sent_at.clone(), args.messages, tag.to_string());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(expected);
            while latencies.len() < expected {
                let Ok(event) = next_json(&mut socket, Duration::from_secs(20)).await else {
                    break;
                };
                let client_msg_id = event["message"]["client_msg_id"]
                    .as_str()
                    .unwrap_or_default();
                let index = client_msg_id
                    .strip_prefix(&format!("{tag}-"))
                    .and_then(|i| i.parse::<usize>().ok());
                if let Some(at) = index.and_then(|i| sent_at.get(i)).and_then(OnceLock::get) {
                    latencies.push(at.elapsed());
                }
            }
            latencies
        }));
    }
    let padding = "x".repeat(args.text_bytes);
    let tag = tag.to_string();
    send_concurrently(
        api.clone(),
        &sender.token,
        &[chat_id],
        sent_at.clone(),
        4,
        move |i| json!({"client_msg_id": format!("{tag}-{i}"), "text": padding}),
    )
    .await?;
    let mut all = Vec::new();
    for task in tasks {
        all.append(&mut task.await?);
    }
    all.sort();
    Ok(all)
}

/// A socket with a tiny receive buffer whose frames are never read.
async fn connect_without_reading(ws_url: &str, token: &str) -> anyhow::Result<Socket> {
    let url = format!("{ws_url}?token={token}");
    let host = ws_url
        .trim_start_matches("ws://")
        .split('/')
        .next()
        .context("host in the WS URL")?
        .to_string();
    let addr = tokio::net::lookup_host(&host)
        .await?
        .next()
        .context("resolve")?;
    let tcp = tokio::net::TcpSocket::new_v4()?;
    tcp.set_recv_buffer_size(4096)?;
    let stream = tcp.connect(addr).await?;
    let (socket, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(socket)
}

/// Reads what the slow socket was sent until it closes, and names the close code.
async fn read_close_code(mut socket: Socket) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return u16::from(frame.code).to_string(),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return format!("error: {e}"),
            Ok(None) => return "stream ended without a close frame".into(),
            Err(_) => return "still open (its queue never overflowed)".into(),
        }
    }
    "still open".into()
}
