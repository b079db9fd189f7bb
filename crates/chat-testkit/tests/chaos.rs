//! The chaos suite: real processes (two chat-api replicas, 3 gateways, MariaDB through a cuttable
//! proxy, a private redis-server) and simulated clients that reconnect with backoff and resume from
//! their cursor, while the suite in turn
//!
//! 1. SIGKILLs a gateway (and starts it again),
//! 2. kills Redis and starts it again (empty: nothing is persisted),
//! 3. cuts chat-api's MySQL connections for 10 s,
//! 4. SIGTERMs a gateway (graceful drain, close 1012; started again),
//! 5. SIGKILLs a chat-api replica under traffic (and starts it again): the gateways fail over to
//!    the other replica, REST senders retry, and what the dead replica committed without
//!    publishing is announced by the other one.
//!
//! Traffic runs before, during and after every fault: new messages, and edits and deletions of a
//! share of them. At the end, once nothing moves for 5 s, every client resumes once more; then
//! the checker compares per user what was acked in the user's chats with what the user received,
//! prints one line per fault and fails on any loss, any duplicate on one live stream, any seq
//! going backwards within one live stream, any member that did not end with an edited or deleted
//! message's last state (a lost `message_updated`), and any difference between the acked
//! messages and changes and the database.
//!
//! The CI size (60 clients, ~1,500+ messages, ~2 minutes) runs with the other tests;
//! `CHAT_CHAOS_SCALE=full` (`scripts/chaos.sh`, `make chaos`) runs 240 clients and ≥ 10,000
//! messages. See docs/reliability.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use chat_testkit::chaos::{
    self, ChaosConfig, ClientReport, ClientSpec, GatewayPool, PrivateRedis, ResumeMode, Shared,
};
use chat_testkit::{ApiClient, Stack, StackOptions, TestUser, id_of};

