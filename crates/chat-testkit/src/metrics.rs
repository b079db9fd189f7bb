//! Reading a process's `/metrics` page (Prometheus text) in tests.

/// The `/metrics` page of the process at `base` (`http://127.0.0.1:PORT`).
pub async fn metrics_page(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("GET {base}/metrics: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("reading {base}/metrics: {e}"))
}

/// The value of `series` on a `/metrics` page: a name with its labels exactly as the page prints
/// them (`chat_sync_total{source="log"}`), or a bare name. `None` when the page does not have it.
pub fn metric_value(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == series).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::metric_value;

    const PAGE: &str = "# TYPE chat_sync_total counter\n\
        chat_sync_total{source=\"log\"} 3\n\
        chat_sync_total{source=\"database\"} 12\n\
        chat_worker_push_queue_length 0\n";

    #[test]
    fn a_series_is_found_by_its_whole_key() {
        assert_eq!(
            metric_value(PAGE, "chat_sync_total{source=\"database\"}"),
            Some(12.0)
        );
        assert_eq!(
            metric_value(PAGE, "chat_worker_push_queue_length"),
            Some(0.0)
        );
        assert_eq!(
            metric_value(PAGE, "chat_sync_total"),
            None,
            "not a prefix match"
        );
        assert_eq!(metric_value(PAGE, "chat_missing_total"), None);
    }
}
