//! Sync cursors: an opaque `c<ms>` naming "events from this instant (UTC ms) on".
//!
//! An event's own cursor lies `OVERLAP_MS` before the event, so a sync from it repeats up to
//! that much history: enough to cover transactions that took their timestamp before a later one
//! but committed after it, and clock differences between database and services. Repeats are
//! dropped by message id; nothing committed after a cursor can be missing.

use std::fmt;

/// How far before an event its cursor points.
pub const OVERLAP_MS: i64 = 5_000;
/// Accepted clock difference for cursors that look like they are from the future.
pub const FUTURE_SKEW_MS: i64 = 60_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Sync from this instant, inclusive (ms since the Unix epoch).
    pub from_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is malformed")]
    Malformed,
    #[error("cursor is from the future")]
    FromTheFuture,
}

impl Cursor {
    pub fn at(from_ms: i64) -> Self {
        Self {
            from_ms: from_ms.max(0),
        }
    }

    /// The cursor to store after processing an event that happened at `event_ms`.
    pub fn after_event(event_ms: i64) -> Self {
        Self::at(event_ms.saturating_sub(OVERLAP_MS))
    }

    /// Parses a client's cursor, refusing garbage and cursors from the future.
    pub fn parse(raw: &str, now_ms: i64) -> Result<Self, CursorError> {
        let digits = raw.strip_prefix('c').ok_or(CursorError::Malformed)?;
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CursorError::Malformed);
        }
        let from_ms: i64 = digits.parse().map_err(|_| CursorError::Malformed)?;
        if from_ms > now_ms.saturating_add(FUTURE_SKEW_MS) {
            return Err(CursorError::FromTheFuture);
        }
        Ok(Self { from_ms })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{}", self.from_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extreme_clocks_do_not_overflow() {
        // Found by the `cursor` fuzz target: `now + skew` overflowed.
        assert_eq!(Cursor::parse("c0", i64::MAX), Ok(Cursor::at(0)));
        assert_eq!(Cursor::after_event(i64::MIN), Cursor::at(0));
    }

    #[test]
    fn round_trip_and_overlap() {
        let cursor = Cursor::after_event(1_000_000);
        assert_eq!(cursor.to_string(), "c995000");
        assert_eq!(Cursor::parse("c995000", 2_000_000), Ok(cursor));
        assert_eq!(Cursor::parse("c0", 0), Ok(Cursor::at(0)));
        assert_eq!(Cursor::after_event(10).from_ms, 0);
    }

    #[test]
    fn garbage_and_future_are_refused() {
        for raw in [
            "",
            "c",
            "995000",
            "c-1",
            "c12x",
            "C1",
            "c1234567890123456",
            " c1",
        ] {
            assert_eq!(
                Cursor::parse(raw, 0),
                Err(CursorError::Malformed),
                "{raw:?}"
            );
        }
        assert_eq!(
            Cursor::parse("c200000", 100_000),
            Err(CursorError::FromTheFuture)
        );
        assert!(Cursor::parse("c150000", 100_000).is_ok());
    }
}
