//! The machine's floor for the database: one bare `SELECT 1` round trip on one open MySQL/MariaDB
//! connection, one after another. A send batch is a few round trips in a row, so chat-api's
//! persisted messages per second and its request latency read against this figure, measured in
//! the same run (this VM's speed drifts by 2× within a day).
//!
//! Prints the round trip's p50/p99 wall time and the client thread's CPU per round trip; the rest
//! of a round trip is the server's work and the scheduling of the two processes.

use std::time::{Duration, Instant};

use anyhow::Context;
use chat_bench::{percentile, thread_cpu_seconds};
use clap::Parser;
use sqlx::Connection;

#[derive(Parser)]
#[command(about = "Measure one bare SELECT 1 round trip to MySQL/MariaDB")]
struct Args {
    /// The database server (any database name: only `SELECT 1` runs).
    #[arg(
        long,
        env = "CHAT_DB_FLOOR_URL",
        default_value = "mysql://root@127.0.0.1:3306/mysql"
    )]
    database_url: String,
    /// Round trips in all (the first 100 warm up and are not counted).
    #[arg(long, default_value_t = 5_000)]
    queries: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.queries > 0, "--queries must be at least 1");
    let mut conn = sqlx::MySqlConnection::connect(&args.database_url)
        .await
        .context("connecting to the database (--database-url)")?;
    for _ in 0..100 {
        sqlx::query("SELECT 1").execute(&mut conn).await?;
    }
    let mut took = Vec::with_capacity(args.queries);
    let cpu_before = thread_cpu_seconds()?;
    let started = Instant::now();
    for _ in 0..args.queries {
        let sent = Instant::now();
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        took.push(sent.elapsed());
    }
    let elapsed = started.elapsed();
    let cpu = thread_cpu_seconds()? - cpu_before;
    conn.close().await?;
    took.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "db floor: {} SELECT 1 round trips in {:.2} s: p50 {:.0} µs, p99 {:.0} µs, mean {:.0} µs; \
         client CPU {:.1} µs a round trip",
        args.queries,
        elapsed.as_secs_f64(),
        micros(percentile(&took, 50.0)),
        micros(percentile(&took, 99.0)),
        micros(elapsed) / args.queries as f64,
        cpu * 1e6 / args.queries as f64
    );
    Ok(())
}
