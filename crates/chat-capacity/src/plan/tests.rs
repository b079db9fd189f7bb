use super::*;
use crate::units::{BUILT_IN, Units};

/// The built-in table with every CPU cost set to `cpu` µs, so results can be worked out by hand.
fn flat_units(cpu: f64) -> Units {
    let mut u = Units::parse(BUILT_IN).expect("table");
    for unit in [
        &mut u.gateway.session_us,
        &mut u.gateway.socket_us_per_s,
        &mut u.gateway.send_us,
        &mut u.gateway.delivery_us,
        &mut u.api.session_us,
        &mut u.api.message_us,
        &mut u.api.publish_us,
        &mut u.api.resume_us,
        &mut u.mysql.message_us,
        &mut u.mysql.session_us,
        &mut u.mysql.resume_us,
        &mut u.redis.message_us,
        &mut u.redis.publish_us,
        &mut u.redis.delivery_us,
        &mut u.redis.session_us,
        &mut u.redis.socket_us_per_s,
    ] {
        unit.value = cpu;
    }
    // A flat idle cost, whatever a gateway holds.
    u.gateway.socket_density_exponent.value = 0.0;
    for unit in [
        &mut u.gateway.arrivals_us_per_s,
        &mut u.gateway.sending_us_per_s,
        &mut u.api.arrivals_us_per_s,
        &mut u.api.sending_us_per_s,
        &mut u.mysql.arrivals_us_per_s,
        &mut u.mysql.sending_us_per_s,
        &mut u.redis.arrivals_us_per_s,
        &mut u.redis.sending_us_per_s,
        &mut u.redis.idle_us_per_s,
    ] {
        unit.value = 0.0;
    }
    u.gateway.redis_share.value = 0.0;
    u.mysql.rows_per_message.value = 3.0;
    u
}

fn one_to_one(users: f64) -> Workload {
    Workload {
        users,
        online: 0.5,
        devices: 1.0,
        msgs_per_user_hour: 36.0,
        group_share: 0.0,
        group_size: 20.0,
        routing: Routing::PerUser,
        msg_bytes: 100.0,
        session_minutes: 10.0,
        push_share: 1.0,
    }
}

#[test]
fn one_to_one_rates_follow_from_the_workload() {
    let p = plan(&flat_units(1.0), &one_to_one(100_000.0), &Policy::default()).expect("plan");
    let l = &p.load;
    assert_eq!(l.online_users, 50_000.0);
    assert_eq!(l.sockets, 50_000.0);
    // 50,000 online users x 36 an hour.
    assert!((l.messages_per_s - 500.0).abs() < 1e-9);
    // The sender's socket and the peer's when online (half the time).
    assert!((l.deliveries_per_s - 750.0).abs() < 1e-9);
    assert!((l.publishes_per_s - 1000.0).abs() < 1e-9);
    assert!((l.push_jobs_per_s - 250.0).abs() < 1e-9);
    assert!((l.mysql_rows_per_s - 1500.0).abs() < 1e-9);
    assert!((l.sessions_per_s - 50_000.0 / 600.0).abs() < 1e-9);
}

#[test]
fn gateway_cpu_is_the_sum_of_its_unit_costs() {
    let p = plan(&flat_units(1.0), &one_to_one(100_000.0), &Policy::default()).expect("plan");
    let l = &p.load;
    // 1 µs for each socket-second, session, send and delivery.
    let want = (l.sockets + l.sessions_per_s + l.messages_per_s + l.deliveries_per_s) / 1e6;
    assert!(
        (p.gateway.cores - want).abs() < 1e-12,
        "{} vs {want}",
        p.gateway.cores
    );
    let fast = Policy {
        core_speed: 2.0,
        ..Policy::default()
    };
    let p2 = plan(&flat_units(1.0), &one_to_one(100_000.0), &fast).expect("plan");
    assert!((p2.gateway.cores - want / 2.0).abs() < 1e-12);
}

