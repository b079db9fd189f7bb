use clap::Parser;

use super::*;

#[test]
fn group_mix_is_share_colon_size() {
    assert_eq!(parse_mix("0.3:20"), Ok((0.3, 20.0)));
    assert!(parse_mix("0.3").is_err());
    assert!(parse_mix("x:20").expect_err("x").contains("share"));
}

#[test]
fn concurrent_sets_the_users_from_the_online_share() {
    let cli = Cli::try_parse_from([
        "chat-capacity",
        "plan",
        "--concurrent",
        "300000",
        "--online",
        "0.3",
    ])
    .expect("args");
    let Command::Plan(a) = &cli.command else {
        panic!("plan")
    };
    assert!((a.workload().users - 1_000_000.0).abs() < 1e-6);
    assert!(
        Cli::try_parse_from(["chat-capacity", "plan", "--concurrent", "1", "--users", "2"])
            .is_err()
    );
}

#[test]
fn plan_json_and_text_come_from_the_same_plan() {
    let json = run(
        &Cli::try_parse_from(["chat-capacity", "--json", "plan", "--users", "100000"])
            .expect("args"),
    )
    .expect("json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
    let replicas = v["gateway"]["replicas"].as_u64().expect("replicas");
    let text =
        run(&Cli::try_parse_from(["chat-capacity", "plan", "--users", "100000"]).expect("args"))
            .expect("text");
    assert!(text.contains("first bottleneck"), "{text}");
    let line = text
        .lines()
        .find(|l| l.starts_with("chat-gateway"))
        .expect("gateway line");
    assert!(
        line.split_whitespace().nth(2) == Some(&replicas.to_string()),
        "{line} vs {replicas}"
    );
}

#[test]
fn a_bad_workload_is_an_error_not_a_panic() {
    let cli = Cli::try_parse_from(["chat-capacity", "plan", "--online", "0"]).expect("args");
    let err = run(&cli).expect_err("online 0");
    assert!(err.to_string().contains("online"), "{err}");
}

#[test]
fn run_takes_chat_loads_knobs() {
    let cli = Cli::try_parse_from([
        "chat-capacity",
        "run",
        "chat",
        "--vus",
        "1000",
        "--hold-s",
        "60",
        "--final-sync",
        "0",
    ])
    .expect("args");
    let Command::Run(a) = &cli.command else {
        panic!("run")
    };
    let s = a.shape();
    assert_eq!((s.hold_s, s.final_sync, s.ramp_s), (60.0, false, 30.0));
}
