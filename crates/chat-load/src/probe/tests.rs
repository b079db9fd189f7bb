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
    };
    let after = Counters {
        sync_requests: 25.0,
        replays: vec![("api".into(), 4.0), ("log".into(), 7.0)],
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
