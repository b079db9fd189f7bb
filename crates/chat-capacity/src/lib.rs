//! chat-capacity: the capacity model of the chat backend (docs/capacity.md).
//!
//! - [`units`]: the measured unit costs (docs/capacity-units.toml), each with its command;
//! - [`plan`]: workload and headroom rules in, replicas, Redis shards, MySQL load, memory and
//!   egress out;
//! - [`local_run`]: the same units applied to a local load-driver run, to check the model;
//! - [`k8s`]: a plan as the prod overlay's kustomize patches;
//! - [`render`]: text output; [`cli`]: the command line.

pub mod cli;
pub mod k8s;
pub mod local_run;
pub mod plan;
pub mod render;
pub mod units;
