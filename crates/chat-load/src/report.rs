//! The end of a run: the scenario's thresholds (the k6 scripts' own, same names and limits) and
//! derived checks evaluated on the aggregate, then summary.txt, report.json (the shape
//! loadtest/lib/summary.js writes) and summary.json (k6's `--summary-export` shape, whose
//! threshold booleans are `true` when the threshold *failed*).

use std::path::Path;

use serde::Serialize;
use serde_json::{Value, json};

use crate::aggregate::{Aggregate, TrendStats};
use crate::args::{Args, Scenario};
use crate::metrics::name;
use crate::plan::Timing;

#[derive(Debug, Serialize)]
pub struct Threshold {
    pub metric: String,
    pub expr: String,
    pub ok: bool,
}

#[derive(Debug, Serialize)]
pub struct Derived {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What the coordinator measured about itself and the gateways.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RunFacts {
    pub duration_s: f64,
    pub workers: usize,
    pub driver_cpu_s: f64,
    pub driver_peak_rss_mb: f64,
    pub peak_sockets: u64,
    /// Σ gateways' RSS before the first socket and at the peak, KiB.
    pub gateway_rss_before_kib: Option<u64>,
    pub gateway_rss_at_peak_kib: Option<u64>,
    pub gateway_sockets_at_peak: u64,
    pub killed_gateway: Option<String>,
    /// storm: the services' counters from the kill to the end of the reconnects.
    pub storm_counters: Option<crate::probe::Counters>,
}

pub struct Report {
    pub thresholds: Vec<Threshold>,
    pub derived: Vec<Derived>,
    pub figures: Value,
    pub text: String,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.thresholds.iter().filter(|t| t.ok).count()
            + self.derived.iter().filter(|d| d.ok).count()
    }

    pub fn failed(&self) -> usize {
        self.thresholds.len() + self.derived.len() - self.passed()
    }
}

/// `(metric, tag filter, expression)`: `p(99)<50`, `count==0`, `count>0`, `count>=N`.
fn check(agg: &Aggregate, metric: &str, filter: &[&str], expr: &str) -> bool {
    if let Some(rest) = expr.strip_prefix("count") {
        let c = if filter.is_empty() {
            agg.count(metric)
        } else {
            agg.count_where(metric, filter)
        };
        let (op, n) = if let Some(n) = rest.strip_prefix("==") {
            ("==", n)
        } else if let Some(n) = rest.strip_prefix(">=") {
            (">=", n)
        } else if let Some(n) = rest.strip_prefix('>') {
            (">", n)
        } else {
            return false;
        };
        let Ok(n) = n.parse::<f64>() else {
            return false;
        };
        return match op {
            "==" => c == n,
            ">=" => c >= n,
            _ => c > n,
        };
    }
    let Some((stat, limit)) = expr.split_once('<') else {
        return false;
    };
    let Ok(limit) = limit.parse::<f64>() else {
        return false;
    };
    // No samples: nothing exceeded the limit (k6 passes such a threshold too).
    agg.trend(metric, filter)
        .and_then(|t| t.get(stat))
        .is_none_or(|v| v < limit)
}

