//! A worker process: runs its share of the scenario's users (or churn's sessions) on one thread
//! and reports a [`Tick`] line on stdout every second, and a last one when it is done.

use std::cell::{Cell, RefCell};
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::time::Instant;

use crate::args::{Args, Scenario};
use crate::ctx::{Ctx, load_users};
use crate::metrics::{Recorder, cpu_seconds};
use crate::plan::Timing;
use crate::scenario;
use crate::ws::Target;

pub fn run(args: Args) -> anyhow::Result<()> {
    let worker = args.worker_index.context("--worker-index")?;
    let workers = args.worker_count.context("--worker-count")?;
    let start_at_ms = args.start_at_ms.context("--start-at-ms")?;
    let timing = Timing::resolve(&args)?;
    let users = load_users(&args.users_file)?;
    let targets = args
        .ws_urls
        .iter()
        .map(|u| Target::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(!targets.is_empty(), "WS_URLS is empty");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        // Time zero, as an Instant of this process.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let start = if start_at_ms >= now_ms {
            Instant::now() + Duration::from_millis(start_at_ms - now_ms)
        } else {
            Instant::now() - Duration::from_millis((now_ms - start_at_ms).min(3_600_000))
        };
        let ctx = Rc::new(Ctx {
            addrs: args.source_addrs(),
            dead: RefCell::new(vec![false; targets.len()]),
            args,
            timing,
            users,
            targets,
            worker,
            workers,
            start,
            rec: RefCell::new(Recorder::default()),
            active: Cell::new(0),
        });
        let ticker = {
            let ctx = ctx.clone();
            tokio::task::spawn_local(async move {
                let mut every = tokio::time::interval_at(
                    ctx.start + Duration::from_secs(1),
                    Duration::from_secs(1),
                );
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    emit(&ctx, false);
                }
            })
        };
        match ctx.args.scenario {
            Scenario::Churn => scenario::churn::run(ctx.clone()).await,
            Scenario::Chat | Scenario::Storm => scenario::chat::run(ctx.clone()).await,
            Scenario::Connect => scenario::connect::run(ctx.clone()).await,
        }
        ticker.abort();
        emit(&ctx, true);
    });
    Ok(())
}

fn emit(ctx: &Ctx, done: bool) {
    let mut tick = ctx.rec.borrow_mut().drain();
    tick.t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    tick.worker = ctx.worker;
    tick.active = ctx.active.get();
    tick.cpu_s = cpu_seconds(None).unwrap_or(0.0);
    tick.done = done;
    let mut out = std::io::stdout().lock();
    if let Ok(line) = serde_json::to_string(&tick) {
        // The coordinator reads whole lines; a broken pipe means it is gone, and so is the run.
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            std::process::exit(3);
        }
    }
}
