//! The services' own counters around a storm: how many sync requests chat-api served, where
//! the gateways took their replays from (`chat_gateway_replays_total{source}`) and how long the
//! gateways took to deliver (`chat_delivery_seconds`: publish → written to the socket, the
//! services' share of a delivery without the driver's) between a gateway's kill and the end of
//! the reconnects, read from their `/metrics` pages with `curl` (as the kill
//! itself is a `kill` command: the coordinator is a plain thread, and one read at each end does not
//! need an HTTP client in the driver).

use std::process::Command;

/// The counters read from every service at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Counters {
    /// chat-api: `GET /v1/sync` requests served, any status.
    pub sync_requests: f64,
    /// The gateways' replays by source (`log`, `api`), in first-seen order.
    pub replays: Vec<(String, f64)>,
    /// Each reachable gateway's `chat_delivery_seconds` buckets: (metrics URL, [(le, count)]).
    pub deliveries: Vec<(String, Vec<(f64, f64)>)>,
}

impl Counters {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &Counters) -> Counters {
        let replays = self
            .replays
            .iter()
            .map(|(source, n)| {
                let before = earlier
                    .replays
                    .iter()
                    .find(|(s, _)| s == source)
                    .map_or(0.0, |(_, b)| *b);
                (source.clone(), (n - before).max(0.0))
            })
            .collect();
        // Only gateways read both times: the killed one's buckets are gone after the kill.
        let deliveries = self
            .deliveries
            .iter()
            .filter_map(|(url, buckets)| {
                let (_, before) = earlier.deliveries.iter().find(|(u, _)| u == url)?;
                let diff = buckets
                    .iter()
                    .map(|&(le, n)| {
                        let b = before
                            .iter()
                            .find(|(l, _)| *l == le)
                            .map_or(0.0, |(_, b)| *b);
                        (le, (n - b).max(0.0))
                    })
                    .collect();
                Some((url.clone(), diff))
            })
            .collect();
        Counters {
            sync_requests: (self.sync_requests - earlier.sync_requests).max(0.0),
            replays,
            deliveries,
        }
    }

    /// Deliveries counted by the gateways' histograms.
    pub fn delivery_count(&self) -> f64 {
        self.merged_deliveries().last().map_or(0.0, |(_, n)| *n)
    }

    /// The share of the gateways' deliveries made within `ms` (exact when `ms` is one of the
    /// histogram's bucket bounds); `None` with no deliveries.
    pub fn delivery_share_within_ms(&self, ms: f64) -> Option<f64> {
        let buckets = self.merged_deliveries();
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let within = buckets
            .iter()
            .take_while(|(le, _)| *le * 1000.0 <= ms * (1.0 + 1e-9))
            .last()
            .map_or(0.0, |(_, n)| *n);
        Some(within / total)
    }

    /// The `q` quantile of the gateways' delivery time in ms, interpolated within its bucket as
    /// Prometheus's `histogram_quantile` does; `None` with no deliveries.
    pub fn delivery_quantile_ms(&self, q: f64) -> Option<f64> {
        let buckets = self.merged_deliveries();
        let total = buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q * total;
        let mut lower = (0.0, 0.0);
        for &(le, cumulative) in &buckets {
            if cumulative >= rank {
                if le.is_infinite() {
                    return Some(lower.0 * 1000.0);
                }
                let share = if cumulative > lower.1 {
                    (rank - lower.1) / (cumulative - lower.1)
                } else {
                    1.0
                };
                return Some((lower.0 + (le - lower.0) * share) * 1000.0);
            }
            lower = (le, cumulative);
        }
        None
    }

    /// Every gateway's cumulative buckets added up, by `le`.
    fn merged_deliveries(&self) -> Vec<(f64, f64)> {
        let mut merged: Vec<(f64, f64)> = Vec::new();
        for (_, buckets) in &self.deliveries {
            for &(le, n) in buckets {
                match merged.iter_mut().find(|(l, _)| *l == le) {
                    Some((_, total)) => *total += n,
                    None => merged.push((le, n)),
                }
            }
        }
        merged.sort_by(|a, b| a.0.total_cmp(&b.0));
        merged
    }
}

/// Reads the pages of chat-api's replicas (`api_urls`: comma-separated, when set) and of every
/// reachable gateway.
pub fn read(api_urls: Option<&str>, ws_urls: &[String]) -> Counters {
    let mut counters = Counters::default();
    let replicas = api_urls.into_iter().flat_map(|urls| urls.split(','));
    for url in replicas.map(str::trim).filter(|url| !url.is_empty()) {
        if let Some(page) = page(&format!("{}/metrics", url.trim_end_matches('/'))) {
            counters.sync_requests += sum(
                &page,
                "chat_api_http_requests_total",
                &[("route", "/v1/sync")],
            );
        }
    }
    for ws in ws_urls {
        let url = metrics_url(ws);
        let Some(page) = page(&url) else {
            continue; // the killed one
        };
        let buckets: Vec<(f64, f64)> = series(&page, "chat_delivery_seconds_bucket")
            .filter_map(|(labels, n)| {
                let (_, le) = labels.iter().find(|(k, _)| k == "le")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, n))
            })
            .collect();
        counters.deliveries.push((url, buckets));
        for (source, n) in by_label(&page, "chat_gateway_replays_total", "source") {
            match counters.replays.iter_mut().find(|(s, _)| *s == source) {
                Some((_, total)) => *total += n,
                None => counters.replays.push((source, n)),
            }
        }
    }
    counters
}

/// A gateway's metrics page from its WebSocket URL (`ws://host:port/ws` → `http://host:port/metrics`).
pub fn metrics_url(ws_url: &str) -> String {
    let rest = ws_url
        .strip_prefix("ws://")
        .or_else(|| ws_url.strip_prefix("wss://"))
        .unwrap_or(ws_url);
    let host = rest.split('/').next().unwrap_or(rest);
    format!("http://{host}/metrics")
}

fn page(url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["-fs", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The sum of a counter's series whose labels include every `(name, value)` in `labels`.
pub fn sum(page: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    series(page, metric)
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// A counter's totals by the value of one label.
pub fn by_label(page: &str, metric: &str, label: &str) -> Vec<(String, f64)> {
    let mut totals: Vec<(String, f64)> = Vec::new();
    for (labels, v) in series(page, metric) {
        let Some((_, key)) = labels.iter().find(|(k, _)| k == label) else {
            continue;
        };
        match totals.iter_mut().find(|(k, _)| k == key) {
            Some((_, t)) => *t += v,
            None => totals.push((key.clone(), v)),
        }
    }
    totals
}

/// The samples of one metric in Prometheus text: each series' labels and value.
fn series<'a>(
    page: &'a str,
    metric: &'a str,
) -> impl Iterator<Item = (Vec<(String, String)>, f64)> + 'a {
    page.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => {
                let (labels, value) = inner.rsplit_once('}')?;
                (parse_labels(labels), value)
            }
            None if rest.starts_with(' ') => (Vec::new(), rest),
            None => return None, // another metric with this one's name as a prefix
        };
        let value = value.split_whitespace().next()?.parse().ok()?;
        Some((labels, value))
    })
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
