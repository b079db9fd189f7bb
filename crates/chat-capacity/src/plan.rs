//! The model: workload figures and headroom rules in, replicas per tier, Redis shards, MySQL
//! write load, memory per gateway pod and egress out. Pure arithmetic over [`Units`]; every
//! rate it derives is in [`Load`], so a plan can be checked by hand.
//!
//! Message fan-out follows the code: chat-api publishes a private chat's message to the channel
//! of each member, and a group's once to the chat's channel that each gateway holding a member
//! subscribes to (`Routing::PerChat`, what is built); `Routing::PerUser` publishes a group's to
//! every member's channel too, to show what that would cost. Every socket of every online member
//! gets the event, the sender's own sockets included. Redis pays a message (its rate limit), each
//! publish (a script that also appends to the channel's recent-event log) and each delivery of a
//! publish to a subscribed gateway.

use serde::Serialize;

use crate::units::Units;

const MIB: f64 = 1024.0 * 1024.0;

/// How a group message reaches the gateways (1:1 chats always use the members' channels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Routing {
    /// One publish per member to the member's channel, groups too: for comparison.
    PerUser,
    /// One publish per group message to the chat's channel, which each gateway with a member
    /// subscribes to (what chat-api does).
    PerChat,
}

/// What the users do, at the peak hour.
#[derive(Debug, Clone, Serialize)]
pub struct Workload {
    /// Registered users.
    pub users: f64,
    /// Share of users online at the peak.
    pub online: f64,
    /// Open sockets per online user (devices).
    pub devices: f64,
    /// Messages an online user sends per hour.
    pub msgs_per_user_hour: f64,
    /// Share of messages sent to groups (the rest go to 1:1 chats).
    pub group_share: f64,
    /// Members of a group.
    pub group_size: f64,
    pub routing: Routing,
    /// Text bytes of a message.
    pub msg_bytes: f64,
    /// Mean lifetime of a socket (a session), minutes: sets the rate of new sessions.
    pub session_minutes: f64,
    /// Share of offline recipients with a device token (push jobs).
    pub push_share: f64,
}

/// The headroom rules and the shape of a pod.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    /// CPU use at the peak as a share of what is requested (the HPAs' target).
    pub target_util: f64,
    /// Availability zones the pods are spread over.
    pub zones: u32,
    /// CPU use allowed on the surviving zones while one zone is lost.
    pub zone_loss_util: f64,
    /// How many of the measuring machine's cores one production core is worth.
    pub core_speed: f64,
    pub gateway_pod_cores: f64,
    /// Most sockets one gateway pod holds (a rollout or crash reconnects them all at once).
    pub gateway_max_sockets: f64,
    pub api_pod_cores: f64,
    /// Cores of one MySQL primary.
    pub mysql_primary_cores: f64,
    /// `max_connections` of one MySQL primary.
    pub mysql_max_connections: f64,
    /// chat-api's pool per pod (`CHAT_DB_MAX_CONNECTIONS`).
    pub db_pool_per_pod: f64,
    /// A gateway's drain window on SIGTERM (`CHAT_DRAIN_SECS`).
    pub drain_secs: f64,
    /// The window over which a lost zone's clients come back (their backoff's spread).
    pub reconnect_window_s: f64,
    /// Consumers per worker pod (`CHAT_PUSH_CONCURRENCY`).
    pub worker_concurrency: f64,
    /// Seconds a push takes at the provider (an assumption: not measured here).
    pub push_latency_s: f64,
    /// The least memory limit of an api pod: what a burst of resumes took (docs/capacity.md).
    pub api_burst_mib: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            target_util: 0.6,
            zones: 3,
            zone_loss_util: 0.85,
            core_speed: 1.0,
            gateway_pod_cores: 2.0,
            gateway_max_sockets: 50_000.0,
            api_pod_cores: 2.0,
            mysql_primary_cores: 16.0,
            mysql_max_connections: 500.0,
            db_pool_per_pod: 16.0,
            drain_secs: 20.0,
            reconnect_window_s: 30.0,
            worker_concurrency: 64.0,
            push_latency_s: 0.1,
            // 10,000 final replays within 5 s at one chat-api took it from 31.5 to 236 MiB
            // (loadtest/results/20261206T134418Z-chat-10000-chat-load); a lost zone sends each
            // api pod of the 1M plan about 1,200 resumes a second.
            api_burst_mib: 256.0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{0} must be {1}")]
    Out(&'static str, &'static str),
}

