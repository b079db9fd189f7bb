use super::*;
use crate::units::{BUILT_IN, Units};

#[test]
fn connect_counts_the_two_step_ramp() {
    let s = Shape::defaults(Scenario::Connect, 3000.0, 2);
    let c = counts(&s).expect("counts");
    // 2,000 sockets ramped over 60 s, held 60 s, ramped to 3,000 over 30 s, held 60 s.
    assert_eq!(
        c.socket_seconds,
        2000.0 * 30.0 + 2000.0 * 60.0 + 2500.0 * 30.0 + 3000.0 * 60.0
    );
    assert_eq!((c.sessions, c.messages, c.resumes), (3000.0, 0.0, 0.0));
    assert_eq!((c.arrival_s, c.sending_s), (90.0, 0.0));
}

#[test]
fn chat_counts_follow_chat_loads_defaults() {
    // 15,000 VUs sent 164,864 messages in the reference run (docs/performance.md): 11 each.
    let s = Shape::defaults(Scenario::Chat, 15_000.0, 2);
    let c = counts(&s).expect("counts");
    assert_eq!(c.messages, 165_000.0);
    assert_eq!(c.deliveries, 330_000.0);
    assert_eq!(c.resumes, 15_000.0);
    assert_eq!((c.arrival_s, c.sending_s), (30.0, 110.0));
    let groups = Shape {
        group_size: 10.0,
        ..s
    };
    let g = counts(&groups).expect("counts");
    // One group message per VU a minute besides the pair's every 10 s.
    assert_eq!(g.messages, 165_000.0 + 15_000.0 * 110.0 / 60.0);
    assert_eq!(g.deliveries, 330_000.0 + 15_000.0 * 110.0 / 60.0 * 10.0);
    // A pair's message goes to its two members' channels, a group's once to its chat's, which
    // each gateway holding a member reads: both of two, four of four.
    let group_msgs = 15_000.0 * 110.0 / 60.0;
    assert_eq!(c.publishes, 330_000.0);
    assert_eq!(c.redis_deliveries, 330_000.0);
    assert_eq!(g.publishes, 330_000.0 + group_msgs);
    assert_eq!(g.redis_deliveries, 330_000.0 + 2.0 * group_msgs);
    let four = counts(&Shape {
        gateways: 4,
        ..groups
    })
    .expect("counts");
    assert_eq!(four.redis_deliveries, 330_000.0 + 4.0 * group_msgs);
}

#[test]
fn a_prediction_splits_the_gateway_share_evenly_and_adds_memory_per_socket() {
    let mut u = Units::parse(BUILT_IN).expect("table");
    u.gateway.session_us.value = 100.0;
    u.gateway.socket_us_per_s.value = 1.0;
    u.gateway.socket_density_exponent.value = 0.0;
    u.gateway.send_us.value = 0.0;
    u.gateway.delivery_us.value = 0.0;
    u.gateway.arrivals_us_per_s.value = 1000.0;
    u.gateway.sending_us_per_s.value = 0.0;
    u.gateway.base_rss_mib.value = 10.0;
    u.gateway.socket_idle_bytes.value = 1024.0 * 1024.0 / 1000.0;
    let s = Shape::defaults(Scenario::Connect, 3000.0, 3);
    let p = predict(&u, &s).expect("prediction");
    let c = &p.counts;
    // Each gateway also pays 1 ms a second of ramps (60 + 30 s).
    let want = (c.sessions * 100.0 + c.socket_seconds) / 1e6 / 3.0 + 90.0 * 1000.0 / 1e6;
    let gws: Vec<_> = p
        .processes
        .iter()
        .filter(|x| x.process.starts_with("gw"))
        .collect();
    assert_eq!(gws.len(), 3);
    for g in gws {
        assert!((g.cpu_s - want).abs() < 1e-9);
        // 1,000 sockets a gateway at 1/1000 MiB each.
        assert!((g.rss_mib.expect("rss") - 11.0).abs() < 1e-9);
    }
    assert!(p.processes.iter().any(|x| x.process == "api"));
    assert!(
        p.processes
            .iter()
            .any(|x| x.process == "mariadb" && x.rss_mib.is_none())
    );
}

#[test]
fn impossible_shapes_are_refused() {
    let s = Shape::defaults(Scenario::Chat, 100.0, 2);
    assert!(
        counts(&Shape {
            hold_s: 8.0,
            ..s.clone()
        })
        .is_err()
    );
    assert!(
        counts(&Shape {
            vus: 0.0,
            ..s.clone()
        })
        .is_err()
    );
    assert!(counts(&Shape { gateways: 0, ..s }).is_err());
}

#[test]
fn idle_cost_follows_each_gateways_density_over_the_ramps() {
    let mut u = Units::parse(BUILT_IN).expect("table");
    u.gateway.socket_us_per_s.value = 2.0;
    u.gateway.socket_density_ref.value = 1_000.0;
    u.gateway.socket_density_exponent.value = 0.0;
    for scenario in [Scenario::Connect, Scenario::Chat] {
        let s = Shape::defaults(scenario, 12_000.0, 4);
        let flat = gateway_idle_us(&u.gateway, &s);
        let socket_seconds = counts(&s).expect("counts").socket_seconds;
        // With no fall, the integral is the socket-seconds that counts() gives, at 2 µs.
        assert!(
            (flat - 2.0 * socket_seconds).abs() < 1e-6 * flat,
            "{scenario:?}: {flat} vs {}",
            2.0 * socket_seconds
        );
        let mut dense = u.clone();
        dense.gateway.socket_density_exponent.value = 0.3;
        let falling = gateway_idle_us(&dense.gateway, &s);
        // 3,000 a gateway at the peak: at most 3^-0.3 of the flat cost there, more while ramping.
        assert!(
            falling < flat && falling > flat * 3f64.powf(-0.3),
            "{scenario:?}"
        );
    }
}

#[test]
fn redis_pays_its_idle_rate_over_the_whole_run_whatever_the_gateways() {
    let mut u = Units::parse(BUILT_IN).expect("table");
    u.redis.message_us.value = 0.0;
    u.redis.publish_us.value = 0.0;
    u.redis.delivery_us.value = 0.0;
    u.redis.session_us.value = 0.0;
    u.redis.arrivals_us_per_s.value = 0.0;
    u.redis.sending_us_per_s.value = 0.0;
    u.redis.socket_us_per_s.value = 0.5;
    u.redis.idle_us_per_s.value = 1_000.0;
    let redis = |p: &Prediction| {
        p.processes
            .iter()
            .find(|x| x.process == "redis")
            .expect("redis")
            .cpu_s
    };
    let s = Shape::defaults(Scenario::Connect, 3000.0, 2);
    let c = counts(&s).expect("counts");
    // 60 + 60 + 30 + 60 s.
    assert_eq!(c.run_s, 210.0);
    let want = (c.socket_seconds * 0.5 + 210.0 * 1_000.0) / 1e6;
    let two = predict(&u, &s).expect("prediction");
    let six = predict(&u, &Shape { gateways: 6, ..s }).expect("prediction");
    assert!(
        (redis(&two) - want).abs() < 1e-9,
        "{} vs {want}",
        redis(&two)
    );
    assert_eq!(redis(&two), redis(&six));
    // A chat run's last stage lasts until the final replays are in.
    let chat = counts(&Shape::defaults(Scenario::Chat, 3000.0, 2)).expect("counts");
    assert_eq!(chat.run_s, 30.0 + 120.0 + 5.0 / 2.0 + 1.0);
}
