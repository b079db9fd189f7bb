//! How times and out-of-range ids are bound.

use super::*;

#[test]
fn sqlite_times_keep_three_fraction_digits_and_sort_as_text() {
    let whole = chrono::DateTime::from_timestamp_millis(1_700_000_000_000).expect("valid");
    let later = chrono::DateTime::from_timestamp_millis(1_700_000_000_007).expect("valid");
    assert_eq!(Stamp(whole).text(), "2023-11-14 22:13:20.000");
    assert_eq!(Stamp(later).text(), "2023-11-14 22:13:20.007");
    assert!(Stamp(whole).text() < Stamp(later).text());
}

#[test]
fn out_of_range_values_never_panic() {
    assert_eq!(key(u64::MAX), -1);
    assert_eq!(key(7), 7);
    assert_eq!(bound(u64::MAX), i64::MAX);
    assert_eq!(bound(5), 5);
}