const FAULTS: [&str; 5] = [
    "kill9_gateway",
    "redis_restart",
    "mysql_cut_10s",
    "sigterm_gateway",
    "kill9_api",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_suite() {
    let config = ChaosConfig::from_env();
    let t0 = Instant::now();
    let log = move |text: &str| println!("[chaos {:>6.1}s] {text}", t0.elapsed().as_secs_f64());
    log(&format!(
        "scale={} clients={} send_interval={:?} before={:?} after={:?} resume={}",
        config.scale,
        config.users,
        config.send_interval,
        config.before,
        config.after,
        config.resume.name()
    ));

    // Declared before the stack, so the stack (whose drop deletes its keys) goes first.
    let mut redis = PrivateRedis::start()
        .await
        .expect("a private redis-server for the chaos stack (is redis-server installed?)");
    let gateway_env = vec![("CHAT_DRAIN_SECS".to_string(), "2".to_string())];
    let mut stack = Stack::start(StackOptions {
        gateways: 3,
        apis: 2,
        proxy_mysql: true,
        redis: Some(redis.target()),
        gateway_env: gateway_env.clone(),
        ..StackOptions::default()
    })
    .await;
    let mut pool = GatewayPool::new(&stack, &redis.target(), &gateway_env);
    log(&format!(
        "stack up: apis {:?} gateways {:?} redis {} logs {}",
        stack.api_urls(),
        pool.urls(),
        redis.url(),
        stack.log_dir().display()
    ));

    let api = stack.api();
    let users = register(&api, config.users).await;
    let (members, client_chats, chat_tokens) = make_chats(&api, &users, config.group_size).await;
    log(&format!("{} users, {} chats", users.len(), members.len()));

    let shared = Shared::new(
        pool.shared_urls(),
        &stack.api_url(),
        config.resume,
        config.send_interval,
    );
    let mut handles = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let spec = ClientSpec {
            index: i,
            user_id: user.id,
            token: user.token.clone(),
            chats: client_chats.get(&user.id).cloned().unwrap_or_default(),
            send_over_rest: i % 4 == 3,
            since_in_auth_frame: i % 2 == 1,
        };
        handles.push(tokio::spawn(chaos::run_client(spec, shared.clone())));
    }
    wait_for(
        "every client connected",
        Duration::from_secs(60),
        || shared.connected.load(Ordering::Relaxed) == users.len(),
        &shared,
    )
    .await;
    log(&format!("all connected: {}", shared.progress()));

    let mut readiness: Vec<String> = Vec::new();
    shared.traffic.store(true, Ordering::Relaxed);
    for (k, fault) in FAULTS.iter().enumerate() {
        shared.phase.store(k, Ordering::Relaxed);
        log(&format!("phase {fault}: traffic before the fault"));
        run_for(&shared, config.before, &log).await;
        let started = Instant::now();
        match *fault {
            "kill9_gateway" => {
                log("fault: SIGKILL gateway gw1");
                stack.kill_gateway(0);
                run_for(&shared, Duration::from_secs(3), &log).await;
                let url = pool.restart(0).await.expect("restart gw1");
                log(&format!("gw1 restarted at {url}"));
            }
            "redis_restart" => {
                log("fault: SIGKILL redis-server");
                redis.kill();
                run_for(&shared, Duration::from_secs(2), &log).await;
                redis.restart().await.expect("restart redis-server");
                log("redis-server restarted (empty)");
            }
            "mysql_cut_10s" => {
                log("fault: chat-api's MySQL connections cut for 10 s");
                stack.mysql_proxy().set_down(true);
                run_for(&shared, Duration::from_secs(10), &log).await;
                stack.mysql_proxy().set_down(false);
                log("MySQL reachable again");
            }
            "kill9_api" => {
                log("fault: SIGKILL chat-api replica 1 (of 2)");
                stack.kill_api(0);
                run_for(&shared, Duration::from_secs(3), &log).await;
                stack
                    .restart_api(0)
                    .await
                    .expect("restart chat-api replica 1");
                log(&format!(
                    "chat-api replica 1 restarted at {}",
                    stack.api_url()
                ));
            }
            _ => {
                log("fault: SIGTERM gateway gw2 (drain 2 s)");
                let status = stack.terminate_gateway(1).await;
                log(&format!("gw2 exited: {status}"));
                let url = pool.restart(1).await.expect("restart gw2");
                log(&format!("gw2 restarted at {url}"));
            }
        }
        log(&format!(
            "fault {fault} over after {:.1}s: {}",
            started.elapsed().as_secs_f64(),
            shared.progress()
        ));
        run_for(&shared, config.after, &log).await;
        // Recovered means serving again: every gateway ready (a load balancer routes by it).
        for problem in pool.not_ready().await {
            let line = format!(
                "not_ready [{fault}]: {:.0}s after the fault, /readyz of {problem}",
                config.after.as_secs_f64()
            );
            log(&line);
            readiness.push(line);
        }
    }

    shared.traffic.store(false, Ordering::Relaxed);
    log("traffic stopped; waiting for pending sends");
    wait_for(
        "every pending send acked",
        Duration::from_secs(120),
        || shared.pending_sends.load(Ordering::Relaxed) == 0,
        &shared,
    )
    .await;
    wait_for(
        "5 s without any ack or delivery",
        Duration::from_secs(60),
        || shared.idle_for() >= Duration::from_secs(5),
        &shared,
    )
    .await;
    log(&format!("quiet: {}; final resume", shared.progress()));
    shared.final_round.fetch_add(1, Ordering::Relaxed);
    wait_for(
        "every client's final resume",
        Duration::from_secs(60),
        || shared.final_done.load(Ordering::Relaxed) == users.len(),
        &shared,
    )
    .await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut reports: Vec<ClientReport> = Vec::new();
    for handle in handles {
        reports.push(handle.await.expect("client task"));
    }

    let phases: Vec<String> = FAULTS.iter().map(|s| s.to_string()).collect();
    let verdict = chaos::check(&reports, &members, &phases);
    let history = chaos::verify_history(&stack.api_url(), &chat_tokens, &reports)
        .await
        .expect("read every chat's history");
    println!();
    println!(
        "chaos results: scale={} clients={} messages={} edits_and_deletes={} resume={} \
         duration={:.0}s",
        config.scale,
        users.len(),
        verdict.total_messages,
        verdict.total_changes,
        config.resume.name(),
        t0.elapsed().as_secs_f64()
    );
    for fault in &verdict.faults {
        println!("{}", fault.line());
    }
    println!("socket ends: {:?}", verdict.closes);
    println!("send errors (retried): {:?}", verdict.send_errors);
    println!(
        "history check: {} chats, {} problems",
        chat_tokens.len(),
        history.len()
    );
    println!("readiness after each fault: {} problems", readiness.len());
    for line in verdict.warnings.iter().take(25) {
        println!("  WARN {line}");
    }
    for line in verdict
        .failures
        .iter()
        .chain(history.iter().take(25))
        .chain(readiness.iter())
    {
        println!("  FAIL {line}");
    }
    println!("process logs: {}", stack.log_dir().display());

    assert!(
        config.resume == ResumeMode::Cursor,
        "the clients ran with resume={} (CHAT_CHAOS_RESUME), not with cursor resume: the results \
         above prove nothing about the contract",
        config.resume.name()
    );
    assert!(
        verdict.failures.is_empty() && history.is_empty() && readiness.is_empty(),
        "the chaos suite found {} problems (see FAIL lines above)",
        verdict.failures.len() + history.len() + readiness.len()
    );
    let total: u64 = verdict.faults.iter().map(|f| f.messages).sum();
    assert!(
        total >= config.min_messages as u64,
        "only {total} messages were acked, the {} scale needs at least {}",
        config.scale,
        config.min_messages
    );
    // Edits and deletions are about 18% of what clients create: a run with none checked nothing.
    let updates: u64 = verdict.faults.iter().map(|f| f.updates_sent).sum();
    assert!(
        verdict.total_changes * 20 >= total && updates > 0,
        "only {} edits and deletes ({updates} member updates to check) for {total} messages",
        verdict.total_changes
    );
}