#[test]
fn the_cpu_of_every_tier_grows_linearly_with_the_users() {
    let u = flat_units(3.0);
    let a = plan(&u, &one_to_one(1e5), &Policy::default()).expect("plan");
    let b = plan(&u, &one_to_one(1e6), &Policy::default()).expect("plan");
    for (x, y) in [
        (a.gateway.cores, b.gateway.cores),
        (a.api.cores, b.api.cores),
        (a.mysql.cores, b.mysql.cores),
        (a.redis.cores, b.redis.cores),
    ] {
        assert!((y / x - 10.0).abs() < 1e-9, "{x} -> {y}");
    }
}

#[test]
fn small_sockets_are_bound_by_the_socket_cap_and_spread_over_the_zones() {
    let w = one_to_one(1_000_000.0);
    let p = plan(&flat_units(0.001), &w, &Policy::default()).expect("plan");
    // 500,000 sockets at 50,000 a pod: 10, rounded up to a multiple of 3 zones.
    assert_eq!(p.gateway.replicas, 12);
    assert_eq!(p.gateway.bound_by, "sockets");
    assert!((p.gateway_facts.sockets_per_pod - 500_000.0 / 12.0).abs() < 1e-6);
}

#[test]
fn a_lost_zone_needs_more_pods_than_the_target_utilization_when_zones_are_few() {
    let u = flat_units(100.0);
    let two = Policy {
        zones: 2,
        ..Policy::default()
    };
    let p = plan(&u, &one_to_one(10_000_000.0), &two).expect("plan");
    let cores = p.api.cores;
    // Half the pods must carry the peak at 85%: cores / (2 x 0.85) x 2.
    let by_zone = (cores / (2.0 * 0.85) * 2.0).ceil() as u32;
    let by_cpu = (cores / (2.0 * 0.6)).ceil() as u32;
    assert!(by_zone > by_cpu);
    assert!(
        p.api.replicas >= by_zone && p.api.replicas.is_multiple_of(2),
        "{:?}",
        p.api
    );
}

#[test]
fn per_chat_channels_publish_once_and_reach_each_gateway_once() {
    let mut u = flat_units(1.0);
    // Only what a message costs Redis, so that the two routings can be compared.
    u.redis.session_us.value = 0.0;
    u.redis.socket_us_per_s.value = 0.0;
    let groups = Workload {
        group_share: 1.0,
        group_size: 100.0,
        online: 1.0,
        ..one_to_one(60_000.0)
    };
    let per_user = plan(&u, &groups, &Policy::default()).expect("plan");
    let per_chat = plan(
        &u,
        &Workload {
            routing: Routing::PerChat,
            ..groups
        },
        &Policy::default(),
    )
    .expect("plan");
    let msgs = per_user.load.messages_per_s;
    assert!((per_user.load.publishes_per_s - 100.0 * msgs).abs() < 1e-6);
    assert!((per_chat.load.publishes_per_s - msgs).abs() < 1e-6);
    // Every member is online, so every gateway holds one: one Redis message per gateway.
    let gws = per_chat.gateway.replicas as f64;
    assert!(per_chat.load.redis_deliveries_per_s <= msgs * gws + 1e-6);
    assert!(per_chat.load.redis_deliveries_per_s > msgs * gws * 0.99);
    // Sockets get the same events either way.
    assert!((per_chat.load.deliveries_per_s - per_user.load.deliveries_per_s).abs() < 1e-6);
    assert!(per_chat.redis.cores < per_user.redis.cores / 10.0);
    // Redis pays a message, each publish and each delivery to a gateway, 1 µs each here.
    for p in [&per_user, &per_chat] {
        let l = &p.load;
        let want = (l.messages_per_s + l.publishes_per_s + l.redis_deliveries_per_s) / 1e6;
        assert!(
            (p.redis.cores - want).abs() < 1e-9,
            "{} vs {want}",
            p.redis.cores
        );
    }
    assert!((per_user.load.redis_deliveries_per_s - 100.0 * msgs).abs() < 1e-6);
}

