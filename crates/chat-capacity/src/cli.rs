//! The command line: `plan` (the default use: workload in, plan out), `run` (the prediction of
//! a local load-driver run), `k8s` (the prod overlay's patches) and `units` (the table in use).
//! Every flag has an environment twin prefixed `CAPACITY_`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::k8s;
use crate::local_run::{self, Scenario, Shape};
use crate::plan::{self, Policy, Routing, Workload};
use crate::render;
use crate::units::{Units, UnitsError};

/// The prod overlay's workload (k8s/overlays/prod/capacity.yaml is this command's output).
pub const PROD_ARGS: &[&str] = &[
    "chat-capacity",
    "k8s",
    "--concurrent",
    "1000000",
    "--group-mix",
    "0.2:20",
];

#[derive(Debug, Parser)]
#[command(
    name = "chat-capacity",
    version,
    about = "Capacity plan for the chat backend from measured unit costs (docs/capacity.md)",
    long_about = "Turns workload figures into replicas per tier, Redis shards, MySQL write load, \
memory per gateway pod and network egress, from the unit costs in docs/capacity-units.toml (each \
names the benchmark command that measured it and the machine's floor in the same run). `run` \
predicts the per-process CPU and memory of a local load-driver run, which \
scripts/capacity-check.sh compares with the measurement. Every flag has a CAPACITY_* environment twin."
)]
pub struct Cli {
    /// A unit-cost table other than the built-in docs/capacity-units.toml.
    #[arg(long, global = true, env = "CAPACITY_UNITS")]
    pub units: Option<PathBuf>,

