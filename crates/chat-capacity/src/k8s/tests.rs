use clap::Parser;

use crate::cli::{Cli, PROD_ARGS, refresh_command, run};

/// k8s/overlays/prod/capacity.yaml is the model's output for the overlay's workload, with the
/// committed unit table.
#[test]
fn the_prod_overlay_is_the_models_output() {
    let cli = Cli::try_parse_from(PROD_ARGS).expect("args");
    let want = run(&cli).expect("patches");
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../k8s/overlays/prod/capacity.yaml"
    );
    let have = std::fs::read_to_string(path).expect("k8s/overlays/prod/capacity.yaml exists");
    assert!(
        have == want,
        "k8s/overlays/prod/capacity.yaml is not the model's output; regenerate it:\n  {}",
        refresh_command()
    );
}

#[test]
fn the_patches_carry_the_plans_numbers() {
    let cli = Cli::try_parse_from(PROD_ARGS).expect("args");
    let crate::cli::Command::K8s(a) = &cli.command else {
        panic!("k8s")
    };
    let units = crate::units::Units::built_in().expect("units");
    let p = crate::plan::plan(&units, &a.workload(), &a.policy()).expect("plan");
    let out = super::prod_patches(&p, "cmd");
    assert!(out.contains(&format!(
        "  minReplicas: {}\n  maxReplicas: {}\n",
        p.gateway.hpa_min, p.gateway.hpa_max
    )));
    assert!(out.contains(&format!(
        "  name: chat-gateway\nspec:\n  replicas: {}\n",
        p.gateway.replicas
    )));
    assert!(out.contains(&format!(
        "averageValue: \"{}\"",
        p.gateway_facts.sockets_per_pod.round() as u64
    )));
    assert!(out.contains(&format!(
        "CHAT_DB_MAX_CONNECTIONS: \"{}\"",
        p.mysql.pool_per_api_pod
    )));
    let nodes = p.redis.nodes.max(6);
    assert!(out.contains(&format!("replicas: {nodes}\n")));
    assert!(out.contains(&format!("- redis-cluster-{}.redis-cluster\n", nodes - 1)));
    assert!(!out.contains(&format!("- redis-cluster-{nodes}.redis-cluster\n")));
    // Every document is a whole object kustomize can match: apiVersion, kind, name.
    for doc in out.split("---\n").skip(1) {
        assert!(
            doc.starts_with("apiVersion: ")
                && doc.contains("\nkind: ")
                && doc.contains("\n  name: "),
            "{doc}"
        );
    }
}