/// Registers `n` users, a batch at a time (password hashing is slow in debug builds).
async fn register(api: &ApiClient, n: usize) -> Vec<TestUser> {
    let mut users = Vec::with_capacity(n);
    while users.len() < n {
        let batch = (n - users.len()).min(16);
        let tag = format!("cx{}_", users.len());
        users.extend(api.new_users(&tag, batch).await);
    }
    users
}

/// Chats: every `group_size` users share a group; inside a group, users 0+1 and 2+3 also share a
/// private chat. Returns chat → members, user → chats, and (chat, a member's token).
async fn make_chats(
    api: &ApiClient,
    users: &[TestUser],
    group_size: usize,
) -> (
    HashMap<u64, Vec<u64>>,
    HashMap<u64, Vec<u64>>,
    Vec<(u64, String)>,
) {
    let groups: Vec<&[TestUser]> = users.chunks(group_size.max(2)).collect();
    let created = futures_util::future::join_all(groups.iter().enumerate().map(|(g, group)| {
        let api = api.clone();
        async move {
            let mut chats = Vec::new();
            let owner = &group[0];
            let others: Vec<u64> = group[1..].iter().map(|u| u.id).collect();
            let as_owner = api.as_user(owner);
            let group_chat = as_owner.group_chat(&format!("chaos {g}"), &others).await;
            let mut all: Vec<u64> = vec![owner.id];
            all.extend(&others);
            chats.push((id_of(&group_chat, "id"), all, owner.token.clone()));
            for pair in group.chunks(2) {
                if let [a, b] = pair {
                    let chat = api.as_user(a).private_chat(b.id).await;
                    chats.push((id_of(&chat, "id"), vec![a.id, b.id], a.token.clone()));
                }
            }
            chats
        }
    }))
    .await;
    let mut members = HashMap::new();
    let mut by_user: HashMap<u64, Vec<u64>> = HashMap::new();
    let mut tokens = Vec::new();
    for (chat, ids, token) in created.into_iter().flatten() {
        for id in &ids {
            by_user.entry(*id).or_default().push(chat);
        }
        members.insert(chat, ids);
        tokens.push((chat, token));
    }
    (members, by_user, tokens)
}

/// Lets the traffic run for `duration`, printing progress every 5 s.
async fn run_for(shared: &Arc<Shared>, duration: Duration, log: &impl Fn(&str)) {
    let deadline = Instant::now() + duration;
    let mut next_print = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if Instant::now() >= next_print {
            log(&shared.progress());
            next_print += Duration::from_secs(5);
        }
    }
}

/// Waits until `done()`, panicking after `within`.
async fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool, shared: &Arc<Shared>) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "chaos: not reached within {within:?}: {what} ({})",
            shared.progress()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