    /// JSON instead of text.
    #[arg(long, global = true, env = "CAPACITY_JSON")]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Replicas, shards, MySQL load, memory and egress for a workload.
    Plan(PlanArgs),
    /// The kustomize patches of a plan (what k8s/overlays/prod/capacity.yaml holds).
    K8s(PlanArgs),
    /// Per-process CPU-seconds and RSS of a local chat-load run (loadtest/run.sh).
    Run(RunArgs),
    /// The unit-cost table in use, with the command behind each figure.
    Units,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Registered users.
    #[arg(
        long,
        env = "CAPACITY_USERS",
        default_value_t = 1_000_000.0,
        conflicts_with = "concurrent"
    )]
    pub users: f64,
    /// Online users at the peak instead of --users (users = concurrent / online).
    #[arg(long, env = "CAPACITY_CONCURRENT")]
    pub concurrent: Option<f64>,
    /// Share of users online at the peak.
    #[arg(long, env = "CAPACITY_ONLINE", default_value_t = 0.3)]
    pub online: f64,
    /// Sockets per online user.
    #[arg(long, env = "CAPACITY_DEVICES", default_value_t = 1.0)]
    pub devices: f64,
    /// Messages an online user sends per hour.
    #[arg(long, env = "CAPACITY_MSGS_PER_USER_HOUR", default_value_t = 20.0)]
    pub msgs_per_user_hour: f64,
    /// SHARE:SIZE: the share of messages sent to groups, and the members of a group.
    #[arg(long, env = "CAPACITY_GROUP_MIX", default_value = "0.1:20", value_parser = parse_mix)]
    pub group_mix: (f64, f64),
    /// How group messages reach the gateways: per-chat is what chat-api does; per-user shows
    /// what publishing to every member's channel would cost.
    #[arg(long, env = "CAPACITY_ROUTING", value_enum, default_value_t = Routing::PerChat)]
    pub routing: Routing,
    /// Text bytes of a message.
    #[arg(long, env = "CAPACITY_MSG_BYTES", default_value_t = 100.0)]
    pub msg_bytes: f64,
    /// Mean lifetime of a socket, minutes.
    #[arg(long, env = "CAPACITY_SESSION_MINUTES", default_value_t = 30.0)]
    pub session_minutes: f64,
    /// Share of offline recipients with a device token.
    #[arg(long, env = "CAPACITY_PUSH_SHARE", default_value_t = 0.8)]
    pub push_share: f64,
    /// CPU use at the peak as a share of the request.
    #[arg(long, env = "CAPACITY_TARGET_UTIL", default_value_t = 0.6)]
    pub target_util: f64,
    /// Zones the pods spread over.
    #[arg(long, env = "CAPACITY_ZONES", default_value_t = 3)]
    pub zones: u32,
    /// CPU use allowed on the zones left when one is lost.
    #[arg(long, env = "CAPACITY_ZONE_LOSS_UTIL", default_value_t = 0.85)]
    pub zone_loss_util: f64,
    /// How many of the measuring machine's cores one production core is worth.
    #[arg(long, env = "CAPACITY_CORE_SPEED", default_value_t = 1.0)]
    pub core_speed: f64,
    /// Cores requested by a gateway pod.
    #[arg(long, env = "CAPACITY_GATEWAY_POD_CORES", default_value_t = 2.0)]
    pub gateway_pod_cores: f64,
    /// Most sockets one gateway pod holds.
    #[arg(long, env = "CAPACITY_GATEWAY_MAX_SOCKETS", default_value_t = 50_000.0)]
    pub gateway_max_sockets: f64,
    /// Cores requested by an api pod.
    #[arg(long, env = "CAPACITY_API_POD_CORES", default_value_t = 2.0)]
    pub api_pod_cores: f64,
    /// Cores of one MySQL primary.
    #[arg(long, env = "CAPACITY_MYSQL_PRIMARY_CORES", default_value_t = 16.0)]
    pub mysql_primary_cores: f64,
    /// max_connections of one MySQL primary.
    #[arg(long, env = "CAPACITY_MYSQL_MAX_CONNECTIONS", default_value_t = 500.0)]
    pub mysql_max_connections: f64,
    /// CHAT_DB_MAX_CONNECTIONS wanted per api pod.
    #[arg(long, env = "CAPACITY_DB_POOL_PER_POD", default_value_t = 16.0)]
    pub db_pool_per_pod: f64,
    /// CHAT_DRAIN_SECS of the gateways.
    #[arg(long, env = "CAPACITY_DRAIN_SECS", default_value_t = 20.0)]
    pub drain_secs: f64,
    /// Seconds over which a lost zone's clients reconnect.
    #[arg(long, env = "CAPACITY_RECONNECT_WINDOW_S", default_value_t = 30.0)]
    pub reconnect_window_s: f64,
    /// CHAT_PUSH_CONCURRENCY per worker pod.
    #[arg(long, env = "CAPACITY_WORKER_CONCURRENCY", default_value_t = 64.0)]
    pub worker_concurrency: f64,
    /// Seconds one push takes at the provider (assumed, not measured).
    #[arg(long, env = "CAPACITY_PUSH_LATENCY_S", default_value_t = 0.1)]
    pub push_latency_s: f64,
    /// The least memory limit of an api pod, MiB (a burst of resumes; docs/capacity.md).
    #[arg(long, env = "CAPACITY_API_BURST_MIB", default_value_t = 256.0)]
    pub api_burst_mib: f64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[arg(value_enum, env = "CAPACITY_SCENARIO")]
    pub scenario: Scenario,
    /// Sockets (chat-load's VUS).
    #[arg(long, env = "CAPACITY_VUS")]
    pub vus: f64,
    #[arg(long, env = "CAPACITY_GATEWAYS", default_value_t = 2)]
    pub gateways: u32,
    #[arg(long, env = "RAMP_S")]
    pub ramp_s: Option<f64>,
    #[arg(long, env = "HOLD_S")]
    pub hold_s: Option<f64>,
    #[arg(long, env = "SETTLE_S")]
    pub settle_s: Option<f64>,
    #[arg(long, env = "DRAIN_S")]
    pub drain_s: Option<f64>,
    #[arg(long, env = "SEND_EVERY_S")]
    pub send_every_s: Option<f64>,
    #[arg(long, env = "GROUP_SEND_EVERY_S")]
    pub group_send_every_s: Option<f64>,
    #[arg(long, env = "GROUP_SIZE")]
    pub group_size: Option<f64>,
    #[arg(long, env = "FINAL_SYNC")]
    pub final_sync: Option<u8>,
    #[arg(long, env = "FINAL_SPREAD_S")]
    pub final_spread_s: Option<f64>,
    #[arg(long, env = "RAMP1_S")]
    pub ramp1_s: Option<f64>,
    #[arg(long, env = "HOLD1_S")]
    pub hold1_s: Option<f64>,
    #[arg(long, env = "RAMP2_S")]
    pub ramp2_s: Option<f64>,
    #[arg(long, env = "HOLD2_S")]
    pub hold2_s: Option<f64>,
}

