//! The coordinator's view of the run: the workers' ticks summed into counters and merged into
//! latency histograms, and every sample written to `raw/metrics.json` as k6's `--out json`
//! Points, so loadtest/lib/plot.py draws a chat-load run exactly like a k6 run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::metrics::Tick;

/// Latency histograms hold microseconds from 1 µs to an hour at 3 significant digits.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static bounds are valid")
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct TrendStats {
    pub avg: f64,
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
    pub n: u64,
}

impl TrendStats {
    fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let ms = |us: u64| us as f64 / 1e3;
        Some(TrendStats {
            avg: h.mean() / 1e3,
            min: ms(h.min()),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p95: ms(h.value_at_quantile(0.95)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            n: h.len(),
        })
    }

    /// A quantile by its k6 name: `med`, `p(99)`, `avg`, `max`, ...
    pub fn get(&self, stat: &str) -> Option<f64> {
        Some(match stat {
            "avg" => self.avg,
            "min" => self.min,
            "med" | "p(50)" => self.p50,
            "p(90)" => self.p90,
            "p(95)" => self.p95,
            "p(99)" => self.p99,
            "max" => self.max,
            _ => return None,
        })
    }
}

#[derive(Default)]
pub struct Aggregate {
    pub counters: BTreeMap<(String, String), f64>,
    hists: BTreeMap<(String, String), Histogram<u64>>,
    /// This second's samples, for the progress line.
    pub second: BTreeMap<String, Histogram<u64>>,
    points: Option<BufWriter<File>>,
    pub first_t: Option<f64>,
    pub last_t: f64,
}

impl Aggregate {
    /// With `points`, every sample also goes to that file as a k6 JSON Point.
    pub fn new(points: Option<&Path>) -> anyhow::Result<Self> {
        let points = match points {
            Some(p) => Some(BufWriter::with_capacity(1 << 20, File::create(p)?)),
            None => None,
        };
        Ok(Aggregate {
            points,
            ..Aggregate::default()
        })
    }

    pub fn absorb(&mut self, tick: &Tick) {
        self.first_t = Some(self.first_t.map_or(tick.t, |f| f.min(tick.t)));
        self.last_t = self.last_t.max(tick.t);
        // Samples happened during the second before the tick.
        let time = k6_time(tick.t - 0.5);
        for (name, tags, v) in &tick.counters {
            *self
                .counters
                .entry((name.clone(), tags.clone()))
                .or_default() += v;
            self.point(name, tags, &time, *v);
        }
        for (name, tags, values) in &tick.samples {
            let h = self
                .hists
                .entry((name.clone(), tags.clone()))
                .or_insert_with(new_histogram);
            let s = self
                .second
                .entry(name.clone())
                .or_insert_with(new_histogram);
            for v in values {
                let us = (f64::from(*v) * 1e3).round().max(1.0) as u64;
                h.saturating_record(us);
                s.saturating_record(us);
            }
            for v in values {
                self.point(name, tags, &time, f64::from(*v));
            }
        }
    }

    /// k6's `vus` metric: the sockets open across the workers.
    pub fn vus(&mut self, t: f64, vus: u64) {
        let time = k6_time(t);
        self.point("vus", "", &time, vus as f64);
    }

    /// One k6 JSON Point. Metric names and tags are the driver's own (`[a-z0-9_=,]`), so the line
    /// is formatted directly: at churn's rates this file gets thousands of lines a second.
    fn point(&mut self, metric: &str, tags: &str, time: &str, value: f64) {
        let Some(out) = self.points.as_mut() else {
            return;
        };
        let mut tag_json = String::new();
        for (k, v) in tags.split(',').filter_map(|kv| kv.split_once('=')) {
            if !tag_json.is_empty() {
                tag_json.push(',');
            }
            tag_json.push_str(&format!("\"{k}\":\"{v}\""));
        }
        let _ = writeln!(
            out,
            r#"{{"metric":"{metric}","type":"Point","data":{{"time":"{time}","value":{value},"tags":{{{tag_json}}}}}}}"#
        );
    }

    pub fn finish(&mut self) -> std::io::Result<()> {
        match self.points.as_mut() {
            Some(out) => out.flush(),
            None => Ok(()),
        }
    }

    /// A counter's total over every tag set.
    pub fn count(&self, name: &str) -> f64 {
        self.counters
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0
    }

    /// A counter's total over the tag sets that contain every `k=v` of `filter`.
    pub fn count_where(&self, name: &str, filter: &[&str]) -> f64 {
        self.counters
            .iter()
            .filter(|((n, t), _)| n == name && has_tags(t, filter))
            .map(|(_, v)| v)
            .sum::<f64>()
            + 0.0
    }

    /// A trend over the tag sets that contain every `k=v` of `filter` (all with an empty one).
    pub fn trend(&self, name: &str, filter: &[&str]) -> Option<TrendStats> {
        let mut merged = new_histogram();
        for ((n, t), h) in &self.hists {
            if n == name && has_tags(t, filter) {
                merged.add(h).ok()?;
            }
        }
        TrendStats::of(&merged)
    }

    /// This second's trend (then forgotten).
    pub fn take_second(&mut self, name: &str) -> Option<TrendStats> {
        self.second.remove(name).and_then(|h| TrendStats::of(&h))
    }

    /// Counter names with tags that had anything, for the summary (errors by code, ...).
    pub fn tagged(&self) -> impl Iterator<Item = (&str, &str, f64)> {
        self.counters
            .iter()
            .filter(|((_, t), v)| !t.is_empty() && **v != 0.0)
            .map(|((n, t), v)| (n.as_str(), t.as_str(), *v))
    }
}

fn has_tags(tags: &str, filter: &[&str]) -> bool {
    filter.iter().all(|f| tags.split(',').any(|t| t == *f))
}

/// "2026-12-03T10:00:00.123456+00:00", as k6 writes times.
pub fn k6_time(unix_s: f64) -> String {
    let micros = (unix_s * 1e6) as i64;
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

#[cfg(test)]
mod tests;
