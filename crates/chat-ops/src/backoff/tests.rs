//! The backoff policy: the range of each delay, the cap, the spread, and fresh sequences.

use std::time::Duration;

use super::Backoff;

const FIRST: Duration = Duration::from_millis(50);
const MAX: Duration = Duration::from_secs(2);
/// What backon's `f32` arithmetic may lose below a bound.
const SLACK: Duration = Duration::from_micros(1);

/// The value the `retry`th delay is jittered from.
fn undithered(retry: u32) -> Duration {
    FIRST
        .saturating_mul(2u32.saturating_pow(retry - 1))
        .min(MAX)
}

#[test]
fn each_delay_is_in_the_upper_half_of_a_doubling_value_capped_at_max() {
    for _ in 0..200 {
        let mut delays = Backoff::new(FIRST, MAX).delays();
        for retry in 1..=12 {
            let delay = delays.next_delay();
            let full = undithered(retry);
            assert!(delay <= full, "retry {retry}: {delay:?} above {full:?}");
            assert!(
                delay + SLACK >= full / 2,
                "retry {retry}: {delay:?} below half of {full:?}"
            );
        }
    }
}

#[test]
fn no_delay_exceeds_max_whatever_the_count() {
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
    for retry in [1, 2, 3, 4, 5, 30, 64, 1000, u64::MAX] {
        for _ in 0..100 {
            let delay = backoff.delay(retry);
            assert!(delay <= Duration::from_millis(400), "{retry}: {delay:?}");
            assert!(
                delay + SLACK >= Duration::from_millis(50),
                "{retry}: {delay:?}"
            );
        }
    }
    // A first delay above the cap is capped too.
    let inverted = Backoff::new(Duration::from_secs(10), Duration::from_secs(1));
    assert!(
        inverted
            .delays()
            .take(5)
            .all(|d| d <= Duration::from_secs(1))
    );
}

#[test]
fn delays_are_spread_not_fixed() {
    let backoff = Backoff::new(FIRST, MAX);
    // At the cap: uniform in [1 s, 2 s]. 200 draws all in one half would be a broken jitter.
    let capped: Vec<Duration> = (0..200).map(|_| backoff.delay(20)).collect();
    let low = capped
        .iter()
        .filter(|d| **d < Duration::from_millis(1500))
        .count();
    assert!(
        (20..=180).contains(&low),
        "{low} of 200 capped delays below 1.5 s"
    );
    let first: Vec<Duration> = (0..200).map(|_| backoff.delay(1)).collect();
    assert!(
        first.iter().any(|d| *d != first[0]),
        "the first delay is jittered too"
    );
}

#[test]
fn a_numbered_retry_matches_the_sequence_and_a_new_sequence_starts_over() {
    let backoff = Backoff::new(FIRST, MAX);
    for retry in 1..=8u32 {
        let full = undithered(retry);
        let delay = backoff.delay(u64::from(retry));
        assert!(
            delay <= full && delay + SLACK >= full / 2,
            "{retry}: {delay:?}"
        );
    }
    // Retry 0 is read as the first.
    assert!(backoff.delay(0) <= FIRST);
    let mut used = backoff.delays();
    for _ in 0..10 {
        used.next_delay();
    }
    assert!(backoff.delays().next_delay() <= FIRST);
}
