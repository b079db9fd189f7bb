//! The machine's floor for fan-out: what one small write to each of many loopback TCP sockets
//! costs the writing thread, with nothing of the chat system in the way. A gateway delivers an
//! event to a socket with one such write, so its deliveries per CPU-second cannot beat this
//! figure on the same machine; the fan-out benchmark's result reads against it.
//!
//! The sockets are set up like the gateway's (accepted side, TCP_NODELAY) and a second thread
//! drains the peers. On loopback the kernel runs the receiving side's TCP work inside the
//! sender's system call, so that cost lands on the writer here just as it does on a gateway.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use anyhow::Context;
use chat_bench::thread_cpu_seconds;
use clap::Parser;
use tokio::io::AsyncReadExt;

#[derive(Parser)]
#[command(about = "Measure the CPU cost of one small write per loopback TCP socket")]
struct Args {
    /// Sockets written to in turn, one write each per round.
    #[arg(long, default_value_t = 1000)]
    sockets: usize,
    /// Bytes per write (a new_message WebSocket frame is about this size).
    #[arg(long, default_value_t = 256)]
    frame_bytes: usize,
    /// Writes in all.
    #[arg(long, default_value_t = 1_000_000)]
    writes: usize,
    /// Writes per burst, with a pause after each that lets the draining thread fall asleep
    /// (0: no pauses). A gateway delivering to small groups writes a few sockets between its
    /// own sleeps, to clients that sleep too: it pays its wake-ups, the clients' (on loopback,
    /// inside its `send`) and colder caches, which a writer that never pauses rarely does.
    #[arg(long, default_value_t = 0)]
    burst: usize,
    /// The pause after each burst, in microseconds (not counted: only the writer's CPU is).
    #[arg(long, default_value_t = 200)]
    pause_us: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.sockets > 0, "--sockets must be at least 1");
    let (writers, peers) = socket_pairs(args.sockets)?;
    let drained = std::thread::spawn(move || drain(peers));

    let frame = vec![b'x'; args.frame_bytes];
    let cpu_before = thread_cpu_seconds()?;
    let started = Instant::now();
    // `&TcpStream` is a writer too, so the sockets can be cycled through by shared reference.
    let pause = std::time::Duration::from_micros(args.pause_us);
    for (written, mut socket) in (0..args.writes).zip(writers.iter().cycle()) {
        socket
            .write_all(&frame)
            .with_context(|| format!("write {written}"))?;
        if args.burst > 0 && (written + 1) % args.burst == 0 {
            std::thread::sleep(pause);
        }
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_seconds()? - cpu_before;
    drop(writers);
    let (bytes, reader_cpu) = drained
        .join()
        .map_err(|_| anyhow::anyhow!("the draining thread panicked"))??;

    anyhow::ensure!(
        bytes == (args.writes * args.frame_bytes) as u64,
        "the peers read {bytes} bytes, expected {}",
        args.writes * args.frame_bytes
    );
    println!(
        "write floor: {} writes of {} bytes over {} loopback sockets (TCP_NODELAY){} in {:.2} s",
        args.writes,
        args.frame_bytes,
        args.sockets,
        if args.burst > 0 {
            format!(
                ", bursts of {} with {} µs pauses",
                args.burst, args.pause_us
            )
        } else {
            String::new()
        },
        elapsed.as_secs_f64()
    );
    println!(
        "writer thread CPU: {cpu:.2} s = {:.0} writes per CPU-second ({:.2} µs each); \
         draining thread: {reader_cpu:.2} s",
        args.writes as f64 / cpu.max(0.01),
        cpu * 1e6 / args.writes as f64
    );
    Ok(())
}

/// `count` connected pairs: the accepted ends (written to) and the connecting ends (drained).
fn socket_pairs(count: usize) -> anyhow::Result<(Vec<TcpStream>, Vec<TcpStream>)> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let address = listener.local_addr()?;
    let mut accepted = Vec::with_capacity(count);
    let mut peers = Vec::with_capacity(count);
    for i in 0..count {
        peers.push(TcpStream::connect(address).with_context(|| format!("connecting pair {i}"))?);
        let (socket, _) = listener.accept()?;
        socket.set_nodelay(true)?;
        accepted.push(socket);
    }
    Ok((accepted, peers))
}

/// Reads every peer to its end on one thread; returns the bytes read and that thread's CPU.
fn drain(peers: Vec<TcpStream>) -> anyhow::Result<(u64, f64)> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let cpu_before = thread_cpu_seconds()?;
        let mut readers = tokio::task::JoinSet::new();
        for peer in peers {
            peer.set_nonblocking(true)?;
            let mut peer = tokio::net::TcpStream::from_std(peer)?;
            readers.spawn(async move {
                let mut buffer = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    match peer.read(&mut buffer).await? {
                        0 => return Ok::<_, std::io::Error>(total),
                        n => total += n as u64,
                    }
                }
            });
        }
        let mut bytes = 0;
        while let Some(read) = readers.join_next().await {
            bytes += read??;
        }
        Ok((bytes, thread_cpu_seconds()? - cpu_before))
    })
}
