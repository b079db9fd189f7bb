//! When each virtual user or session starts, and where it goes: the k6 executors' shapes
//! (ramping-vus, ramping-arrival-rate) as pure functions, the scenarios' default durations, and
//! the split of users over gateways, source addresses and worker processes.

use std::net::Ipv4Addr;

use crate::args::{Args, Scenario};

/// The scenario's durations in seconds, with the k6 scripts' defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    /// churn: arrival-rate stages `(seconds, target rate)` from rate 0; others: empty.
    pub rate_stages: Vec<(f64, f64)>,
    /// chat, storm, connect: VU ramp stages `(seconds, target VUs)` from 0.
    pub vu_stages: Vec<(f64, f64)>,
    /// Sending window (chat, storm), seconds from the start.
    pub send_from: f64,
    pub send_until: f64,
    /// The end of the scenario's main phase (sockets close or final replays start).
    pub end: f64,
    /// storm: when the gateway is killed.
    pub kill_at: Option<f64>,
    /// churn: the most new sessions a second.
    pub rate: f64,
}

impl Timing {
    pub fn resolve(args: &Args) -> anyhow::Result<Self> {
        let vus = args.vus as f64;
        let d = |v: Option<f64>, dflt: f64| v.unwrap_or(dflt).max(0.0);
        let mut t = Timing {
            rate_stages: Vec::new(),
            vu_stages: Vec::new(),
            send_from: 0.0,
            send_until: 0.0,
            end: 0.0,
            kill_at: None,
            rate: 0.0,
        };
        match args.scenario {
            Scenario::Churn => {
                let rate = args.rate.unwrap_or((vus * 0.06).round().max(1.0));
                anyhow::ensure!(rate > 0.0, "RATE must be positive");
                let (ramp, hold, down) = (
                    d(args.ramp_s, 30.0),
                    d(args.hold_s, 75.0),
                    d(args.down_s, 15.0),
                );
                t.rate = rate;
                t.rate_stages = vec![(ramp, rate), (hold, rate), (down, 0.0)];
                t.end = ramp + hold + down;
            }
            Scenario::Chat | Scenario::Storm => {
                let (ramp, hold) = (d(args.ramp_s, 30.0), d(args.hold_s, 120.0));
                let (settle, drain) = (d(args.settle_s, 5.0), d(args.drain_s, 5.0));
                t.vu_stages = vec![(ramp, vus), (hold, vus)];
                t.end = ramp + hold;
                t.send_from = ramp + settle;
                t.send_until = t.end - drain;
                anyhow::ensure!(
                    t.send_until > t.send_from,
                    "HOLD_S is too short for SETTLE_S + DRAIN_S"
                );
                if args.scenario == Scenario::Storm {
                    let at = args
                        .kill_at_s
                        .unwrap_or(t.send_from + (t.send_until - t.send_from) / 2.0);
                    anyhow::ensure!(
                        at > t.send_from && at < t.send_until,
                        "KILL_AT_S must fall inside the sending window ({:.0}-{:.0} s)",
                        t.send_from,
                        t.send_until
                    );
                    t.kill_at = Some(at);
                }
            }
            Scenario::Connect => {
                let plateau = (vus * 2.0 / 3.0).round().max(1.0);
                let (r1, h1) = (d(args.ramp1_s, 60.0), d(args.hold1_s, 60.0));
                let (r2, h2) = (d(args.ramp2_s, 30.0), d(args.hold2_s, 60.0));
                t.vu_stages = vec![(r1, plateau), (h1, plateau), (r2, vus), (h2, vus)];
                t.end = r1 + h1 + r2 + h2;
            }
        }
        Ok(t)
    }

    /// The time the VU with 0-based index `k` starts (ramping-vus: when the linear target
    /// first exceeds `k`).
    pub fn vu_start(&self, k: usize) -> f64 {
        vu_start(&self.vu_stages, k)
    }
}

/// ramping-vus from 0: VU `k` starts when the target first exceeds `k`.
pub fn vu_start(stages: &[(f64, f64)], k: usize) -> f64 {
    let want = k as f64 + 1.0;
    let (mut at, mut from) = (0.0, 0.0);
    for &(dur, to) in stages {
        if to >= want && to > from {
            let frac = ((want - from) / (to - from)).clamp(0.0, 1.0);
            return at + dur * frac;
        }
        at += dur;
        from = to;
    }
    at
}

/// ramping-arrival-rate from rate 0: the start times of every iteration, in order.
pub fn arrival_times(stages: &[(f64, f64)]) -> Vec<f64> {
    let mut out = Vec::new();
    let (mut at, mut rate, mut done) = (0.0_f64, 0.0_f64, 0.0_f64);
    for &(dur, to) in stages {
        if dur <= 0.0 {
            rate = to;
            continue;
        }
        // N(t) = rate t + k t^2 within the stage, k = (to - rate) / (2 dur).
        let k = (to - rate) / (2.0 * dur);
        let total = rate * dur + k * dur * dur;
        let mut n = (done.floor() + 1.0) - done;
        while n <= total + 1e-9 {
            let t = if k.abs() < 1e-12 {
                n / rate
            } else {
                let disc = (rate * rate + 4.0 * k * n).max(0.0);
                (-rate + disc.sqrt()) / (2.0 * k)
            };
            out.push(at + t.clamp(0.0, dur));
            n += 1.0;
        }
        done += total;
        at += dur;
        rate = to;
    }
    out
}

/// How many worker processes: as asked, or enough that none holds more than `per_worker`
/// sockets at once.
pub fn worker_count(asked: usize, max_concurrent: usize, per_worker: usize) -> usize {
    if asked > 0 {
        return asked;
    }
    max_concurrent.div_ceil(per_worker.max(1)).max(1)
}

/// The gateway of user `k`: round-robin, so a pair (2j, 2j+1) is split over two gateways.
pub fn gateway_of(k: usize, gateways: usize) -> usize {
    k % gateways.max(1)
}

/// The source address of socket `k`: spread over the addresses within each gateway's share.
pub fn source_of(k: usize, gateways: usize, addrs: &[Ipv4Addr]) -> Ipv4Addr {
    addrs[(k / gateways.max(1)) % addrs.len().max(1)]
}

/// Whether worker `w` of `n` runs user (or iteration) `k`.
pub fn owns(k: usize, w: usize, n: usize) -> bool {
    k % n.max(1) == w
}

#[cfg(test)]
mod tests;
