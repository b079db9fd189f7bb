//! Cutting a sync slice at a whole millisecond.

use super::*;

fn read_at(ms: i64, user: u64) -> SyncEvent {
    SyncEvent::Read {
        chat_id: 1,
        user_id: user,
        up_to_seq: 1,
        at: chrono::DateTime::from_timestamp_millis(ms).expect("valid"),
    }
}

#[test]
fn untruncated_slices_are_complete() {
    let slice = cut_at_whole_millisecond(vec![read_at(1, 1), read_at(2, 1)], 5, false);
    assert_eq!(slice.events.len(), 2);
    assert_eq!(slice.more_from, None);
}

#[test]
fn a_slice_never_splits_a_millisecond() {
    let events = vec![read_at(1, 1), read_at(2, 1), read_at(2, 2), read_at(3, 1)];
    let slice = cut_at_whole_millisecond(events, 2, true);
    assert_eq!(slice.events, vec![read_at(1, 1)]);
    assert_eq!(slice.more_from.map(|t| t.timestamp_millis()), Some(2));
}

#[test]
fn a_crowded_millisecond_is_handed_out_whole() {
    let events = vec![read_at(5, 1), read_at(5, 2), read_at(5, 3)];
    let slice = cut_at_whole_millisecond(events, 2, true);
    assert_eq!(slice.events.len(), 3);
    assert_eq!(slice.more_from.map(|t| t.timestamp_millis()), Some(6));
}
