//! Settings that cannot work together stop chat-api at start, with a message naming them,
//! before it touches the database.

use std::process::Command;

#[test]
fn send_writers_must_leave_connections_for_other_queries() {
    let output = Command::new(env!("CARGO_BIN_EXE_chat-api"))
        .env_clear()
        .env("DATABASE_URL", "mysql://root@127.0.0.1:1/never_contacted")
        .env("CHAT_SEND_WRITERS", "4")
        .env("CHAT_DB_MAX_CONNECTIONS", "4")
        .arg("--dev")
        .output()
        .expect("run chat-api");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "chat-api started: {stderr}");
    assert!(
        stderr.contains("CHAT_SEND_WRITERS (4) must be below CHAT_DB_MAX_CONNECTIONS (4)"),
        "stderr: {stderr}"
    );
}
