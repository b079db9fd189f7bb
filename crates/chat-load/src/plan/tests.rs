use super::*;

#[test]
fn a_constant_rate_spaces_arrivals_evenly() {
    let t = arrival_times(&[(0.0, 10.0), (2.0, 10.0)]);
    assert_eq!(t.len(), 20);
    assert!((t[0] - 0.1).abs() < 1e-9);
    assert!((t[19] - 2.0).abs() < 1e-9);
}

#[test]
fn a_ramp_delivers_half_its_peak_on_average() {
    // 0 -> 100/s over 10 s is 500 arrivals, then 100/s for 5 s, then down to 0 over 10 s.
    let t = arrival_times(&[(10.0, 100.0), (5.0, 100.0), (10.0, 0.0)]);
    assert_eq!(t.len(), 500 + 500 + 500);
    assert!(t.windows(2).all(|w| w[0] <= w[1]), "ordered");
    // Half the ramp's arrivals come in its last 2.93 s (sqrt(1/2) of the way).
    assert!((t[249] - 10.0 * 0.5_f64.sqrt()).abs() < 0.01, "{}", t[249]);
    assert!((t[999] - 15.0).abs() < 1e-6);
    assert!(*t.last().expect("some") <= 25.0 + 1e-9);
}

#[test]
fn ramping_vus_start_linearly_then_step_to_the_second_plateau() {
    let stages = [(60.0, 10.0), (60.0, 10.0), (30.0, 15.0), (60.0, 15.0)];
    assert!((vu_start(&stages, 0) - 6.0).abs() < 1e-9);
    assert!((vu_start(&stages, 9) - 60.0).abs() < 1e-9);
    assert!((vu_start(&stages, 10) - 126.0).abs() < 1e-9);
    assert!((vu_start(&stages, 14) - 150.0).abs() < 1e-9);
}

#[test]
fn workers_cover_the_peak() {
    assert_eq!(worker_count(0, 15_000, 18_000), 1);
    assert_eq!(worker_count(0, 100_000, 18_000), 6);
    assert_eq!(worker_count(3, 10, 18_000), 3);
    assert_eq!(worker_count(0, 0, 18_000), 1);
}

#[test]
fn pairs_are_split_over_gateways_and_each_gateway_over_every_address() {
    assert_ne!(gateway_of(4, 2), gateway_of(5, 2));
    let addrs: Vec<Ipv4Addr> = (1..=4).map(|n| Ipv4Addr::new(127, 0, 0, n)).collect();
    let mut seen: Vec<Ipv4Addr> = (0..16)
        .filter(|k| gateway_of(*k, 2) == 0)
        .map(|k| source_of(k, 2, &addrs))
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 4);
    assert!(owns(7, 1, 3) && !owns(7, 0, 3));
}

#[test]
fn storm_kills_inside_the_sending_window() {
    use clap::Parser;
    let args = Args::try_parse_from([
        "chat-load",
        "storm",
        "--vus",
        "10",
        "--users-file",
        "u.json",
        "--ramp-s",
        "10",
        "--hold-s",
        "40",
    ])
    .expect("parses");
    let t = Timing::resolve(&args).expect("resolves");
    assert_eq!(t.send_from, 15.0);
    assert_eq!(t.send_until, 45.0);
    assert_eq!(t.kill_at, Some(30.0));
    let bad = Args::try_parse_from([
        "chat-load",
        "storm",
        "--vus",
        "10",
        "--users-file",
        "u.json",
        "--kill-at-s",
        "1",
    ])
    .expect("parses");
    assert!(Timing::resolve(&bad).is_err());
}
