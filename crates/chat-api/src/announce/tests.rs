//! When a sync may be answered from the recent-event log: only on a fresh, clear sweep and with
//! no late publish of this replica's own.

use std::sync::atomic::Ordering;

use super::Announcer;

const NOW: i64 = 1_700_000_000_000;

#[test]
fn a_replica_that_never_swept_does_not_trust_the_log() {
    assert!(!Announcer::new().log_sync_safe(NOW));
}

#[test]
fn a_clear_sweep_is_trusted_for_three_intervals() {
    let announcer = Announcer::new();
    announcer.note_sweep(true, NOW);
    assert!(announcer.log_sync_safe(NOW));
    assert!(announcer.log_sync_safe(NOW + 1_500));
    assert!(
        !announcer.log_sync_safe(NOW + 1_501),
        "a sweep that stopped reaching Redis says nothing"
    );
}

#[test]
fn a_sweep_that_found_a_late_publish_or_a_dead_replica_is_not_trusted() {
    let announcer = Announcer::new();
    announcer.note_sweep(true, NOW);
    announcer.note_sweep(false, NOW + 500);
    assert!(!announcer.log_sync_safe(NOW + 500));
}

#[test]
fn a_late_publish_here_is_not_trusted_before_the_next_sweep() {
    let announcer = Announcer::new();
    announcer.note_sweep(true, NOW);
    announcer.late_here.fetch_add(1, Ordering::AcqRel);
    assert!(!announcer.log_sync_safe(NOW));
    announcer.late_here.fetch_sub(1, Ordering::AcqRel);
    assert!(announcer.log_sync_safe(NOW));
}
