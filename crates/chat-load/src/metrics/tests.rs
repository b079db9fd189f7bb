use super::*;

#[test]
fn a_drained_recorder_starts_over_and_its_tick_round_trips() {
    let mut r = Recorder::default();
    r.add(name::AUTH_OK, 1.0);
    r.add(name::AUTH_OK, 2.0);
    r.add_tagged(name::ERRORS, "kind=socket,code=reset".into(), 1.0);
    r.sample(name::DELIVERY, "path=echo", 1.5);
    let tick = r.drain();
    let line = serde_json::to_string(&tick).expect("json");
    let back: Tick = serde_json::from_str(&line).expect("parses");
    let auth = back
        .counters
        .iter()
        .find(|c| c.0 == name::AUTH_OK)
        .expect("auth");
    assert_eq!(auth.2, 3.0);
    assert_eq!(back.samples[0].2, vec![1.5]);
    let empty = r.drain();
    assert!(empty.counters.is_empty() && empty.samples.is_empty());
}

#[test]
fn this_process_has_cpu_time_and_memory() {
    assert!(cpu_seconds(None).is_some());
    assert!(rss_kib(std::process::id()).expect("rss") > 0);
}
