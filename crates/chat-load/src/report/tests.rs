use super::*;
use crate::metrics::Tick;
use clap::Parser;

fn agg_with(counters: &[(&str, &str, f64)], samples: &[(&str, &str, &[f32])]) -> Aggregate {
    let mut agg = Aggregate::new(None).expect("agg");
    agg.absorb(&Tick {
        t: 1.0,
        counters: counters
            .iter()
            .map(|(n, t, v)| (n.to_string(), t.to_string(), *v))
            .collect(),
        samples: samples
            .iter()
            .map(|(n, t, v)| (n.to_string(), t.to_string(), v.to_vec()))
            .collect(),
        ..Tick::default()
    });
    agg
}

#[test]
fn threshold_expressions_are_evaluated_like_k6s() {
    let agg = agg_with(
        &[("ws_errors", "kind=socket", 2.0), ("ws_auth_ok", "", 10.0)],
        &[("auth_ms", "", &[1.0, 2.0, 3.0, 100.0])],
    );
    assert!(!check(&agg, "ws_errors", &[], "count==0"));
    assert!(check(&agg, "ws_errors", &["kind=frame"], "count==0"));
    assert!(check(&agg, "ws_auth_ok", &[], "count>=10"));
    assert!(!check(&agg, "ws_auth_ok", &[], "count>10"));
    assert!(check(&agg, "auth_ms", &[], "p(50)<3"));
    assert!(!check(&agg, "auth_ms", &[], "p(99)<50"));
    // No samples: nothing exceeded the limit.
    assert!(check(&agg, "chat_delivery_ms", &[], "p(99)<1"));
    assert!(!check(&agg, "ws_errors", &[], "count~0"));
}

#[test]
fn a_chat_run_fails_on_loss_by_totals_and_on_unauthenticated_users() {
    let args = Args::try_parse_from(["chat-load", "chat", "--vus", "4", "--users-file", "u.json"])
        .expect("args");
    let timing = Timing::resolve(&args).expect("timing");
    let agg = agg_with(
        &[
            ("msgs_expected", "chat=pair", 10.0),
            ("msgs_received", "chat=pair", 9.0),
            ("users_authenticated", "", 3.0),
        ],
        &[("chat_delivery_ms", "chat=pair,via=live", &[1.0])],
    );
    let report = build(&args, &timing, &agg, &RunFacts::default());
    let failed: Vec<&str> = report
        .derived
        .iter()
        .filter(|d| !d.ok)
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(failed, vec!["loss (totals)", "all authenticated"]);
    assert!(report.failed() >= 2);
    assert!(report.text.contains("FAIL loss (totals): received 9 of 10"));
}

#[test]
fn storm_needs_the_kill_to_drop_someone_and_every_dropped_client_to_resume() {
    let args = Args::try_parse_from(["chat-load", "storm", "--vus", "2", "--users-file", "u.json"])
        .expect("args");
    let timing = Timing::resolve(&args).expect("timing");
    let agg = agg_with(
        &[
            ("ws_dropped", "", 2.0),
            ("msgs_expected", "chat=pair", 1.0),
            ("msgs_received", "chat=pair", 1.0),
            ("users_authenticated", "", 2.0),
        ],
        &[("resume_ms", "", &[900.0])],
    );
    let report = build(&args, &timing, &agg, &RunFacts::default());
    let storm = report
        .derived
        .iter()
        .find(|d| d.name.starts_with("the kill"))
        .expect("storm check");
    assert!(!storm.ok, "{}", storm.detail);
}
