//! The coverage rules of the recent-event log, on the memory model the Redis scripts follow.

use std::time::Duration;

use bytes::Bytes;

use super::{Logs, RecentLogConfig, SKEW_MS};
use crate::Topic;

const T: i64 = 1_700_000_000_000;
const ME: Topic = Topic::User(42);

fn config(window_secs: u64, max_len: u32) -> RecentLogConfig {
    RecentLogConfig {
        window: Duration::from_secs(window_secs),
        max_len,
    }
}

fn entry(n: i64) -> Bytes {
    Bytes::from(format!("event {n}"))
}

#[test]
fn a_new_log_covers_from_its_first_write_plus_the_clock_allowance() {
    let mut logs = Logs::started_at(T);
    assert_eq!(logs.read(ME, T, T), None, "no log: not covered");
    logs.write(ME, &entry(1), T, T, config(120, 10));
    assert_eq!(
        logs.read(ME, T, T),
        None,
        "before the allowance: not covered"
    );
    assert_eq!(logs.read(ME, T + SKEW_MS, T + 1), Some(vec![]));
    logs.write(
        ME,
        &entry(2),
        T + SKEW_MS + 10,
        T + SKEW_MS + 10,
        config(120, 10),
    );
    assert_eq!(
        logs.read(ME, T + SKEW_MS, T + SKEW_MS + 20),
        Some(vec![entry(2)])
    );
    assert_eq!(
        logs.read(Topic::Chat(42), T + SKEW_MS - 1, T),
        None,
        "another topic, before the store's start plus the allowance"
    );
}

#[test]
fn a_channel_never_written_is_complete_and_empty_from_the_store_start() {
    let logs = Logs::started_at(T);
    let later = T + 60_000;
    assert_eq!(logs.read(ME, T + SKEW_MS - 1, later), None);
    assert_eq!(logs.read(ME, T + SKEW_MS, later), Some(vec![]));
}

#[test]
fn a_new_channels_first_events_are_served_for_cursors_since_the_store_start() {
    let mut logs = Logs::started_at(T - 60_000);
    logs.write(ME, &entry(1), T, T, config(120, 10));
    assert_eq!(logs.read(ME, T - 30_000, T + 1), Some(vec![entry(1)]));
    assert_eq!(
        logs.read(ME, T - 60_000 + SKEW_MS - 1, T + 1),
        None,
        "before the store started (plus the allowance)"
    );
}

#[test]
fn count_trims_raise_complete_from_above_the_trimmed() {
    let mut logs = Logs::started_at(T);
    let start = T + SKEW_MS;
    logs.write(ME, &entry(0), T, T, config(120, 3));
    for n in 1..=5 {
        logs.write(ME, &entry(n), start + n, start + n, config(120, 3));
    }
    // Entries 0..=2 were trimmed; the highest trimmed score was start + 2.
    assert_eq!(logs.read(ME, start + 2, start + 10), None);
    assert_eq!(
        logs.read(ME, start + 3, start + 10),
        Some(vec![entry(3), entry(4), entry(5)])
    );
    assert_eq!(logs.read(ME, start + 5, start + 10), Some(vec![entry(5)]));
}

#[test]
fn age_trims_raise_complete_from_to_the_cut_off() {
    let mut logs = Logs::started_at(T);
    let start = T + SKEW_MS;
    logs.write(ME, &entry(0), T, T, config(120, 100));
    logs.write(ME, &entry(1), start, start, config(120, 100));
    let later = start + 100_000;
    logs.write(ME, &entry(2), later, later, config(60, 100));
    // The second write's window (60 s) trimmed everything before later - 60 s.
    assert_eq!(logs.read(ME, start, later), None);
    assert_eq!(logs.read(ME, later - 60_000, later), Some(vec![entry(2)]));
    // An event older than the window is trimmed as it is written.
    logs.write(ME, &entry(3), T, later + 1, config(60, 100));
    assert_eq!(
        logs.read(ME, later - 59_999, later + 1),
        Some(vec![entry(2)])
    );
    assert_eq!(logs.read(ME, later - 60_000, later + 1), None);
}

#[test]
fn expired_entries_leave_coverage_from_the_last_write_on() {
    let mut logs = Logs::started_at(T);
    let start = T + SKEW_MS;
    logs.write(ME, &entry(0), T, T, config(120, 100));
    logs.write(ME, &entry(1), start + 50, start + 40, config(120, 100));
    let expired = start + 40 + 120_000;
    assert_eq!(logs.read(ME, start, expired - 1), Some(vec![entry(1)]));
    // Gone with its entries: covered only above the last score/write time seen.
    assert_eq!(logs.read(ME, start, expired), None);
    assert_eq!(logs.read(ME, start + 50, expired), None);
    assert_eq!(logs.read(ME, start + 51, expired), Some(vec![]));
    // A write after the expiry keeps that floor.
    logs.write(ME, &entry(2), expired + 5, expired + 5, config(120, 100));
    assert_eq!(logs.read(ME, start + 50, expired + 6), None);
    assert_eq!(logs.read(ME, start + 51, expired + 6), Some(vec![entry(2)]));
}

#[test]
fn invalidation_raises_complete_from_and_writes_a_meta() {
    let mut logs = Logs::started_at(T);
    let start = T + SKEW_MS;
    logs.write(ME, &entry(0), T, T, config(120, 100));
    logs.write(ME, &entry(1), start + 10, start + 10, config(120, 100));
    logs.invalidate(ME, start + 1_000, start + 20);
    assert_eq!(logs.read(ME, start, start + 20), None);
    assert_eq!(logs.read(ME, start + 1_000, start + 20), Some(vec![]));
    // Never lowered.
    logs.invalidate(ME, start, start + 20);
    assert_eq!(logs.read(ME, start + 999, start + 20), None);
    // A channel never written gets a meta: without one it would count as complete from the
    // store's start.
    let other = Topic::Chat(7);
    assert_eq!(logs.read(other, start, start + 20), Some(vec![]));
    logs.invalidate(other, start + 500, start + 20);
    assert_eq!(logs.read(other, start, start + 20), None);
    assert_eq!(logs.read(other, start + 500, start + 20), Some(vec![]));
}

#[test]
fn entries_come_in_score_order_and_once() {
    let mut logs = Logs::started_at(T);
    let start = T + SKEW_MS;
    logs.write(ME, &entry(0), T, T, config(120, 100));
    logs.write(ME, &entry(2), start + 20, start + 20, config(120, 100));
    logs.write(ME, &entry(1), start + 10, start + 21, config(120, 100));
    logs.write(ME, &entry(1), start + 10, start + 22, config(120, 100));
    assert_eq!(
        logs.read(ME, start, start + 30),
        Some(vec![entry(1), entry(2)])
    );
}
