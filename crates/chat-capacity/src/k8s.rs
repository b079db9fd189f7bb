//! A plan as kustomize strategic-merge patches over `k8s/base`: replicas, HPA bounds and the
//! gateways' socket target, resource requests and limits, PDBs, spread and anti-affinity, the
//! Redis Cluster's size (and the Job that creates it), the api's database pool. The prod overlay
//! commits this output as `k8s/overlays/prod/capacity.yaml`; a unit test fails when the
//! committed file and the model's output for the overlay's workload differ.

use std::fmt::Write;

use crate::plan::Plan;

/// The spread every chat tier gets: evenly over the zones, refused otherwise (the base's
/// preference is replaced), and for the gateways one pod per node, so that a node lost costs
/// one pod's sockets.
fn spread(app: &str, hostname_required: bool, base_has_spread: bool) -> String {
    let affinity = if hostname_required {
        format!(
            "        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            \
             - topologyKey: kubernetes.io/hostname\n              labelSelector:\n                \
             matchLabels:\n                  app.kubernetes.io/name: {app}\n          \
             preferredDuringSchedulingIgnoredDuringExecution: null\n"
        )
    } else {
        String::new()
    };
    let mut s = String::new();
    if !affinity.is_empty() {
        s.push_str("      affinity:\n");
        s.push_str(&affinity);
    }
    let _ = write!(
        s,
        "      topologySpreadConstraints:\n{}        - maxSkew: 1\n          topologyKey: topology.kubernetes.io/zone\n          \
         whenUnsatisfiable: DoNotSchedule\n          labelSelector:\n            matchLabels:\n              \
         app.kubernetes.io/name: {app}\n",
        // A directive for a list the base does not have would stay in the output.
        if base_has_spread {
            "        - $patch: replace\n"
        } else {
            ""
        }
    );
    s
}

fn resources(container: &str, cpu_m: u32, mem_req: u32, mem_lim: u32, cpu_limit: bool) -> String {
    let limit_cpu = if cpu_limit {
        format!("cpu: {}m, ", cpu_m * 2)
    } else {
        String::new()
    };
    format!(
        "      containers:\n        - name: {container}\n          resources:\n            \
         requests: {{ cpu: {cpu_m}m, memory: {mem_req}Mi }}\n            limits: {{ {limit_cpu}memory: {mem_lim}Mi }}\n"
    )
}

fn deployment(name: &str, replicas: u32, body: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  replicas: {replicas}\n  \
         template:\n    spec:\n{body}"
    )
}

fn hpa_bounds(name: &str, min: u32, max: u32, extra: &str) -> String {
    format!(
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\nspec:\n  \
         minReplicas: {min}\n  maxReplicas: {max}\n{extra}"
    )
}

/// The patches, one YAML document each, headed by the workload they were computed for.
pub fn prod_patches(plan: &Plan, command: &str) -> String {
    let (g, a, w) = (&plan.gateway, &plan.api, &plan.worker);
    let mut docs = Vec::new();

    let mut gw_body = spread("chat-gateway", true, true);
    gw_body += &resources(
        "chat-gateway",
        g.cpu_request_m,
        g.memory_request_mib,
        g.memory_limit_mib,
        true,
    );
    docs.push(deployment("chat-gateway", g.replicas, &gw_body));
    // The Pods metric's target: the planned sockets per pod, so that growth adds pods before
    // memory or CPU runs out. The metrics list is replaced whole (a list of objects).
    let sockets = plan.gateway_facts.sockets_per_pod.round() as u64;
    docs.push(hpa_bounds(
        "chat-gateway",
        g.hpa_min,
        g.hpa_max,
        &format!(
            "  metrics:\n    - type: Pods\n      pods:\n        metric:\n          name: chat_gateway_connections\n        \
             target:\n          type: AverageValue\n          averageValue: \"{sockets}\"\n    - type: Resource\n      \
             resource:\n        name: cpu\n        target:\n          type: Utilization\n          \
             averageUtilization: {}\n",
            (plan.policy.target_util * 100.0).round() as u32
        ),
    ));

    let mut api_body = spread("chat-api", false, true);
    api_body += &resources(
        "chat-api",
        a.cpu_request_m,
        a.memory_request_mib,
        a.memory_limit_mib,
        true,
    );
    docs.push(deployment("chat-api", a.replicas, &api_body));
    docs.push(hpa_bounds("chat-api", a.hpa_min, a.hpa_max, ""));
    // A zone's worth of api pods may be away at once only if the rest carry the peak: one at a
    // time keeps the zone-loss headroom for a real zone loss.
    docs.push(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: chat-api\nspec:\n  \
         minAvailable: null\n  maxUnavailable: 1\n"
            .to_string(),
    );

    let mut worker_body = spread("chat-worker", false, false);
    worker_body += &resources(
        "chat-worker",
        w.cpu_request_m,
        w.memory_request_mib,
        w.memory_limit_mib,
        true,
    );
    docs.push(deployment("chat-worker", w.replicas, &worker_body));
    docs.push(hpa_bounds("chat-worker", w.hpa_min, w.hpa_max, ""));

    // Redis Cluster: masters with one replica each, one core per node.
    let nodes = plan.redis.nodes.max(6);
    docs.push(format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: redis-cluster\nspec:\n  replicas: {nodes}\n  \
         template:\n    spec:\n      containers:\n        - name: redis\n          resources:\n            \
         requests: {{ cpu: 1000m, memory: 1Gi }}\n            limits: {{ memory: 2Gi }}\n"
    ));
    let mut args = String::new();
    for i in 0..nodes {
        let _ = writeln!(args, "            - redis-cluster-{i}.redis-cluster");
    }
    docs.push(format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: redis-cluster-create\nspec:\n  template:\n    spec:\n      \
         containers:\n        - name: cluster-create\n          args:\n{args}"
    ));

    // MySQL: the write load's cores at the target utilization.
    let mysql_cpu = ((plan.mysql.cores / plan.policy.target_util / plan.mysql.shards as f64)
        * 1000.0)
        .ceil()
        .max(1000.0) as u32;
    docs.push(format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: mysql\nspec:\n  template:\n    spec:\n      \
         containers:\n        - name: mysql\n          resources:\n            \
         requests: {{ cpu: {mysql_cpu}m }}\n"
    ));
    docs.push(format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: chat-config\ndata:\n  \
         CHAT_DB_MAX_CONNECTIONS: \"{}\"\n  CHAT_PUSH_CONCURRENCY: \"{}\"\n",
        plan.mysql.pool_per_api_pod, plan.policy.worker_concurrency as u32
    ));

    let mut out = format!(
        "# Generated by the capacity model; do not edit by hand (cargo test -p chat-capacity fails when\n\
         # this file and the model disagree). To refresh it after a change of docs/capacity-units.toml:\n\
         #   {command}\n\
         # Workload: {:.0} concurrent sockets, {:.0} msg/s, {:.0}% of messages to groups of {:.0}.\n",
        plan.load.sockets,
        plan.load.messages_per_s,
        plan.workload.group_share * 100.0,
        plan.workload.group_size
    );
    for d in docs {
        out.push_str("---\n");
        out.push_str(&d);
    }
    out
}

#[cfg(test)]
mod tests;
