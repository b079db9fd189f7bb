use super::*;

fn tick(counters: &[(&str, &str, f64)], samples: &[(&str, &str, &[f32])]) -> Tick {
    Tick {
        t: 1_765_000_000.0,
        counters: counters
            .iter()
            .map(|(n, t, v)| (n.to_string(), t.to_string(), *v))
            .collect(),
        samples: samples
            .iter()
            .map(|(n, t, v)| (n.to_string(), t.to_string(), v.to_vec()))
            .collect(),
        ..Tick::default()
    }
}

#[test]
fn workers_ticks_add_up_and_tags_filter() {
    let mut agg = Aggregate::new(None).expect("agg");
    agg.absorb(&tick(
        &[("ws_errors", "kind=socket,code=reset", 2.0)],
        &[("chat_delivery_ms", "chat=pair,via=live", &[1.0, 2.0])],
    ));
    agg.absorb(&tick(
        &[("ws_errors", "kind=auth_timeout", 1.0)],
        &[("chat_delivery_ms", "chat=group,via=live", &[3.0, 400.0])],
    ));
    assert_eq!(agg.count("ws_errors"), 3.0);
    assert_eq!(agg.count_where("ws_errors", &["kind=socket"]), 2.0);
    let all = agg.trend("chat_delivery_ms", &[]).expect("trend");
    assert_eq!(all.n, 4);
    assert!((all.max - 400.0).abs() < 0.5, "{}", all.max);
    let pair = agg.trend("chat_delivery_ms", &["chat=pair"]).expect("pair");
    assert_eq!(pair.n, 2);
    assert!((pair.p50 - 1.0).abs() < 0.01);
    assert!(agg.trend("chat_delivery_ms", &["chat=none"]).is_none());
}

#[test]
fn points_are_k6_json_lines_that_plot_py_reads() {
    let path = std::env::temp_dir().join(format!("chat-load-points-{}.json", std::process::id()));
    let mut agg = Aggregate::new(Some(&path)).expect("agg");
    agg.absorb(&tick(
        &[("ws_auth_ok", "", 5.0)],
        &[("session_auth_ms", "", &[1.25])],
    ));
    agg.vus(1_765_000_000.0, 7);
    agg.finish().expect("flush");
    let text = std::fs::read_to_string(&path).expect("read");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        text.lines()
            .all(|l| l.contains(r#""type":"Point""#) && l.contains(r#""metric":""#))
    );
    assert_eq!(lines[0]["metric"], "ws_auth_ok");
    assert_eq!(lines[0]["data"]["value"], 5.0);
    assert_eq!(lines[2]["metric"], "vus");
    assert_eq!(lines[2]["data"]["time"], "2025-12-06T05:46:40.000000+00:00");
}
