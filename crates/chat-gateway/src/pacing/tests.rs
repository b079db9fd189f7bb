use std::time::{Duration, Instant};

use super::*;

#[tokio::test]
async fn a_turn_waits_for_a_free_one_and_gives_up_at_the_deadline() {
    let pacing = Pacing::new(1, Duration::from_millis(50));
    let held = pacing
        .turn(Instant::now() + pacing.deadline())
        .await
        .expect("a free turn");
    let started = Instant::now();
    assert!(
        pacing
            .turn(Instant::now() + pacing.deadline())
            .await
            .is_none(),
        "the only turn is taken"
    );
    assert!(started.elapsed() >= Duration::from_millis(50));
    drop(held);
    assert!(
        pacing
            .turn(Instant::now() + pacing.deadline())
            .await
            .is_some(),
        "free again"
    );
}

#[test]
fn a_retry_waits_for_retry_after_plus_jitter_and_never_past_the_deadline() {
    let now = Instant::now();
    let far = now + Duration::from_secs(600);
    let mut jitter = super::jitter();
    let first = retry_wait(Some(Duration::from_secs(2)), &mut jitter, now, far).expect("in time");
    assert!(
        (Duration::from_millis(2_125)..=Duration::from_millis(2_250)).contains(&first),
        "{first:?}"
    );
    // No Retry-After: the jitter alone.
    let second = retry_wait(None, &mut jitter, now, far).expect("in time");
    assert!(
        (Duration::from_millis(250)..=Duration::from_millis(500)).contains(&second),
        "{second:?}"
    );
    // An absurd Retry-After is cut.
    let long = retry_wait(Some(Duration::from_secs(3_600)), &mut jitter, now, far).expect("cut");
    assert!(long <= MAX_RETRY_AFTER + Duration::from_secs(4), "{long:?}");
    // Past the deadline: no retry.
    assert_eq!(
        retry_wait(
            Some(Duration::from_secs(1)),
            &mut jitter,
            now,
            now + Duration::from_secs(1)
        ),
        None
    );
}
