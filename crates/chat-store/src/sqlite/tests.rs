//! Which URLs open SQLite.

use super::*;

#[test]
fn only_sqlite_urls_pick_sqlite() {
    assert!(is_sqlite_url("sqlite://data/chat.db"));
    assert!(!is_sqlite_url("mysql://root@127.0.0.1/chat"));
}
