//! Integration test kit for the chat backend.
//!
//! Tests built on this crate run the real binaries against real MariaDB and Redis:
//!
//! - [`TestDb`] creates a fresh database per test and drops it afterwards;
//! - [`Stack`] starts one `chat-api` and N `chat-gateway` processes on free ports, with a unique
//!   Redis prefix and JWT secret, and kills them when dropped;
//! - [`PushReceiver`] stands in for the push provider that chat-worker posts to;
//! - [`ApiClient`] is a thin HTTP client returning `(status, json)`;
//! - [`metrics_page`] and [`metric_value`] read a process's `/metrics` page;
//! - [`WsClient`] is a WebSocket client built on `tokio-tungstenite`, an implementation
//!   independent of the gateway's own, speaking JSON or MessagePack.
//!
//! The kit never skips: if MariaDB, Redis or a binary is missing, it panics with a message saying
//! what to start or build.
//!
//! Running the suite (the tests spawn the binaries, they do not build them):
//!
//! ```text
//! cargo build --workspace --bins
//! cargo test -p chat-testkit -- --test-threads=4
//! ```
//!
//! A failing test prints the tail of every process log of its stack and keeps the logs under
//! `$TMPDIR/chat-testkit/<database>-<prefix>/`.
//!
//! Environment overrides: `CHAT_BIN_DIR` (where `chat-api` and `chat-gateway` are),
//! `CHAT_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306`), `CHAT_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`), `CHAT_TEST_KEEP_LOGS=1` (keep the process logs of passing tests).

mod api;
pub mod chaos;
mod db;
mod metrics;
mod names;
mod ports;
mod process;
mod proxy;
mod push_receiver;
pub mod raw;
pub mod redis_target;
mod stack;
mod token;
mod ws;

pub use api::{ApiClient, Resp, TEST_PASSWORD, TestUser, assert_error, assert_status};
pub use db::{TestDb, mysql_admin_url};
pub use metrics::{metric_value, metrics_page};
pub use names::{unique_client_msg_id, unique_username};
pub use proxy::{CommitTrap, TcpProxy};
pub use push_receiver::{PushReceiver, Received};
pub use redis_target::{RedisMode, RedisTarget};
pub use stack::{Stack, StackOptions};
pub use token::{
    TokenSpec, alg_none_token, custom_token, expired_token, forged_token, mint_token, rs256_token,
    service_token,
};
pub use ws::{Auth, Format, Frame, WsClient, is_msgpack_map};

pub use serde_json::{Value, json};

use std::time::Duration;

/// How long to wait for a frame or state change that should come.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long to keep listening to be sure that a frame does not come (a duplicate, an early
/// event).
pub const QUIET: Duration = Duration::from_millis(800);

/// Asserts that `value` is a time in the contract's format: RFC 3339, UTC, with milliseconds
/// (`2026-11-24T08:29:18.123Z`).
pub fn assert_time(value: &Value, what: &str) {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a time string, got {value}"));
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let ok = bytes.len() == 24
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && bytes[19] == b'.'
        && digits(20..23)
        && bytes[23] == b'Z';
    assert!(
        ok,
        "{what}: expected RFC 3339 UTC with milliseconds like 2026-11-24T08:29:18.123Z, got {text:?}"
    );
}

/// Reads `value[key]` as an id (a JSON integer), panicking with the whole value if it is not one.
/// Environment pairs for `StackOptions::api_env` / `gateway_env` / `worker_env`.
pub fn env_vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn id_of(value: &Value, key: &str) -> u64 {
    value
        .get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("expected an integer `{key}` in {value}"))
}

/// Asserts that `value` is an object holding at least these keys. Extra keys are allowed: the
/// contract lets the server add fields, never drop or rename them.
pub fn assert_has_keys(value: &Value, expected: &[&str], what: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{what}: expected an object, got {value}"));
    let missing: Vec<&str> = expected
        .iter()
        .copied()
        .filter(|k| !object.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: missing keys {missing:?} in {value}"
    );
}
