//! The model applied to a load-driver run on one machine (`loadtest/run.sh … DRIVER=chat-load`),
//! so that it can be checked: the run's counts (sessions, socket-seconds, messages, deliveries,
//! publishes, final replays) follow from the scenario's shape as chat-load plans it (its
//! defaults are repeated here), and each process's CPU-seconds and peak RSS from the units:
//! per thing counted, plus per second of each process while sessions arrive (the ramps) and
//! while messages flow (the sending window); a gateway's idle sockets at the cost of its
//! density at each moment of the ramps; Redis's idle sockets at their marginal cost, plus the
//! process's own idle rate over the whole run (one Redis, whatever the gateways). The RSS
//! predicted is the peak before the final replays, whose burst is a reconnect storm of its own
//! (docs/capacity.md).
//! `scripts/capacity-check.sh` prints this prediction, runs the driver and compares.

use serde::Serialize;

use crate::units::Units;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Idle authenticated sockets (two-step ramp), pings answered.
    Connect,
    /// Pairs (and groups) sending messages.
    Chat,
}

/// The run's shape: chat-load's knobs, with its defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Shape {
    pub scenario: Scenario,
    pub vus: f64,
    pub gateways: u32,
    // chat
    pub ramp_s: f64,
    pub hold_s: f64,
    pub settle_s: f64,
    pub drain_s: f64,
    pub send_every_s: f64,
    pub group_send_every_s: f64,
    /// 0: pairs only.
    pub group_size: f64,
    pub final_sync: bool,
    pub final_spread_s: f64,
    // connect
    pub ramp1_s: f64,
    pub hold1_s: f64,
    pub ramp2_s: f64,
    pub hold2_s: f64,
}