fn fmt_ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn build(args: &Args, timing: &Timing, agg: &Aggregate, facts: &RunFacts) -> Report {
    let vus = args.vus as f64;
    let mut thresholds = Vec::new();
    let mut th = |metric: &str, filter: &[&str], expr: String| {
        let label = if filter.is_empty() {
            metric.to_string()
        } else {
            format!("{metric}{{{}}}", filter.join(","))
        };
        thresholds.push(Threshold {
            ok: check(agg, metric, filter, &expr),
            metric: label,
            expr,
        });
    };
    let mut derived = Vec::new();
    let sessions = agg.count(name::AUTH_OK);
    let exp = agg.count(name::EXPECTED);
    let rec = agg.count(name::RECEIVED);
    let users_authed = agg.count(name::AUTHED_USERS);
    let loss_check = |derived: &mut Vec<Derived>| {
        derived.push(Derived {
            name: "loss (totals)".into(),
            ok: exp > 0.0 && exp == rec,
            detail: format!(
                "received {rec} of {exp} expected deliveries ({} lost)",
                exp - rec
            ),
        });
    };
    let all_authed = |derived: &mut Vec<Derived>| {
        derived.push(Derived {
            name: "all authenticated".into(),
            ok: users_authed >= vus,
            detail: format!("{users_authed} of {vus} users authenticated at least once"),
        });
    };
    match args.scenario {
        Scenario::Churn => {
            th(
                name::SESSION_AUTH,
                &[],
                format!("p(99)<{}", args.session_auth_p99_ms.unwrap_or(50.0)),
            );
            th(
                name::DELIVERY,
                &[],
                format!("p(99)<{}", args.delivery_p99_ms),
            );
            for m in [
                name::SESSIONS_FAILED,
                name::ERRORS,
                name::CLOSED_UNEXPECTED,
                name::LOST,
                name::UNACKED,
                name::REFUSED,
                name::DROPPED_ITERATIONS,
            ] {
                th(m, &[], "count==0".into());
            }
            let failed = agg.count(name::SESSIONS_FAILED);
            let started = sessions + failed;
            derived.push(Derived {
                name: "all sessions authenticated".into(),
                ok: started > 0.0 && failed == 0.0,
                detail: format!("{sessions} of {started} sessions got auth_ok"),
            });
        }
        Scenario::Chat => {
            if args.delivery_p50_ms > 0.0 {
                th(
                    name::DELIVERY,
                    &[],
                    format!("p(50)<{}", args.delivery_p50_ms),
                );
            }
            th(
                name::DELIVERY,
                &[],
                format!("p(95)<{}", args.delivery_p95_ms),
            );
            th(
                name::DELIVERY,
                &[],
                format!("p(99)<{}", args.delivery_p99_ms),
            );
            for m in [
                name::ERRORS,
                name::CLOSED_UNEXPECTED,
                name::LOST,
                name::UNACKED,
                name::REFUSED,
            ] {
                th(m, &[], "count==0".into());
            }
            th(name::RECEIVED, &[], "count>0".into());
            loss_check(&mut derived);
            all_authed(&mut derived);
        }
        Scenario::Connect => {
            th(name::AUTH_OK, &[], format!("count>={vus}"));
            th(name::ERRORS, &[], "count==0".into());
            th(name::CLOSED_UNEXPECTED, &[], "count==0".into());
            th(name::AUTH, &[], format!("p(95)<{}", args.auth_p95_ms));
            th(name::AUTH, &[], format!("p(99)<{}", args.auth_p99_ms));
            th(
                name::SESSION_AUTH,
                &[],
                format!("p(99)<{}", args.session_auth_p99_ms.unwrap_or(100.0)),
            );
            all_authed(&mut derived);
        }
        Scenario::Storm => {
            th(
                name::DELIVERY,
                &["client=stayed", "via=live"],
                format!("p(99)<{}", args.delivery_p99_ms),
            );
            th(name::RESUME, &[], format!("p(99)<{}", args.resume_p99_ms));
            for m in [name::ERRORS, name::LOST, name::UNACKED] {
                th(m, &[], "count==0".into());
            }
            th(name::RECEIVED, &[], "count>0".into());
            loss_check(&mut derived);
            all_authed(&mut derived);
            let dropped = agg.count(name::DROPPED);
            let resumed = agg.trend(name::RESUME, &[]).map_or(0, |t| t.n) as f64;
            derived.push(Derived {
                name: "the kill dropped clients and every one resumed".into(),
                ok: dropped > 0.0 && resumed >= dropped,
                detail: format!("{dropped} sockets dropped, {resumed} resumed to `synced`"),
            });
        }
    }
    if args.rss_per_socket_max_b > 0.0 {
        let per = rss_per_socket(facts);
        derived.push(Derived {
            name: "gateway memory per socket".into(),
            ok: per.is_some_and(|b| b <= args.rss_per_socket_max_b),
            detail: match per {
                Some(b) => format!("{b:.0} B per socket (limit {})", args.rss_per_socket_max_b),
                None => "not measured: GATEWAY_PIDS not given".into(),
            },
        });
    }

    let trend = |n: &str, f: &[&str]| agg.trend(n, f);
    let per_session = if sessions > 0.0 {
        facts.driver_cpu_s * 1e3 / sessions
    } else {
        0.0
    };
    let figures = json!({
        "vus": args.vus,
        "driver": "chat-load",
        "workers": facts.workers,
        "target_rate_per_s": (args.scenario == Scenario::Churn).then_some(timing.rate),
        "sessions_authenticated": sessions,
        "users_authenticated": users_authed,
        "sessions_failed": agg.count(name::SESSIONS_FAILED),
        "sessions_completed": agg.count(name::SESSIONS_COMPLETED),
        "dropped_iterations": agg.count(name::DROPPED_ITERATIONS),
        "mean_sessions_per_s": if facts.duration_s > 0.0 { sessions / facts.duration_s } else { 0.0 },
        "peak_sockets": facts.peak_sockets,
        "session_auth_ms": trend(name::SESSION_AUTH, &[]),
        "auth_ms": trend(name::AUTH, &[]),
        "chat_delivery_ms": trend(name::DELIVERY, &[]),
        "chat_delivery_live_ms": trend(name::DELIVERY, &["via=live"]),
        "chat_delivery_stayed_live_ms": (args.scenario == Scenario::Storm).then(|| trend(name::DELIVERY, &["client=stayed", "via=live"])),
        "send_ack_ms": trend(name::SEND_ACK, &[]),
        "resume_ms": trend(name::RESUME, &[]),
        "resume_reconnect_ms": trend(name::RESUME_RECONNECT, &[]),
        "msgs_sent": agg.count(name::SENT),
        "msgs_acked": agg.count(name::ACKED),
        // churn counts the partner's messages it happened to see, with no expectation to meet.
        "msgs_expected": (args.scenario != Scenario::Churn).then_some(exp),
        "msgs_received": rec,
        "msgs_late": agg.count(name::LATE),
        "msgs_lost_totals": (args.scenario != Scenario::Churn).then_some(exp - rec),
        "msgs_lost_seq_gaps": agg.count(name::LOST),
        "msgs_unacked": agg.count(name::UNACKED),
        "msgs_duplicate": agg.count(name::DUPLICATE),
        "sends_refused": agg.count(name::REFUSED),
        "final_replays_refused": agg.count(name::REPLAYS_REFUSED),
        "ws_resumed": agg.count(name::RESUMED),
        "ws_dropped": agg.count(name::DROPPED),
        "ws_errors": agg.count(name::ERRORS),
        "closed_unexpected": agg.count(name::CLOSED_UNEXPECTED),
        "killed_gateway": facts.killed_gateway,
        "storm_sync_requests": facts.storm_counters.as_ref().map(|c| c.sync_requests),
        "storm_replays_by_source": facts.storm_counters.as_ref().map(|c| {
            c.replays.iter().map(|(s, n)| (s.clone(), json!(n))).collect::<serde_json::Map<_, _>>()
        }),
        "gateway_rss_per_socket_bytes": rss_per_socket(facts),
        "driver_cpu_s": facts.driver_cpu_s,
        "driver_cpu_ms_per_session": per_session,
        "driver_peak_rss_mb": facts.driver_peak_rss_mb,
    });
    let mut figures = figures;
    // Outside the macro above, which is at its recursion limit.
    figures["resumes_refused"] = json!(agg.count(name::RESUMES_REFUSED));
    figures["auth_refused"] = json!(agg.count(name::AUTH_REFUSED));
    figures["storm_gateway_delivery_p99_ms"] = json!(
        facts
            .storm_counters
            .as_ref()
            .and_then(|c| c.delivery_quantile_ms(0.99))
    );

    // The text summary, in summary.js's layout.
    let mut lines = vec![format!(
        "\n== {} (chat-load): {:.0} s, VUs max {}, {} worker(s) ==",
        args.scenario.name(),
        facts.duration_s,
        facts.peak_sockets,
        facts.workers
    )];
    let mut names: Vec<&str> = agg.counters.keys().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    for n in names {
        let c = agg.count(n);
        lines.push(format!(
            "  {n:<24} {c} ({:.1}/s)",
            if facts.duration_s > 0.0 {
                c / facts.duration_s
            } else {
                0.0
            }
        ));
    }
    for n in [
        name::SESSION_AUTH,
        name::AUTH,
        name::DELIVERY,
        name::SEND_ACK,
        name::RESUME,
        name::RESUME_RECONNECT,
    ] {
        if let Some(t) = agg.trend(n, &[]) {
            lines.push(format!("  {n:<24} {}", describe(&t)));
        }
    }
    if args.scenario == Scenario::Storm
        && let Some(t) = agg.trend(name::DELIVERY, &["client=stayed", "via=live"])
    {
        lines.push(format!(
            "  {:<24} {}",
            "delivery, stayed, live",
            describe(&t)
        ));
    }
    if let Some(c) = &facts.storm_counters {
        let dropped = agg.count(name::DROPPED);
        let replays: Vec<String> = c.replays.iter().map(|(s, n)| format!("{s} {n}")).collect();
        lines.push(format!(
            "  {:<24} {} chat-api sync requests ({:.2} per dropped socket); gateway replays: {}",
            "storm resumes",
            c.sync_requests,
            if dropped > 0.0 {
                c.sync_requests / dropped
            } else {
                0.0
            },
            if replays.is_empty() {
                "not counted".to_string()
            } else {
                replays.join(", ")
            },
        ));
        let ms = |q| {
            c.delivery_quantile_ms(q)
                .map_or("-".to_string(), |v| format!("{v:.1}"))
        };
        lines.push(format!(
            "  {:<24} {} deliveries from the kill to the end of the reconnects, publish → socket write p50 {} / p99 {} ms (the surviving gateways' chat_delivery_seconds: the services without the driver)",
            "storm, gateways' view",
            c.delivery_count(),
            ms(0.5),
            ms(0.99),
        ));
    }
    for (n, t, v) in agg.tagged() {
        if [
            name::ERRORS,
            name::CLOSED_UNEXPECTED,
            name::REFUSED,
            name::LOST,
        ]
        .contains(&n)
        {
            lines.push(format!("  {n}{{{t}}} {v}"));
        }
    }
    lines.push(format!(
        "  driver: {:.2} CPU-s over {} worker(s) + coordinator, {:.3} ms a session; peak RSS {:.0} MB",
        facts.driver_cpu_s, facts.workers, per_session, facts.driver_peak_rss_mb
    ));
    if let Some(b) = rss_per_socket(facts) {
        lines.push(format!(
            "  gateways: {b:.0} B of RSS per socket with {} sockets open, idle (before the sends; connect: at the end of the hold)",
            facts.gateway_sockets_at_peak
        ));
    }
    lines.push("thresholds:".into());
    for t in &thresholds {
        lines.push(format!(
            "  {} {}: {}",
            if t.ok { "PASS" } else { "FAIL" },
            t.metric,
            t.expr
        ));
    }
    for d in &derived {
        lines.push(format!(
            "  {} {}: {}",
            if d.ok { "PASS" } else { "FAIL" },
            d.name,
            d.detail
        ));
    }
    let mut report = Report {
        thresholds,
        derived,
        figures,
        text: String::new(),
    };
    lines.push(format!(
        "{}: {} passed, {} failed\n",
        args.scenario.name(),
        report.passed(),
        report.failed()
    ));
    report.text = lines.join("\n");
    report
}