/// Rates per second at the peak.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Load {
    pub online_users: f64,
    pub sockets: f64,
    pub sessions_per_s: f64,
    pub messages_per_s: f64,
    /// Events written to sockets.
    pub deliveries_per_s: f64,
    /// PUBLISH/SPUBLISH commands.
    pub publishes_per_s: f64,
    /// Messages Redis writes to the gateways' subscription connections.
    pub redis_deliveries_per_s: f64,
    pub push_jobs_per_s: f64,
    pub mysql_rows_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Tier {
    /// Cores of the measuring machine the tier uses at the peak.
    pub cores: f64,
    pub replicas: u32,
    /// Which rule set `replicas`: cpu, sockets, zone-loss, storm or minimum.
    pub bound_by: &'static str,
    pub hpa_min: u32,
    pub hpa_max: u32,
    pub cpu_request_m: u32,
    pub memory_request_mib: u32,
    pub memory_limit_mib: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct GatewayFacts {
    pub sockets_per_pod: f64,
    pub rss_per_pod_mib: f64,
    /// RSS per pod when one zone is lost and its sockets moved to the others.
    pub rss_per_pod_zone_loss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RedisPlan {
    pub cores: f64,
    pub mode: &'static str,
    pub masters: u32,
    pub nodes: u32,
    pub publishes_per_s_per_shard: f64,
    pub deliveries_per_s_per_shard: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MysqlPlan {
    pub cores: f64,
    pub messages_per_s: f64,
    pub rows_per_s: f64,
    /// Primaries (shards by chat id) at the target utilization.
    pub shards: u32,
    pub pool_per_api_pod: u32,
    pub connections: u32,
}

#[derive(Debug, Clone, Serialize)]
pub struct Egress {
    pub gateways_to_clients_mbit_s: f64,
    pub redis_to_gateways_mbit_s: f64,
}

/// The reconnect storms the headroom must absorb.
#[derive(Debug, Clone, Serialize)]
pub struct Storms {
    /// A gateway rollout: one pod's sockets reconnect over its drain window.
    pub rollout_sessions_per_s: f64,
    pub rollout_gateway_cores: f64,
    pub rollout_api_cores: f64,
    /// A lost zone: its sockets reconnect over the clients' backoff window.
    pub zone_loss_sessions_per_s: f64,
    pub zone_loss_gateway_cores: f64,
    pub zone_loss_api_cores: f64,
    pub zone_loss_mysql_cores: f64,
}

/// One resource that does not scale by adding pods, and how full a single one of it is.
#[derive(Debug, Clone, Serialize)]
pub struct Limit {
    pub name: &'static str,
    /// Load over capacity at the target utilization: above 1, one is not enough.
    pub ratio: f64,
    pub remedy: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub workload: Workload,
    pub policy: Policy,
    pub load: Load,
    pub gateway: Tier,
    pub gateway_facts: GatewayFacts,
    pub api: Tier,
    pub worker: Tier,
    pub redis: RedisPlan,
    pub mysql: MysqlPlan,
    pub egress: Egress,
    pub storms: Storms,
    /// Sorted fullest first; the first with a ratio above 1 is the first bottleneck.
    pub limits: Vec<Limit>,
}

/// Per-message averages over the 1:1/group mix, for a given number of gateways.
struct PerMessage {
    deliveries: f64,
    publishes: f64,
    redis_deliveries: f64,
    push_jobs: f64,
}

/// Expected distinct gateways among `k` sockets spread at random over `n` gateways.
pub fn distinct_gateways(n: f64, k: f64) -> f64 {
    if n <= 1.0 {
        return 1.0_f64.min(k.max(0.0));
    }
    n * (1.0 - (1.0 - 1.0 / n).powf(k))
}

fn per_message(w: &Workload, gateways: f64) -> PerMessage {
    let p = w.online;
    let d = w.devices;
    let g = w.group_share;
    let kinds = [(1.0 - g, 2.0, false), (g, w.group_size, true)];
    let mut out = PerMessage {
        deliveries: 0.0,
        publishes: 0.0,
        redis_deliveries: 0.0,
        push_jobs: 0.0,
    };
    for (share, members, group) in kinds {
        if share <= 0.0 {
            continue;
        }
        let online_members = 1.0 + (members - 1.0) * p;
        let (publishes, redis_deliveries) = if group && w.routing == Routing::PerChat {
            (1.0, distinct_gateways(gateways, online_members * d))
        } else {
            // Each online member's channel is held by the gateways of the member's sockets.
            (members, online_members * distinct_gateways(gateways, d))
        };
        out.deliveries += share * online_members * d;
        out.publishes += share * publishes;
        out.redis_deliveries += share * redis_deliveries;
        out.push_jobs += share * (members - 1.0) * (1.0 - p) * w.push_share;
    }
    out
}

fn check(w: &Workload, p: &Policy) -> Result<(), PlanError> {
    let pos = |v: f64| v.is_finite() && v > 0.0;
    let share = |v: f64| v.is_finite() && (0.0..=1.0).contains(&v);
    let rules: [(bool, &'static str, &'static str); 17] = [
        (pos(w.users), "users", "positive"),
        (share(w.online) && w.online > 0.0, "online", "in (0, 1]"),
        (w.devices.is_finite() && w.devices >= 1.0, "devices", ">= 1"),
        (
            w.msgs_per_user_hour.is_finite() && w.msgs_per_user_hour >= 0.0,
            "msgs per user-hour",
            ">= 0",
        ),
        (share(w.group_share), "group share", "in [0, 1]"),
        (
            w.group_size.is_finite() && w.group_size >= 3.0,
            "group size",
            ">= 3",
        ),
        (
            w.msg_bytes.is_finite() && w.msg_bytes >= 0.0,
            "message bytes",
            ">= 0",
        ),
        (pos(w.session_minutes), "session minutes", "positive"),
        (share(w.push_share), "push share", "in [0, 1]"),
        (
            share(p.target_util) && p.target_util > 0.0,
            "target utilization",
            "in (0, 1]",
        ),
        (p.zones >= 2, "zones", ">= 2"),
        (
            share(p.zone_loss_util) && p.zone_loss_util >= p.target_util,
            "zone-loss utilization",
            "in [target utilization, 1]",
        ),
        (pos(p.core_speed), "core speed", "positive"),
        (
            pos(p.gateway_pod_cores) && pos(p.api_pod_cores) && pos(p.mysql_primary_cores),
            "pod and primary cores",
            "positive",
        ),
        (
            pos(p.gateway_max_sockets),
            "gateway max sockets",
            "positive",
        ),
        (
            pos(p.mysql_max_connections) && pos(p.db_pool_per_pod),
            "connection counts",
            "positive",
        ),
        (
            pos(p.drain_secs)
                && pos(p.reconnect_window_s)
                && pos(p.worker_concurrency)
                && pos(p.push_latency_s)
                && pos(p.api_burst_mib),
            "drain, window, concurrency, push latency and api burst",
            "positive",
        ),
    ];
    for (ok, what, want) in rules {
        if !ok {
            return Err(PlanError::Out(what, want));
        }
    }
    Ok(())
}

fn ceil_u32(x: f64) -> u32 {
    if x.is_finite() && x > 0.0 {
        x.ceil().min(u32::MAX as f64) as u32
    } else {
        0
    }
}

/// Round up to a multiple of `m` (pods spread evenly over the zones).
fn round_up(n: u32, m: u32) -> u32 {
    n.div_ceil(m) * m
}

/// Replicas for a stateless tier: the target utilization at the peak, and the zone-loss
/// utilization on the zones left, at least one pod per zone.
fn replicas_for(cores: f64, pod_cores: f64, p: &Policy) -> (u32, &'static str) {
    let z = p.zones as f64;
    let by_cpu = ceil_u32(cores / (pod_cores * p.target_util));
    let by_zone = ceil_u32(cores / (pod_cores * p.zone_loss_util) * z / (z - 1.0));
    let mut n = p.zones;
    let mut why = "minimum";
    if by_cpu > n {
        n = by_cpu;
        why = "cpu";
    }
    if by_zone > n {
        n = by_zone;
        why = "zone-loss";
    }
    (round_up(n, p.zones), why)
}

/// HPA bounds around the peak plan: down to half at night (never below one pod per zone), up
/// by half for growth and storms the plan did not foresee.
fn hpa(replicas: u32, zones: u32) -> (u32, u32) {
    let min = round_up(replicas.div_ceil(2).max(zones), zones);
    let max = ceil_u32(replicas as f64 * 1.5).max(min);
    (min, max)
}

pub fn plan(units: &Units, w: &Workload, p: &Policy) -> Result<Plan, PlanError> {
    check(w, p)?;
    let (gu, au, mu, ru) = (&units.gateway, &units.api, &units.mysql, &units.redis);
    let online_users = w.users * w.online;
    let sockets = online_users * w.devices;
    let sessions = sockets / (w.session_minutes * 60.0);
    let messages = online_users * w.msgs_per_user_hour / 3600.0;
    let cores = |us_per_s: f64| us_per_s / 1e6 / p.core_speed;

    // The gateways' count changes how many receive a chat's message (per-chat channels), and
    // their CPU depends on that: a few rounds settle it.
    let mut gateways = (sockets / p.gateway_max_sockets).ceil().max(p.zones as f64);
    let mut pm = per_message(w, gateways);
    let mut gw_cores = 0.0;
    let mut gw = (p.zones, "minimum");
    for _ in 0..8 {
        pm = per_message(w, gateways);
        let redis_in = messages * pm.redis_deliveries;
        let deliveries = messages * pm.deliveries;
        let d = gu.delivery_us.value;
        let share = gu.redis_share.value;
        // Every pod has sessions arriving and messages flowing all the time.
        gw_cores = cores(
            sockets * gu.socket_us_per_s_at(sockets / gateways)
                + sessions * gu.session_us.value
                + messages * gu.send_us.value
                + deliveries * d * (1.0 - share)
                + redis_in * d * share
                + gateways * (gu.arrivals_us_per_s.value + gu.sending_us_per_s.value),
        );
        gw = replicas_for(gw_cores, p.gateway_pod_cores, p);
        let by_sockets = round_up(ceil_u32(sockets / p.gateway_max_sockets), p.zones);
        if by_sockets > gw.0 {
            gw = (by_sockets, "sockets");
        }
        if gw.0 as f64 == gateways {
            break;
        }
        gateways = gw.0 as f64;
    }
    let load = Load {
        online_users,
        sockets,
        sessions_per_s: sessions,
        messages_per_s: messages,
        deliveries_per_s: messages * pm.deliveries,
        publishes_per_s: messages * pm.publishes,
        redis_deliveries_per_s: messages * pm.redis_deliveries,
        push_jobs_per_s: messages * pm.push_jobs,
        mysql_rows_per_s: messages * mu.rows_per_message.value,
    };

    // Gateway memory: the sockets and the sends in flight, and a pod's share of a lost zone.
    let z = p.zones as f64;
    let spp = sockets / gw.0 as f64;
    let sends_pp = messages / gw.0 as f64;
    let gw_mib = |share: f64| {
        gu.base_rss_mib.value
            + share * (spp * gu.socket_idle_bytes.value + sends_pp * gu.msg_rate_bytes.value) / MIB
    };
    let rss = gw_mib(1.0);
    let rss_zone = gw_mib(z / (z - 1.0));
    let (gmin, gmax) = hpa(gw.0, p.zones);
    let gateway = Tier {
        cores: gw_cores,
        replicas: gw.0,
        bound_by: gw.1,
        hpa_min: gmin,
        hpa_max: gmax,
        cpu_request_m: (p.gateway_pod_cores * 1000.0) as u32,
        memory_request_mib: round_mib(rss * 1.25),
        memory_limit_mib: round_mib(rss_zone * 1.5),
    };

    // Storms: what reconnecting sockets cost on top of the peak.
    let per_resume_gw = gu.session_us.value;
    let per_resume_api = au.session_us.value + au.resume_us.value;
    let per_resume_db = mu.session_us.value + mu.resume_us.value;
    let rollout = spp / p.drain_secs;
    let zone = sockets / z / p.reconnect_window_s;
    let storms = Storms {
        rollout_sessions_per_s: rollout,
        rollout_gateway_cores: cores(rollout * per_resume_gw),
        rollout_api_cores: cores(rollout * per_resume_api),
        zone_loss_sessions_per_s: zone,
        zone_loss_gateway_cores: cores(zone * per_resume_gw),
        zone_loss_api_cores: cores(zone * per_resume_api),
        zone_loss_mysql_cores: cores(zone * per_resume_db),
    };

    // chat-api: the peak at the target, and a lost zone's resumes on top of the peak within
    // the zone-loss utilization of the pods left.
    let api_load = cores(
        sessions * au.session_us.value
            + messages * au.message_us.value
            + load.publishes_per_s * au.publish_us.value,
    );
    let per_api_pod = cores(au.arrivals_us_per_s.value + au.sending_us_per_s.value);
    let mut api_cores = api_load;
    let mut api = replicas_for(api_cores, p.api_pod_cores, p);
    for _ in 0..8 {
        api_cores = api_load + api.0 as f64 * per_api_pod;
        let next = replicas_for(api_cores, p.api_pod_cores, p);
        if next.0 == api.0 {
            break;
        }
        api = next;
    }
    let api_storm = round_up(
        ceil_u32(
            (api_cores + storms.zone_loss_api_cores) / (p.api_pod_cores * p.zone_loss_util) * z
                / (z - 1.0),
        ),
        p.zones,
    );
    if api_storm > api.0 {
        api = (api_storm, "storm");
    }
    let (amin, amax) = hpa(api.0, p.zones);
    let api_rss =
        au.base_rss_mib.value + messages / f64::from(api.0.max(1)) * au.msg_rate_bytes.value / MIB;
    let api_tier = Tier {
        cores: api_cores,
        replicas: api.0,
        bound_by: api.1,
        hpa_min: amin,
        hpa_max: amax,
        cpu_request_m: (p.api_pod_cores * 1000.0) as u32,
        memory_request_mib: round_mib(api_rss * 1.25),
        memory_limit_mib: round_mib((api_rss * 2.5).max(p.api_burst_mib)),
    };

    // chat-worker: bound by pushes in flight, not CPU (each consumer waits on the provider).
    let in_flight = load.push_jobs_per_s * p.push_latency_s;
    let by_push = ceil_u32(in_flight / (p.worker_concurrency * p.target_util));
    // Workers are not spread by zone rules: two at least, halved at night like the others.
    let workers = by_push.max(2);
    let (wmin, wmax) = hpa(workers, 2);
    let worker = Tier {
        cores: 0.0,
        replicas: workers,
        bound_by: if by_push > 2 {
            "pushes in flight"
        } else {
            "minimum"
        },
        hpa_min: wmin,
        hpa_max: wmax,
        cpu_request_m: 250,
        memory_request_mib: 64,
        memory_limit_mib: 256,
    };

    // Redis: single-threaded, so one core per shard at the target utilization.
    let redis_load = cores(
        messages * ru.message_us.value
            + load.publishes_per_s * ru.publish_us.value
            + load.redis_deliveries_per_s * ru.delivery_us.value
            + sessions * ru.session_us.value
            + sockets * ru.socket_us_per_s.value,
    );
    // Each shard carries its own overhead besides its share of the load: its idle rate (which
    // its sockets' refreshes share, so the more sockets a shard, the less each costs) and what
    // it spends while sessions arrive and messages flow.
    let per_shard =
        cores(ru.idle_us_per_s.value + ru.arrivals_us_per_s.value + ru.sending_us_per_s.value);
    let shards = ceil_u32(redis_load / (p.target_util - per_shard).max(0.05)).max(1);
    let (mode, masters) = if shards == 1 {
        ("standalone", 1)
    } else {
        ("cluster", shards.max(3))
    };
    let redis_cores = redis_load + masters as f64 * per_shard;
    let redis = RedisPlan {
        cores: redis_cores,
        mode,
        masters,
        nodes: masters * 2,
        publishes_per_s_per_shard: load.publishes_per_s / masters as f64,
        deliveries_per_s_per_shard: load.redis_deliveries_per_s / masters as f64,
    };

    // MySQL: one primary per shard at the target utilization; the pool per api pod kept within
    // 80% of max_connections of one primary.
    let mysql_load = cores(messages * mu.message_us.value + sessions * mu.session_us.value);
    let per_primary = cores(mu.arrivals_us_per_s.value + mu.sending_us_per_s.value);
    let primary = p.mysql_primary_cores * p.target_util;
    let mysql_shards = ceil_u32(mysql_load / (primary - per_primary).max(0.05)).max(1);
    let mysql_cores = mysql_load + mysql_shards as f64 * per_primary;
    let api_max = api_tier.hpa_max as f64;
    let pool = p
        .db_pool_per_pod
        .min((p.mysql_max_connections * 0.8 / api_max).floor())
        .max(2.0);
    let mysql = MysqlPlan {
        cores: mysql_cores,
        messages_per_s: messages,
        rows_per_s: load.mysql_rows_per_s,
        shards: mysql_shards,
        pool_per_api_pod: pool as u32,
        connections: (pool * api_max) as u32 * mysql_shards,
    };

    let frame = w.msg_bytes
        + units.wire.frame_overhead_bytes.value
        + units.wire.packet_overhead_bytes.value;
    // A ping and its pong, each a small frame in a packet of its own.
    let ping =
        2.0 * (6.0 + units.wire.packet_overhead_bytes.value) / units.wire.ping_interval_s.value;
    let egress = Egress {
        gateways_to_clients_mbit_s: (load.deliveries_per_s * frame + sockets * ping) * 8.0 / 1e6,
        redis_to_gateways_mbit_s: load.redis_deliveries_per_s * frame * 8.0 / 1e6,
    };

    // A pod's CPU at its socket cap, at the plan's CPU per socket.
    let pod_at_max = gw_cores / sockets.max(1.0) * p.gateway_max_sockets;
    let mut limits = vec![
        Limit {
            name: "Redis pub/sub (one shard)",
            ratio: (redis_load + per_shard) / p.target_util,
            remedy: "a Redis Cluster with more masters; per-chat channels for groups",
        },
        Limit {
            name: "MySQL writes (one primary)",
            ratio: (mysql_load + per_primary) / primary,
            remedy: "shard chats over several primaries by chat id",
        },
        Limit {
            name: "gateway CPU at the pod's socket cap",
            ratio: pod_at_max / (p.gateway_pod_cores * p.target_util),
            remedy: "fewer sockets per pod (more gateway pods)",
        },
        Limit {
            name: "MySQL during a lost zone's reconnects",
            ratio: (mysql_cores + storms.zone_loss_mysql_cores)
                / (p.mysql_primary_cores * p.zone_loss_util * mysql_shards as f64),
            remedy: "spread the resumes (client backoff, admission limits) or serve them from a Redis recent-event log",
        },
        Limit {
            name: "MySQL connections (api pods x pool)",
            ratio: (p.db_pool_per_pod * api_max)
                / (p.mysql_max_connections * 0.8 * mysql_shards as f64),
            remedy: "a smaller pool per api pod, or a connection proxy",
        },
    ];
    limits.sort_by(|a, b| b.ratio.total_cmp(&a.ratio));

    Ok(Plan {
        workload: w.clone(),
        policy: p.clone(),
        load,
        gateway,
        gateway_facts: GatewayFacts {
            sockets_per_pod: spp,
            rss_per_pod_mib: rss,
            rss_per_pod_zone_loss_mib: rss_zone,
        },
        api: api_tier,
        worker,
        redis,
        mysql,
        egress,
        storms,
        limits,
    })
}

/// MiB rounded up to a multiple of 64.
fn round_mib(v: f64) -> u32 {
    ceil_u32(v / 64.0).max(1) * 64
}

#[cfg(test)]
mod tests;