#[test]
fn every_pod_and_shard_pays_its_own_overhead() {
    let mut u = flat_units(0.0);
    u.gateway.socket_us_per_s.value = 1.0;
    u.gateway.arrivals_us_per_s.value = 10_000.0;
    u.gateway.sending_us_per_s.value = 20_000.0;
    let p = plan(&u, &one_to_one(1_000_000.0), &Policy::default()).expect("plan");
    // 500,000 idle sockets at 1 µs, and 0.03 core for each of the pods.
    let want = 0.5 + 0.03 * p.gateway.replicas as f64;
    assert!(
        (p.gateway.cores - want).abs() < 1e-9,
        "{} vs {want}",
        p.gateway.cores
    );
    u.redis.sending_us_per_s.value = 50_000.0;
    u.redis.publish_us.value = 100.0;
    let r = plan(&u, &one_to_one(1_000_000.0), &Policy::default()).expect("plan");
    // 10,000 publishes/s at 100 µs = 1 core; each shard has 0.6 - 0.05 left for it.
    assert_eq!((r.redis.mode, r.redis.masters), ("cluster", 3));
    assert!((r.redis.cores - (1.0 + 0.05 * r.redis.masters as f64)).abs() < 1e-9);
}

#[test]
fn distinct_gateways_of_k_sockets() {
    assert_eq!(distinct_gateways(1.0, 50.0), 1.0);
    assert!((distinct_gateways(10.0, 1.0) - 1.0).abs() < 1e-12);
    assert!((distinct_gateways(2.0, 2.0) - 1.5).abs() < 1e-12);
    assert!(distinct_gateways(10.0, 1000.0) > 9.999);
}

#[test]
fn redis_is_standalone_until_one_core_is_not_enough_then_a_cluster_of_three_or_more() {
    let mut u = flat_units(0.0);
    u.redis.publish_us.value = 10.0;
    let small = plan(&u, &one_to_one(100_000.0), &Policy::default()).expect("plan");
    assert_eq!(
        (small.redis.mode, small.redis.masters, small.redis.nodes),
        ("standalone", 1, 2)
    );
    // 1,000 publishes/s x 10 µs = 0.01 core; 100 times more users: 1 core, over 0.6.
    let big = plan(&u, &one_to_one(10_000_000.0), &Policy::default()).expect("plan");
    assert_eq!(big.redis.mode, "cluster");
    assert_eq!(big.redis.masters, 3);
    assert!((big.redis.publishes_per_s_per_shard - big.load.publishes_per_s / 3.0).abs() < 1e-6);
    assert_eq!(big.limits[0].name, "Redis pub/sub (one shard)");
}

#[test]
fn the_mysql_pool_shrinks_to_fit_max_connections() {
    let u = flat_units(200.0);
    let p = plan(&u, &one_to_one(10_000_000.0), &Policy::default()).expect("plan");
    assert!(
        p.api.hpa_max as f64 * 16.0 > 400.0,
        "enough api pods to need it: {:?}",
        p.api
    );
    assert!(p.mysql.pool_per_api_pod as f64 * p.api.hpa_max as f64 <= 400.0);
    assert!(p.mysql.pool_per_api_pod >= 2);
}

#[test]
fn the_api_memory_limit_leaves_room_for_a_burst_of_resumes() {
    let p = plan(&flat_units(1.0), &one_to_one(100_000.0), &Policy::default()).expect("plan");
    assert_eq!(p.api.memory_limit_mib, 256);
    let small = Policy {
        api_burst_mib: 64.0,
        ..Policy::default()
    };
    let q = plan(&flat_units(1.0), &one_to_one(100_000.0), &small).expect("plan");
    assert!(q.api.memory_limit_mib < 256 && q.api.memory_limit_mib >= q.api.memory_request_mib);
}

#[test]
fn hpa_bounds_halve_and_add_half() {
    assert_eq!(hpa(12, 3), (6, 18));
    assert_eq!(hpa(3, 3), (3, 5));
    assert_eq!(hpa(7, 3), (6, 11));
}

