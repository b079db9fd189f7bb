//! Retry delays: the one exponential backoff with jitter that every retry loop of the services
//! uses (reconnecting, resubscribing, waiting for the database, retrying a push, ...).
//!
//! A delay starts at `first` and doubles with each retry up to `max`; each delay handed out is
//! drawn uniformly from the upper half of that value ("equal jitter": `[d/2, d]`), so the nodes
//! or workers that failed together do not all retry at the same instant, and no delay exceeds
//! `max`. The sequence comes from backon's `ExponentialBuilder`, whose jitter adds up to one
//! more delay on top (`[d, 2d)`): it is given half of `first` and `max`, and what it yields is
//! capped at `max` (its arithmetic is in `f32`, which may overshoot by a few nanoseconds).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Retries after this many have the same delay range as this one, whatever `first` and `max`:
/// doubling from a nanosecond reaches any `Duration` well before.
const DOUBLINGS: u64 = 128;

/// A backoff policy: the first delay and the cap. Cheap to copy; each retry loop asks it for its
/// own sequence ([`Backoff::delays`]), or for the delay of a given retry ([`Backoff::delay`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Delays from `first`, doubling up to `max`, each jittered into its upper half.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self { first, max }
    }

    /// An endless sequence of delays, starting from `first` again.
    pub fn delays(&self) -> Delays {
        let builder = ExponentialBuilder::new()
            .with_min_delay(self.first / 2)
            .with_max_delay(self.max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Delays {
            inner: builder.build(),
            max: self.max,
        }
    }

    /// The delay before retry number `retry` (1 for the first), for loops that keep the count
    /// elsewhere (a push job's attempts are counted in the bus, across workers).
    pub fn delay(&self, retry: u64) -> Duration {
        let skip = retry.saturating_sub(1).min(DOUBLINGS) as usize;
        self.delays().nth(skip).unwrap_or(self.max)
    }
}

/// The delays of one retry loop (see [`Backoff`]); never ends.
#[derive(Debug)]
pub struct Delays {
    inner: ExponentialBackoff,
    max: Duration,
}

impl Delays {
    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on retries the sequence does not end; `max` if it ever did.
        self.inner
            .next()
            .map_or(self.max, |delay| delay.min(self.max))
    }
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.next_delay())
    }
}

#[cfg(test)]
mod tests;
