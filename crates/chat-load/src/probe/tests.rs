//! Reading counters from Prometheus text.

use super::*;

const PAGE: &str = r#"# TYPE chat_api_http_requests_total counter
chat_api_http_requests_total{method="GET",route="/v1/sync",status="200"} 120
chat_api_http_requests_total{method="GET",route="/v1/sync",status="503"} 3
chat_api_http_requests_total{method="POST",route="/v1/chats/{chat_id}/messages",status="201"} 900
chat_api_http_requests_total_extra{route="/v1/sync"} 5
chat_gateway_replays_total{source="log"} 40
chat_gateway_replays_total{source="api"} 2
"#;

#[test]
fn sums_the_series_that_match_every_label() {
    assert_eq!(
        sum(
            PAGE,
            "chat_api_http_requests_total",
            &[("route", "/v1/sync")]
        ),
        123.0
    );
    assert_eq!(sum(PAGE, "chat_api_http_requests_total", &[]), 1023.0);
    assert_eq!(sum(PAGE, "chat_missing_total", &[]), 0.0);
}

#[test]
fn groups_by_one_label() {
    assert_eq!(
        by_label(PAGE, "chat_gateway_replays_total", "source"),
        vec![("log".to_string(), 40.0), ("api".to_string(), 2.0)]
    );
}

#[test]
fn differences_never_go_negative_and_keep_new_sources() {
    let before = Counters {
        sync_requests: 10.0,
        replays: vec![("api".into(), 5.0)],
        ..Counters::default()
    };
    let after = Counters {
        sync_requests: 25.0,
        replays: vec![("api".into(), 4.0), ("log".into(), 7.0)],
        ..Counters::default()
    };
    let d = after.since(&before);
    assert_eq!(d.sync_requests, 15.0);
    assert_eq!(d.replays, vec![("api".into(), 0.0), ("log".into(), 7.0)]);
}

#[test]
fn a_gateway_metrics_page_from_its_websocket_url() {
    assert_eq!(
        metrics_url("ws://127.0.0.1:8081/ws"),
        "http://127.0.0.1:8081/metrics"
    );
    assert_eq!(metrics_url("ws://gw:9000"), "http://gw:9000/metrics");
}

fn buckets(counts: &[(f64, f64)]) -> Vec<(f64, f64)> {
    counts.to_vec()
}

#[test]
fn delivery_quantiles_come_from_the_surviving_gateways_buckets_since_the_kill() {
    let inf = f64::INFINITY;
    let before = Counters {
        deliveries: vec![
            (
                "a".into(),
                buckets(&[(0.01, 100.0), (0.1, 100.0), (inf, 100.0)]),
            ),
            (
                "killed".into(),
                buckets(&[(0.01, 50.0), (0.1, 50.0), (inf, 50.0)]),
            ),
        ],
        ..Counters::default()
    };
    // 100 more on "a": 90 within 10 ms, 9 within 100 ms, 1 beyond.
    let after = Counters {
        deliveries: vec![(
            "a".into(),
            buckets(&[(0.01, 190.0), (0.1, 199.0), (inf, 200.0)]),
        )],
        ..Counters::default()
    };
    let d = after.since(&before);
    assert_eq!(
        d.delivery_count(),
        100.0,
        "the killed gateway's buckets are left out"
    );
    let p50 = d.delivery_quantile_ms(0.5).expect("p50");
    assert!((p50 - 50.0 / 90.0 * 10.0).abs() < 1e-9, "{p50}");
    let p95 = d.delivery_quantile_ms(0.95).expect("p95");
    assert!((p95 - (10.0 + 90.0 * 5.0 / 9.0)).abs() < 1e-9, "{p95}");
    assert_eq!(
        d.delivery_quantile_ms(0.999),
        Some(100.0),
        "past the last finite bucket: its bound"
    );
    assert_eq!(Counters::default().delivery_quantile_ms(0.99), None);
    assert_eq!(d.delivery_share_within_ms(10.0), Some(0.9));
    assert_eq!(d.delivery_share_within_ms(100.0), Some(0.99));
    assert_eq!(
        d.delivery_share_within_ms(5.0),
        Some(0.0),
        "below the first bucket"
    );
    assert_eq!(Counters::default().delivery_share_within_ms(50.0), None);
}

#[test]
fn reads_the_delivery_buckets_of_a_page() {
    let page = "chat_delivery_seconds_bucket{le=\"0.005\"} 3\nchat_delivery_seconds_bucket{le=\"+Inf\"} 4\nchat_delivery_seconds_sum 0.1\n";
    let buckets: Vec<(Vec<(String, String)>, f64)> =
        series(page, "chat_delivery_seconds_bucket").collect();
    assert_eq!(buckets.len(), 2);
    assert_eq!(buckets[0].1, 3.0);
    assert_eq!(buckets[1].0, vec![("le".to_string(), "+Inf".to_string())]);
}