fn parse_mix(s: &str) -> Result<(f64, f64), String> {
    let (share, size) = s
        .split_once(':')
        .ok_or("expected SHARE:SIZE, e.g. 0.3:20")?;
    let share: f64 = share
        .trim()
        .parse()
        .map_err(|_| format!("share {share:?} is not a number"))?;
    let size: f64 = size
        .trim()
        .parse()
        .map_err(|_| format!("size {size:?} is not a number"))?;
    Ok((share, size))
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Units(#[from] UnitsError),
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Shape(#[from] local_run::ShapeError),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl PlanArgs {
    pub fn workload(&self) -> Workload {
        let users = self.concurrent.map_or(self.users, |c| c / self.online);
        Workload {
            users,
            online: self.online,
            devices: self.devices,
            msgs_per_user_hour: self.msgs_per_user_hour,
            group_share: self.group_mix.0,
            group_size: self.group_mix.1,
            routing: self.routing,
            msg_bytes: self.msg_bytes,
            session_minutes: self.session_minutes,
            push_share: self.push_share,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            target_util: self.target_util,
            zones: self.zones,
            zone_loss_util: self.zone_loss_util,
            core_speed: self.core_speed,
            gateway_pod_cores: self.gateway_pod_cores,
            gateway_max_sockets: self.gateway_max_sockets,
            api_pod_cores: self.api_pod_cores,
            mysql_primary_cores: self.mysql_primary_cores,
            mysql_max_connections: self.mysql_max_connections,
            db_pool_per_pod: self.db_pool_per_pod,
            drain_secs: self.drain_secs,
            reconnect_window_s: self.reconnect_window_s,
            worker_concurrency: self.worker_concurrency,
            push_latency_s: self.push_latency_s,
            api_burst_mib: self.api_burst_mib,
        }
    }
}

impl RunArgs {
    pub fn shape(&self) -> Shape {
        let mut s = Shape::defaults(self.scenario, self.vus, self.gateways);
        let set = |slot: &mut f64, v: Option<f64>| {
            if let Some(v) = v {
                *slot = v;
            }
        };
        set(&mut s.ramp_s, self.ramp_s);
        set(&mut s.hold_s, self.hold_s);
        set(&mut s.settle_s, self.settle_s);
        set(&mut s.drain_s, self.drain_s);
        set(&mut s.send_every_s, self.send_every_s);
        set(&mut s.group_send_every_s, self.group_send_every_s);
        set(&mut s.group_size, self.group_size);
        set(&mut s.final_spread_s, self.final_spread_s);
        set(&mut s.ramp1_s, self.ramp1_s);
        set(&mut s.hold1_s, self.hold1_s);
        set(&mut s.ramp2_s, self.ramp2_s);
        set(&mut s.hold2_s, self.hold2_s);
        if let Some(f) = self.final_sync {
            s.final_sync = f != 0;
        }
        s
    }
}

/// Runs a parsed command line and returns what it prints.
pub fn run(cli: &Cli) -> Result<String, CliError> {
    let units = match &cli.units {
        Some(path) => Units::parse(
            &std::fs::read_to_string(path).map_err(|e| CliError::Read(path.clone(), e))?,
        )?,
        None => Units::built_in()?,
    };
    Ok(match &cli.command {
        Command::Plan(a) => {
            let p = plan::plan(&units, &a.workload(), &a.policy())?;
            if cli.json {
                serde_json::to_string_pretty(&p)? + "\n"
            } else {
                render::plan_text(&p)
            }
        }
        Command::K8s(a) => {
            let p = plan::plan(&units, &a.workload(), &a.policy())?;
            k8s::prod_patches(&p, &refresh_command())
        }
        Command::Run(a) => {
            let p = local_run::predict(&units, &a.shape())?;
            if cli.json {
                serde_json::to_string_pretty(&p)? + "\n"
            } else {
                render::prediction_text(&p)
            }
        }
        Command::Units => {
            if cli.json {
                serde_json::to_string_pretty(&units)? + "\n"
            } else {
                render::units_text(&units)
            }
        }
    })
}

/// The command that writes the prod overlay's patches.
pub fn refresh_command() -> String {
    format!(
        "make capacity-k8s   (cargo run -q -p chat-capacity -- {} > k8s/overlays/prod/capacity.yaml)",
        PROD_ARGS[1..].join(" ")
    )
}

#[cfg(test)]
mod tests;
