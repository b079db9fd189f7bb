//! Plans and run predictions as text for a person (the JSON form is serde's).

use std::fmt::Write;

use crate::local_run::Prediction;
use crate::plan::{Plan, Routing};
use crate::units::Units;

fn n(v: f64) -> String {
    // Thousands separated, no decimals above 100; two significant decimals below.
    if v.abs() >= 100.0 {
        let s = format!("{:.0}", v.round());
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn plan_text(p: &Plan) -> String {
    let w = &p.workload;
    let l = &p.load;
    let mut s = String::new();
    let routing = match w.routing {
        Routing::PerUser => "per-user channels",
        Routing::PerChat => "per-chat channels for groups",
    };
    let _ = writeln!(
        s,
        "workload: {} users, {:.0}% online x {} devices = {} sockets; {} msg/online user/h; \
         {:.0}% to groups of {}; {routing}",
        n(w.users),
        w.online * 100.0,
        n(w.devices),
        n(l.sockets),
        n(w.msgs_per_user_hour),
        w.group_share * 100.0,
        n(w.group_size)
    );
    let _ = writeln!(
        s,
        "load/s:   {} messages, {} deliveries, {} publishes, {} Redis->gateway, {} sessions, {} push jobs, {} MySQL rows",
        n(l.messages_per_s),
        n(l.deliveries_per_s),
        n(l.publishes_per_s),
        n(l.redis_deliveries_per_s),
        n(l.sessions_per_s),
        n(l.push_jobs_per_s),
        n(l.mysql_rows_per_s)
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "tier          cores  replicas (bound by)     HPA min-max  cpu req  mem req/limit"
    );
    for (name, t) in [
        ("chat-gateway", &p.gateway),
        ("chat-api", &p.api),
        ("chat-worker", &p.worker),
    ] {
        let _ = writeln!(
            s,
            "{name:<12} {:>6}  {:>4} ({:<15}) {:>5}-{:<5}  {:>6}m  {}/{} MiB",
            n(t.cores),
            t.replicas,
            t.bound_by,
            t.hpa_min,
            t.hpa_max,
            t.cpu_request_m,
            t.memory_request_mib,
            t.memory_limit_mib
        );
    }
    let f = &p.gateway_facts;
    let _ = writeln!(
        s,
        "gateway pod:  {} sockets, RSS {} MiB ({} MiB with a zone lost)",
        n(f.sockets_per_pod),
        n(f.rss_per_pod_mib),
        n(f.rss_per_pod_zone_loss_mib)
    );
    let r = &p.redis;
    let _ = writeln!(
        s,
        "redis:        {} cores -> {} ({} master(s), {} nodes); per shard {} publishes/s, {} deliveries/s",
        n(r.cores),
        r.mode,
        r.masters,
        r.nodes,
        n(r.publishes_per_s_per_shard),
        n(r.deliveries_per_s_per_shard)
    );
    let m = &p.mysql;
    let _ = writeln!(
        s,
        "mysql:        {} persisted msg/s, {} rows/s, {} cores -> {} primary shard(s); pool {}/api pod, {} connections",
        n(m.messages_per_s),
        n(m.rows_per_s),
        n(m.cores),
        m.shards,
        m.pool_per_api_pod,
        m.connections
    );
    let _ = writeln!(
        s,
        "egress:       gateways->clients {} Mbit/s, Redis->gateways {} Mbit/s",
        n(p.egress.gateways_to_clients_mbit_s),
        n(p.egress.redis_to_gateways_mbit_s)
    );
    let st = &p.storms;
    let _ = writeln!(
        s,
        "storms:       rollout {} sessions/s ({} gateway + {} api cores); zone loss {} sessions/s ({} gateway + {} api + {} MySQL cores)",
        n(st.rollout_sessions_per_s),
        n(st.rollout_gateway_cores),
        n(st.rollout_api_cores),
        n(st.zone_loss_sessions_per_s),
        n(st.zone_loss_gateway_cores),
        n(st.zone_loss_api_cores),
        n(st.zone_loss_mysql_cores)
    );
    let _ = writeln!(
        s,
        "limits (load / capacity of one at the target utilization):"
    );
    for lim in &p.limits {
        let mark = if lim.ratio > 1.0 { "  <- over" } else { "" };
        let _ = writeln!(
            s,
            "  {:<38} {:>6}{mark}   ({})",
            lim.name,
            n(lim.ratio),
            lim.remedy
        );
    }
    match p.limits.iter().find(|l| l.ratio > 1.0) {
        Some(l) => {
            let _ = writeln!(s, "first bottleneck: {}", l.name);
        }
        None => {
            let _ = writeln!(
                s,
                "first bottleneck: none at this size (fullest: {})",
                p.limits[0].name
            );
        }
    }
    s
}

pub fn prediction_text(p: &Prediction) -> String {
    let c = &p.counts;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "counts: {} sessions, {} socket-seconds, {} messages, {} deliveries, {} publishes, {} Redis->gateway, {} final replays",
        n(c.sessions),
        n(c.socket_seconds),
        n(c.messages),
        n(c.deliveries),
        n(c.publishes),
        n(c.redis_deliveries),
        n(c.resumes)
    );
    let _ = writeln!(s, "{:<8} {:>10} {:>10}", "process", "CPU-s", "RSS MiB");
    for pp in &p.processes {
        let rss = pp.rss_mib.map_or("-".to_string(), n);
        let _ = writeln!(s, "{:<8} {:>10} {:>10}", pp.process, n(pp.cpu_s), rss);
    }
    s
}

pub fn units_text(u: &Units) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "machine: {} (floor {} µs a write: {})",
        u.machine.description, u.machine.floor_write_us, u.machine.floor_command
    );
    for (name, unit) in u.all() {
        let _ = writeln!(
            s,
            "{name:<28} {:>10} {:<28} {} [{}; {}]",
            n(unit.value),
            unit.unit,
            unit.command,
            unit.date,
            unit.floor
        );
    }
    s
}

#[cfg(test)]
mod tests;