#[test]
fn bad_workloads_are_refused_by_name() {
    let u = flat_units(1.0);
    let p = Policy::default();
    let cases: [(Workload, &str); 4] = [
        (
            Workload {
                online: 0.0,
                ..one_to_one(1.0)
            },
            "online",
        ),
        (
            Workload {
                group_size: 2.0,
                ..one_to_one(1.0)
            },
            "group size",
        ),
        (
            Workload {
                users: f64::NAN,
                ..one_to_one(1.0)
            },
            "users",
        ),
        (
            Workload {
                group_share: 1.5,
                ..one_to_one(1.0)
            },
            "group share",
        ),
    ];
    for (w, name) in cases {
        let err = plan(&u, &w, &p).expect_err(name);
        assert!(err.to_string().starts_with(name), "{err}");
    }
    let one_zone = Policy {
        zones: 1,
        ..Policy::default()
    };
    assert!(plan(&u, &one_to_one(1.0), &one_zone).is_err());
}

#[test]
fn denser_gateways_pay_less_a_socket_when_idle() {
    let mut u = flat_units(0.0);
    u.gateway.socket_us_per_s.value = 4.0;
    u.gateway.socket_density_ref.value = 1_000.0;
    let flat = plan(&u, &one_to_one(1_000_000.0), &Policy::default()).expect("plan");
    u.gateway.socket_density_exponent.value = 0.5;
    let dense = plan(&u, &one_to_one(1_000_000.0), &Policy::default()).expect("plan");
    let per_pod = flat.load.sockets / dense.gateway.replicas as f64;
    assert!(
        per_pod > 1_000.0,
        "the plan packs more than the reference a pod"
    );
    let want = flat.gateway.cores * (per_pod / 1_000.0).powf(-0.5);
    assert!(
        (dense.gateway.cores - want).abs() < 1e-9,
        "{} vs {want}",
        dense.gateway.cores
    );
}

#[test]
fn a_redis_shard_shares_its_idle_rate_among_its_sockets() {
    let mut u = flat_units(0.0);
    u.redis.socket_us_per_s.value = 0.3;
    u.redis.idle_us_per_s.value = 1_000.0;
    let p = plan(&u, &one_to_one(1_000_000.0), &Policy::default()).expect("plan");
    assert_eq!(p.redis.masters, 1);
    // 500,000 sockets at 0.3 µs and one process's 1 ms a second.
    assert!(
        (p.redis.cores - (0.15 + 0.001)).abs() < 1e-12,
        "{}",
        p.redis.cores
    );
    let per_socket = p.redis.cores * 1e6 / p.load.sockets;
    assert!((per_socket - u.redis.socket_us_per_s_at(p.load.sockets)).abs() < 1e-12);
}

#[test]
fn the_built_in_redis_cores_for_a_million_fall_with_the_shared_idle_rate() {
    // A flat cost a socket-second instead: the calibration's 20,000-socket hold's rate over its
    // sockets, the process's idle rate included.
    let u = Units::built_in().expect("table");
    let mut flat = u.clone();
    flat.redis.socket_us_per_s.value = u.redis.socket_us_per_s_at(20_000.0);
    flat.redis.idle_us_per_s.value = 0.0;
    let w = Workload {
        users: 1_000_000.0 / 0.3,
        online: 0.3,
        msgs_per_user_hour: 30.0,
        group_share: 0.1,
        session_minutes: 30.0,
        push_share: 0.8,
        ..one_to_one(1.0)
    };
    let shared = plan(&u, &w, &Policy::default()).expect("plan");
    let before = plan(&flat, &w, &Policy::default()).expect("plan");
    assert_eq!(shared.redis.masters, before.redis.masters);
    // A million sockets save the idle rate's share of 20,000 each, and each master pays it once.
    let saved = (1e6 * u.redis.idle_us_per_s.value / 20_000.0
        - before.redis.masters as f64 * u.redis.idle_us_per_s.value)
        / 1e6;
    assert!(saved > 0.0, "{saved}");
    assert!(
        (before.redis.cores - shared.redis.cores - saved).abs() < 1e-9,
        "{} -> {}",
        before.redis.cores,
        shared.redis.cores
    );
}