fn describe(t: &TrendStats) -> String {
    format!(
        "avg={} p50={} p90={} p95={} p99={} max={} n={}",
        fmt_ms(t.avg),
        fmt_ms(t.p50),
        fmt_ms(t.p90),
        fmt_ms(t.p95),
        fmt_ms(t.p99),
        fmt_ms(t.max),
        t.n
    )
}

fn rss_per_socket(f: &RunFacts) -> Option<f64> {
    let (b, p) = (f.gateway_rss_before_kib?, f.gateway_rss_at_peak_kib?);
    (f.gateway_sockets_at_peak > 0)
        .then(|| (p.saturating_sub(b) as f64 * 1024.0) / f.gateway_sockets_at_peak as f64)
}

/// summary.txt, report.json and summary.json in `dir`.
pub fn write(
    dir: &Path,
    args: &Args,
    agg: &Aggregate,
    report: &Report,
    facts: &RunFacts,
) -> anyhow::Result<()> {
    std::fs::write(dir.join("summary.txt"), &report.text)?;
    let r = json!({
        "script": format!("{} (chat-load)", args.scenario.name()),
        "vus": args.vus,
        "duration_s": facts.duration_s,
        "passed": report.passed(),
        "failed": report.failed(),
        "thresholds": report.thresholds,
        "derived_checks": report.derived,
        "figures": report.figures,
    });
    std::fs::write(dir.join("report.json"), serde_json::to_string_pretty(&r)?)?;
    // k6's --summary-export: counters {count, rate}, trends {avg, min, med, max, p(90), ...}.
    let mut metrics = serde_json::Map::new();
    let mut names: Vec<&str> = agg.counters.keys().map(|(n, _)| n.as_str()).collect();
    names.dedup();
    for n in names {
        let c = agg.count(n);
        metrics.insert(n.to_string(), json!({"count": c, "rate": if facts.duration_s > 0.0 { c / facts.duration_s } else { 0.0 }}));
    }
    for n in [
        name::SESSION_AUTH,
        name::AUTH,
        name::DELIVERY,
        name::SEND_ACK,
        name::RESUME,
        name::RESUME_RECONNECT,
    ] {
        if let Some(t) = agg.trend(n, &[]) {
            metrics.insert(
                n.to_string(),
                json!({"avg": t.avg, "min": t.min, "med": t.p50, "max": t.max, "p(90)": t.p90, "p(95)": t.p95, "p(99)": t.p99}),
            );
        }
    }
    for t in &report.thresholds {
        let m = metrics.entry(t.metric.clone()).or_insert_with(|| json!({}));
        if let Some(obj) = m.as_object_mut() {
            let th = obj.entry("thresholds").or_insert_with(|| json!({}));
            th[t.expr.as_str()] = json!(!t.ok);
        }
    }
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&json!({"driver": "chat-load", "metrics": metrics}))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
