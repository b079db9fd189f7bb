//! chat-load: a load driver for the chat backend that speaks only the public contract
//! (docs/protocol.md) and costs little enough per session that a run on the machine under test
//! measures the services, not the driver.
//!
//! Components:
//! - [`args`]: the command line (every flag has an environment twin named as in the k6 scripts);
//! - [`plan`]: the k6 executors' shapes (ramping VUs, ramping arrival rate), default durations,
//!   and the split of users over gateways, source addresses and worker processes;
//! - [`ws`] and [`conn`]: one WebSocket client socket (TCP from a chosen source address, the
//!   upgrade, fastwebsockets frames) with a cancel-safe receive;
//! - [`frames`]: the protocol frames read and written;
//! - [`scenario`]: churn, chat (and storm), connect, each one socket task per user or session;
//! - [`worker`]: a worker process (one thread) running its share, reporting a [`metrics::Tick`]
//!   every second on stdout;
//! - [`coordinator`]: starts the workers, aggregates ([`aggregate`]), prints progress, kills the
//!   storm's gateway, and writes the k6-compatible results ([`report`]);
//! - [`probe`]: the services' own counters around the storm (sync requests, replays by source).

pub mod aggregate;
pub mod args;
pub mod conn;
pub mod coordinator;
pub mod ctx;
pub mod frames;
pub mod metrics;
pub mod plan;
pub mod probe;
pub mod report;
pub mod scenario;
pub mod worker;
pub mod ws;
