//! The process the user starts: checks the inputs, starts the workers (this same binary with
//! hidden `--worker-*` flags, each with its share of the users), reads their ticks, prints
//! progress once a second, kills the storm's gateway on time, reads the gateways' memory, and
//! writes the summaries when every worker is done.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;

use crate::aggregate::Aggregate;
use crate::args::{Args, KillSignal, Scenario};
use crate::ctx::load_users;
use crate::metrics::{Tick, cpu_seconds, name, rss_kib};
use crate::plan::{self, Timing};
use crate::probe;
use crate::report::{self, RunFacts};
use crate::ws::Target;

/// How long the workers get to read the users file and get ready before time zero.
const READY_MS: u64 = 2000;
/// storm: how long after the last dropped client's jitter the services' counters are read again.
const STORM_PROBE_GRACE_S: f64 = 8.0;

pub fn run(args: Args) -> anyhow::Result<std::process::ExitCode> {
    let timing = Timing::resolve(&args)?;
    let users = load_users(&args.users_file)?;
    for u in &args.ws_urls {
        Target::parse(u)?;
    }
    anyhow::ensure!(!args.ws_urls.is_empty(), "WS_URLS is empty");
    anyhow::ensure!(args.vus > 0, "VUS must be positive");
    if args.scenario != Scenario::Churn {
        anyhow::ensure!(
            users.len() >= args.vus,
            "{} has {} users, VUS={} needs as many",
            args.users_file.display(),
            users.len(),
            args.vus
        );
    }
    if args.scenario == Scenario::Storm {
        anyhow::ensure!(
            args.ws_urls.len() >= 2,
            "storm needs at least two gateways in WS_URLS"
        );
        anyhow::ensure!(
            args.gateway_pids.len() == args.ws_urls.len(),
            "storm needs GATEWAY_PIDS, one per WS_URLS entry, to kill one"
        );
        anyhow::ensure!(
            (1..=args.ws_urls.len()).contains(&args.kill_gateway),
            "KILL_GATEWAY must be 1-{}",
            args.ws_urls.len()
        );
    }
    let max_concurrent = match args.scenario {
        Scenario::Churn => args
            .vus
            .min((timing.rate * (args.session_s + args.echo_grace_s + 2.0)).ceil() as usize),
        _ => args.vus,
    };
    let workers = plan::worker_count(args.workers, max_concurrent, args.sockets_per_worker);
    warn_about_limits(max_concurrent.div_ceil(workers), &args);
    drop(users);

    let raw = args.results_dir.as_ref().map(|d| d.join("raw"));
    if let Some(r) = &raw {
        std::fs::create_dir_all(r).with_context(|| format!("creating {}", r.display()))?;
    }
    let mut agg = Aggregate::new(raw.as_ref().map(|r| r.join("metrics.json")).as_deref())?;

    let gateway_rss = || -> Option<u64> {
        if args.gateway_pids.is_empty() {
            return None;
        }
        args.gateway_pids.iter().map(|p| rss_kib(*p)).sum()
    };
    let rss_before = gateway_rss();

    // Workers.
    let start_at_ms = unix_ms() + READY_MS;
    let exe = std::env::current_exe().context("finding this binary")?;
    let passthrough: Vec<String> = std::env::args().skip(1).collect();
    let (tx, rx) = mpsc::channel::<Tick>();
    let mut children: Vec<Child> = Vec::new();
    for w in 0..workers {
        let mut child = Command::new(&exe)
            .args(&passthrough)
            .args([
                "--worker-index",
                &w.to_string(),
                "--worker-count",
                &workers.to_string(),
            ])
            .args(["--start-at-ms", &start_at_ms.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Tick>(&line) {
                    Ok(t) => {
                        if tx.send(t).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("chat-load: worker {w}: {line}"),
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    if let Some(r) = &raw {
        // For loadtest/lib/sample.py: one name:pid per process of the driver.
        let mut pids = format!("load:{}", std::process::id());
        for (w, c) in children.iter().enumerate() {
            pids.push_str(&format!(" load-w{}:{}", w + 1, c.id()));
        }
        std::fs::write(r.join("driver-pids.txt"), pids + "\n")?;
    }
    eprintln!(
        "chat-load: {} with {} VUs, {} worker(s), gateways {}, sources {}",
        args.scenario.name(),
        args.vus,
        workers,
        args.ws_urls.join(","),
        args.source_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );

    let t0 = Instant::now() + Duration::from_millis(READY_MS);
    let kill_at = timing.kill_at.map(|s| t0 + Duration::from_secs_f64(s));
    let idle_at = match args.scenario {
        Scenario::Chat | Scenario::Storm => Some(timing.send_from - 1.0),
        Scenario::Connect => Some(timing.end - 2.0),
        Scenario::Churn => None,
    }
    .map(|s| t0 + Duration::from_secs_f64(s.max(0.0)));
    let mut killed: Option<String> = None;
    // storm: the services' counters at the kill, read again once every dropped client has had
    // its jitter and a few seconds to resume (before the final replays, which sync too).
    let probe_at = kill_at.map(|k| {
        let after = k + Duration::from_secs_f64(args.reconnect_jitter_s + STORM_PROBE_GRACE_S);
        after.min(t0 + Duration::from_secs_f64(timing.end))
    });
    let mut counters_at_kill: Option<probe::Counters> = None;
    let mut facts = RunFacts {
        workers,
        gateway_rss_before_kib: rss_before,
        ..RunFacts::default()
    };
    let mut active = vec![0u64; workers];
    let mut cpu = vec![0f64; workers];
    let mut done = vec![false; workers];
    let mut crashed = vec![false; workers];
    let mut peak_rss_kib = vec![0u64; workers];
    let mut next_second = t0 + Duration::from_secs(1);
    let mut last_totals = (0.0, 0.0, 0.0);
    let hard_end = t0 + Duration::from_secs_f64(timing.end + args.session_s + 120.0);
    let tick_start = Instant::now();
    while done.iter().any(|d| !d) {
        let now = Instant::now();
        if kill_at.is_some_and(|k| k <= now) && killed.is_none() {
            counters_at_kill = Some(probe::read(args.api_url.as_deref(), &args.ws_urls));
            killed = Some(kill_gateway(&args));
        }
        if probe_at.is_some_and(|p| p <= now)
            && facts.storm_counters.is_none()
            && let Some(before) = &counters_at_kill
        {
            let after = probe::read(args.api_url.as_deref(), &args.ws_urls);
            facts.storm_counters = Some(after.since(before));
        }
        let wait = next_second
            .saturating_duration_since(now)
            .min(Duration::from_millis(200));
        match rx.recv_timeout(wait) {
            Ok(t) => {
                active[t.worker] = t.active;
                cpu[t.worker] = t.cpu_s;
                done[t.worker] |= t.done;
                agg.absorb(&t);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // Every worker's stdout closed: any not done crashed.
                break;
            }
        }
        if Instant::now() >= next_second {
            next_second += Duration::from_secs(1);
            for (w, c) in children.iter_mut().enumerate() {
                if let Some(r) = rss_kib(c.id()) {
                    peak_rss_kib[w] = peak_rss_kib[w].max(r);
                }
                // A worker that exited without its last tick crashed: stop waiting for it.
                if !done[w]
                    && let Ok(Some(status)) = c.try_wait()
                {
                    // Its last lines may still be in the pipe: read what is there first.
                    while let Ok(t) = rx.try_recv() {
                        active[t.worker] = t.active;
                        cpu[t.worker] = t.cpu_s;
                        done[t.worker] |= t.done;
                        agg.absorb(&t);
                    }
                    if !done[w] {
                        eprintln!("chat-load: worker {w} exited ({status}) before finishing");
                        crashed[w] = true;
                        done[w] = true;
                    }
                }
            }
            let sockets: u64 = active.iter().sum();
            agg.vus(unix_s(), sockets);
            facts.peak_sockets = facts.peak_sockets.max(sockets);
            // The gateways' memory with every socket open and idle: just before the sends begin
            // (chat, storm), near the end of the last hold (connect), or at the most sockets
            // (churn). Never after the storm's kill.
            let measure = match idle_at {
                Some(at) => Instant::now() <= at || facts.gateway_sockets_at_peak == 0,
                None => sockets >= facts.gateway_sockets_at_peak,
            };
            if measure
                && sockets > 0
                && killed.is_none()
                && let Some(r) = gateway_rss()
            {
                facts.gateway_rss_at_peak_kib = Some(r);
                facts.gateway_sockets_at_peak = sockets;
            }
            let totals = (
                agg.count(name::AUTH_OK),
                agg.count(name::ACKED),
                agg.count(name::RECEIVED),
            );
            let el = Instant::now().saturating_duration_since(t0).as_secs_f64();
            let delivery = agg.take_second(name::DELIVERY);
            let auth = agg.take_second(name::SESSION_AUTH);
            agg.second.clear();
            let driver_cpu: f64 = cpu.iter().sum::<f64>() + cpu_seconds(None).unwrap_or(0.0);
            println!(
                "[{el:5.0}s] sockets {sockets:>6} | auth_ok {:>5}/s ({:.0}) | acked {:>5}/s | received {:>5}/s | delivery p50/p99 {} | auth p99 {} | errors {} | driver CPU {:.1} s",
                totals.0 - last_totals.0,
                totals.0,
                totals.1 - last_totals.1,
                totals.2 - last_totals.2,
                delivery.map_or("-".into(), |d| format!("{:.1}/{:.1} ms", d.p50, d.p99)),
                auth.map_or("-".into(), |a| format!("{:.1} ms", a.p99)),
                agg.count(name::ERRORS),
                driver_cpu,
            );
            let _ = std::io::stdout().flush();
            last_totals = totals;
            if Instant::now() > hard_end {
                eprintln!("chat-load: the workers did not finish in time; stopping them");
                break;
            }
        }
    }
    let unfinished = done
        .iter()
        .zip(&crashed)
        .filter(|(d, c)| !**d || **c)
        .count();
    for c in children.iter_mut() {
        if unfinished > 0 {
            let _ = c.kill();
        }
        let _ = c.wait();
    }
    agg.finish()?;
    facts.duration_s = tick_start.elapsed().as_secs_f64() - READY_MS as f64 / 1e3;
    facts.driver_cpu_s = cpu.iter().sum::<f64>() + cpu_seconds(None).unwrap_or(0.0);
    facts.driver_peak_rss_mb = peak_rss_kib.iter().sum::<u64>() as f64 / 1024.0;
    facts.killed_gateway = killed;

    let report = report::build(&args, &timing, &agg, &facts);
    println!("{}", report.text);
    if let Some(dir) = &args.results_dir {
        report::write(dir, &args, &agg, &report, &facts)?;
    }
    if unfinished > 0 {
        eprintln!("chat-load: {unfinished} worker(s) did not finish");
        return Ok(std::process::ExitCode::from(2));
    }
    // k6's status when a threshold failed.
    Ok(if report.failed() == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(99)
    })
}

fn kill_gateway(args: &Args) -> String {
    let i = args.kill_gateway - 1;
    let pid = args.gateway_pids[i];
    let signal = match args.kill_signal {
        KillSignal::Kill => "-KILL",
        KillSignal::Term => "-TERM",
    };
    let status = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status();
    let what = format!("gw{} ({}, pid {pid}, {signal})", i + 1, args.ws_urls[i]);
    match status {
        Ok(s) if s.success() => eprintln!("chat-load: killed {what}"),
        _ => eprintln!("chat-load: could not kill {what}"),
    }
    what
}

/// Warns when this process's open-files limit cannot hold a worker's sockets.
fn warn_about_limits(per_worker: usize, args: &Args) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft
        && soft < per_worker + 100
    {
        eprintln!(
            "chat-load: warning: the open-files limit is {soft} and a worker may hold {per_worker} sockets: \
                 raise it (ulimit -n) or set WORKERS / SOCKETS_PER_WORKER (now {})",
            args.sockets_per_worker
        );
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn unix_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