impl Shape {
    /// chat-load's defaults for a scenario (crates/chat-load/src/plan.rs and args.rs).
    pub fn defaults(scenario: Scenario, vus: f64, gateways: u32) -> Self {
        Shape {
            scenario,
            vus,
            gateways,
            ramp_s: 30.0,
            hold_s: 120.0,
            settle_s: 5.0,
            drain_s: 5.0,
            send_every_s: 10.0,
            group_send_every_s: 60.0,
            group_size: 0.0,
            final_sync: true,
            final_spread_s: 5.0,
            ramp1_s: 60.0,
            hold1_s: 60.0,
            ramp2_s: 30.0,
            hold2_s: 60.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ShapeError {
    #[error("{0}")]
    Bad(&'static str),
}

/// What the run does, counted.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Counts {
    pub sessions: f64,
    pub socket_seconds: f64,
    pub messages: f64,
    pub deliveries: f64,
    /// One per member channel of a private chat, one per group message (its chat's channel).
    pub publishes: f64,
    /// Published events written to a subscribed gateway: a pair's two members' gateways, and
    /// each gateway holding a member of a group (chat-load puts user k on gateway k mod n, and a
    /// group is consecutive users).
    pub redis_deliveries: f64,
    pub resumes: f64,
    /// Sockets at the peak.
    pub peak_sockets: f64,
    /// Seconds during which sessions arrive (the ramps).
    pub arrival_s: f64,
    /// Seconds during which messages flow (the sending window).
    pub sending_s: f64,
    /// Seconds from the first socket to the last replay: what a process's idle rate is paid over.
    pub run_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProcessPrediction {
    /// As named in the run's resources.csv: api, gw1, gw2, …, mariadb, redis.
    pub process: String,
    pub cpu_s: f64,
    /// None where the model does not predict it (servers shared with other databases).
    pub rss_mib: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    pub shape: Shape,
    pub counts: Counts,
    pub processes: Vec<ProcessPrediction>,
}

pub fn counts(s: &Shape) -> Result<Counts, ShapeError> {
    if !(s.vus.is_finite() && s.vus >= 1.0) {
        return Err(ShapeError::Bad("VUS must be at least 1"));
    }
    if s.gateways == 0 {
        return Err(ShapeError::Bad("GATEWAYS must be at least 1"));
    }
    let v = s.vus;
    let run_s = socket_stages(s)
        .iter()
        .map(|(secs, _, _)| secs.max(0.0))
        .sum();
    Ok(match s.scenario {
        Scenario::Connect => {
            let plateau = (v * 2.0 / 3.0).round().max(1.0);
            Counts {
                sessions: v,
                socket_seconds: plateau * s.ramp1_s / 2.0
                    + plateau * s.hold1_s
                    + (plateau + v) / 2.0 * s.ramp2_s
                    + v * s.hold2_s,
                messages: 0.0,
                deliveries: 0.0,
                publishes: 0.0,
                redis_deliveries: 0.0,
                resumes: 0.0,
                peak_sockets: v,
                arrival_s: s.ramp1_s + s.ramp2_s,
                sending_s: 0.0,
                run_s,
            }
        }
        Scenario::Chat => {
            let window = s.hold_s - s.settle_s - s.drain_s;
            if window <= 0.0 || s.send_every_s <= 0.0 {
                return Err(ShapeError::Bad(
                    "HOLD_S must exceed SETTLE_S + DRAIN_S, and SEND_EVERY_S be positive",
                ));
            }
            // Users come in pairs; with GROUP_SIZE each is also in one group.
            let pair = v * window / s.send_every_s;
            let group = if s.group_size >= 2.0 && s.group_send_every_s > 0.0 {
                v * window / s.group_send_every_s
            } else {
                0.0
            };
            // The final replay: spread over FINAL_SPREAD_S, then a second of quiet.
            let tail = if s.final_sync {
                s.final_spread_s / 2.0 + 1.0
            } else {
                0.0
            };
            Counts {
                sessions: v,
                socket_seconds: v * s.ramp_s / 2.0 + v * s.hold_s + v * tail,
                messages: pair + group,
                deliveries: pair * 2.0 + group * s.group_size,
                publishes: pair * 2.0 + group,
                redis_deliveries: pair * 2.0 + group * s.group_size.min(s.gateways as f64),
                resumes: if s.final_sync { v } else { 0.0 },
                peak_sockets: v,
                arrival_s: s.ramp_s,
                sending_s: window,
                run_s,
            }
        }
    })
}

/// The sockets open over the run: `(seconds, from, to)` stages, linear within each, as
/// chat-load ramps them (what `counts` integrates into socket-seconds).
fn socket_stages(s: &Shape) -> Vec<(f64, f64, f64)> {
    let v = s.vus;
    match s.scenario {
        Scenario::Connect => {
            let plateau = (v * 2.0 / 3.0).round().max(1.0);
            vec![
                (s.ramp1_s, 0.0, plateau),
                (s.hold1_s, plateau, plateau),
                (s.ramp2_s, plateau, v),
                (s.hold2_s, v, v),
            ]
        }
        Scenario::Chat => {
            let tail = if s.final_sync {
                s.final_spread_s / 2.0 + 1.0
            } else {
                0.0
            };
            vec![(s.ramp_s, 0.0, v), (s.hold_s + tail, v, v)]
        }
    }
}

/// The gateways' idle CPU (µs, all of them): each socket-second at the cost of its gateway's
/// density then (`Gateway::socket_us_per_s_at`), sockets spread evenly.
fn gateway_idle_us(g: &crate::units::Gateway, s: &Shape) -> f64 {
    const STEPS: usize = 200;
    let n = s.gateways as f64;
    socket_stages(s)
        .into_iter()
        .filter(|(secs, _, _)| *secs > 0.0)
        .map(|(secs, from, to)| {
            let dt = secs / STEPS as f64;
            (0..STEPS)
                .map(|i| {
                    let sockets = from + (to - from) * (i as f64 + 0.5) / STEPS as f64;
                    sockets * g.socket_us_per_s_at(sockets / n) * dt
                })
                .sum::<f64>()
        })
        .sum()
}

pub fn predict(units: &Units, s: &Shape) -> Result<Prediction, ShapeError> {
    let c = counts(s)?;
    let (g, a, m, r) = (&units.gateway, &units.api, &units.mysql, &units.redis);
    let s_us = 1e-6;
    let gw_total = (c.sessions * g.session_us.value
        + gateway_idle_us(g, s)
        + c.messages * g.send_us.value
        + c.deliveries * g.delivery_us.value)
        * s_us;
    // What each process spends per second while sessions arrive or messages flow.
    let active =
        |arrivals: f64, sending: f64| (c.arrival_s * arrivals + c.sending_s * sending) * s_us;
    let n = s.gateways as f64;
    // Memory: the sockets, and what the message rate keeps in flight.
    let rate = if c.sending_s > 0.0 {
        c.messages / c.sending_s
    } else {
        0.0
    };
    let mib = 1024.0 * 1024.0;
    let gw_rss = g.base_rss_mib.value
        + (c.peak_sockets / n * g.socket_idle_bytes.value + rate / n * g.msg_rate_bytes.value)
            / mib;
    let api_rss = a.base_rss_mib.value + rate * a.msg_rate_bytes.value / mib;
    let mut processes = vec![ProcessPrediction {
        process: "api".into(),
        cpu_s: (c.sessions * a.session_us.value
            + c.messages * a.message_us.value
            + c.publishes * a.publish_us.value
            + c.resumes * a.resume_us.value)
            * s_us
            + active(a.arrivals_us_per_s.value, a.sending_us_per_s.value),
        rss_mib: Some(api_rss),
    }];
    for i in 1..=s.gateways {
        processes.push(ProcessPrediction {
            process: format!("gw{i}"),
            cpu_s: gw_total / n + active(g.arrivals_us_per_s.value, g.sending_us_per_s.value),
            rss_mib: Some(gw_rss),
        });
    }
    processes.push(ProcessPrediction {
        process: "mariadb".into(),
        cpu_s: (c.messages * m.message_us.value
            + c.sessions * m.session_us.value
            + c.resumes * m.resume_us.value)
            * s_us
            + active(m.arrivals_us_per_s.value, m.sending_us_per_s.value),
        rss_mib: None,
    });
    processes.push(ProcessPrediction {
        process: "redis".into(),
        cpu_s: (c.messages * r.message_us.value
            + c.publishes * r.publish_us.value
            + c.redis_deliveries * r.delivery_us.value
            + c.sessions * r.session_us.value
            + c.socket_seconds * r.socket_us_per_s.value
            + c.run_s * r.idle_us_per_s.value)
            * s_us
            + active(r.arrivals_us_per_s.value, r.sending_us_per_s.value),
        rss_mib: None,
    });
    Ok(Prediction {
        shape: s.clone(),
        counts: c,
        processes,
    })
}

#[cfg(test)]
mod tests;
