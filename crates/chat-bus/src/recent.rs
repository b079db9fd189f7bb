//! The recent-event log: per channel (a user's, a group chat's), the envelopes of the events a
//! sync returns (`new_message`, `message_updated`, `message_delivered`, `message_read`) that were
//! published there lately, scored by the event's time (the time its cursor is made from). A
//! gateway resuming a socket from a recent cursor reads its user's channel and groups here
//! instead of asking chat-api for a sync, which is four join queries on the database: when a
//! gateway dies, thousands of its clients resume at once.
//!
//! Written in the publish itself: one script per channel appends the envelope, trims the log and
//! then publishes it, atomically, so an envelope is in the log before any subscriber can have
//! received it; whatever a gateway missed before it subscribed is in the log. The log is
//! bounded by age (`CHAT_RECENT_LOG_SECS`, 120 s) and count (`CHAT_RECENT_LOG_MAX`, 1,000), and
//! a read answers "every such event from `from_ms` on" or "not covered" (then the caller asks
//! the database), never a partial list. What the log covers is kept beside it (the meta hash,
//! `Keys::recent_meta`):
//!
//! - `from`: complete from this ms on. A channel with no meta has had nothing logged since the
//!   store started (Redis's start, from its uptime; the memory bus's creation) or for
//!   [`META_TTL`], whichever is shorter: its log is complete, and empty, from then plus
//!   [`SKEW_MS`] (envelopes published before the start, to a Redis that has since lost them,
//!   have event times up to the clock difference past it). A new meta starts there too, so a
//!   new chat's first events are served from the log. This assumes every publisher writes the
//!   log: when it is first turned on, gateways read it only a window after the last chat-api
//!   without it stopped. Trimming raises `from`: by age to the cut-off, by count to just above
//!   the highest score trimmed.
//! - `last`: the highest score or write time the log saw. The entries expire `window` after
//!   the last write; once they are gone, nothing at or below `last` is there, so the log is
//!   complete from `last + 1` only.
//! - The meta lives a week after the last write; without it, the store-start rule above.
//!
//! A publish that failed (Redis unreachable) may have left an event out of its log: chat-api
//! then raises the log's `from` past that moment ([`Bus::invalidate_recent`], which writes a
//! meta if there is none), retrying for as long as the event could still be inside the window;
//! and a read never reaches back further than the window (the reader's clock), so once chat-api
//! stops retrying no read can need that event. chat-api and gateways must therefore agree on the
//! window. Gateways add one rule of their own: after
//! their subscription was lost and restored (a restart or failover that may have lost writes),
//! they trust the log only for cursors from the reconnection on.
//!
//! The memory backend keeps the same data in [`Logs`], the model the Redis scripts follow
//! (`redis/recent.rs`); its unit tests are the coverage rules' tests.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chat_proto::ServerEvent;

use crate::{Bus, ChatId, Result, Topic, UserId};

/// The clock difference between services and the database that coverage allows for: the same
/// as a cursor's overlap (`chat_proto::cursor::OVERLAP_MS`).
pub const SKEW_MS: i64 = chat_proto::cursor::OVERLAP_MS;

/// How long a log's meta outlives the channel's last write. A channel silent for longer is not
/// covered (its resume goes to the database) until its next event.
pub(crate) const META_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The log's bounds: how long and how many events it keeps per channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentLogConfig {
    pub window: Duration,
    pub max_len: u32,
}

impl Default for RecentLogConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(120),
            max_len: 1000,
        }
    }
}

impl RecentLogConfig {
    /// A zero window or count turns the log off.
    pub fn enabled(&self) -> bool {
        !self.window.is_zero() && self.max_len > 0
    }

    pub(crate) fn window_ms(&self) -> i64 {
        i64::try_from(self.window.as_millis()).unwrap_or(i64::MAX / 4)
    }
}

impl Bus {
    /// The log's bounds this bus was configured with.
    pub fn recent_log(&self) -> RecentLogConfig {
        self.recent
    }

    /// [`Bus::publish_to_users`] of a sync-visible event that happened at `at_ms` (the ms its
    /// cursor is made from), appended to each user's log first. With the log off, a plain
    /// publish.
    pub async fn publish_logged_to_users(
        &self,
        users: &[UserId],
        payload: &Bytes,
        at_ms: i64,
    ) -> Result<()> {
        if !self.recent.enabled() {
            return self.publish_to_users(users, payload).await;
        }
        if users.is_empty() {
            return Ok(());
        }
        let topics: Vec<Topic> = users.iter().map(|&user| Topic::User(user)).collect();
        self.publish_logged(&topics, payload, at_ms).await
    }

    /// [`Bus::publish_to_chat`] of a sync-visible event, appended to the chat's log first.
    pub async fn publish_logged_to_chat(
        &self,
        chat: ChatId,
        payload: &Bytes,
        at_ms: i64,
    ) -> Result<()> {
        if !self.recent.enabled() {
            return self.publish_to_chat(chat, payload).await;
        }
        self.publish_logged(&[Topic::Chat(chat)], payload, at_ms)
            .await
    }

    async fn publish_logged(&self, topics: &[Topic], payload: &Bytes, at_ms: i64) -> Result<()> {
        let started = std::time::Instant::now();
        self.backend
            .publish_logged(topics, payload, at_ms, now_ms(), self.recent)
            .await?;
        metrics::histogram!("chat_bus_publish_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("chat_bus_published_total").increment(topics.len() as u64);
        Ok(())
    }

    /// Marks the topics' logs incomplete before now (plus the clock allowance): after a publish
    /// to them failed, an event may be missing from them.
    pub async fn invalidate_recent(&self, topics: &[Topic]) -> Result<()> {
        if topics.is_empty() {
            return Ok(());
        }
        self.backend
            .invalidate_recent(topics, now_ms().saturating_add(SKEW_MS))
            .await
    }

    /// Every logged envelope (as published) of the user's channel and of these group chats'
    /// channels with an event time at or after `from_ms`, in no particular order; `None` when
    /// any of those logs does not cover everything since `from_ms`, when `from_ms` is older than
    /// the window (see the module docs: what a failed publish left out), or the log is off.
    pub async fn recent_events(
        &self,
        user: UserId,
        chats: &[ChatId],
        from_ms: i64,
    ) -> Result<Option<Vec<Bytes>>> {
        if !self.recent.enabled() || from_ms < now_ms().saturating_sub(self.recent.window_ms()) {
            return Ok(None);
        }
        let topics: Vec<Topic> = std::iter::once(Topic::User(user))
            .chain(chats.iter().map(|&chat| Topic::Chat(chat)))
            .collect();
        self.backend.recent(&topics, from_ms).await
    }

    /// The user's events from `from_ms` on, as a sync from that cursor would return them, read
    /// from the logs of their channel and of `chats` and replayed with [`replay`] (`in_group`:
    /// whether a group's events are still the user's). `None` when the logs do not cover
    /// `from_ms` or cannot be read: the caller asks the database instead.
    pub async fn replay_recent_events(
        &self,
        user: UserId,
        chats: &[ChatId],
        from_ms: i64,
        in_group: impl Fn(ChatId) -> bool,
    ) -> Option<Vec<ServerEvent>> {
        match self.recent_events(user, chats, from_ms).await {
            Ok(Some(entries)) => Some(replay(&entries, user, from_ms, in_group)),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, user, "reading the recent-event log failed");
                None
            }
        }
    }
}

/// Wall-clock ms since the Unix epoch (event times come from the database's clock, which the
/// services' clocks follow within [`SKEW_MS`]).
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The recent-event logs of the memory backend, and the model of the Redis scripts: the same
/// fields (`entries` is the sorted set, `from`/`last` the meta hash), the same steps.
pub(crate) struct Logs {
    logs: HashMap<Topic, ChannelLog>,
    sweep_above: usize,
    /// When the store started (wall-clock ms): nothing logged before it is kept.
    started_ms: i64,
    /// Monotonic twin of `started_ms`, for the metas' expiry.
    started: Instant,
}

impl Logs {
    /// Logs of a store that started at `started_ms`.
    pub(crate) fn started_at(started_ms: i64) -> Self {
        Self {
            logs: HashMap::new(),
            sweep_above: 0,
            started_ms,
            started: Instant::now(),
        }
    }

    /// Where a channel with no meta is complete from at `now_ms`: the store's start, or a meta
    /// lifetime ago once the store has lived that long (a meta outlives its channel's last
    /// write by that much), plus the clock allowance; never later than now plus the allowance.
    fn unwritten_from(&self, now_ms: i64) -> i64 {
        let since = if self.started.elapsed() < META_TTL {
            self.started_ms
        } else {
            let meta_ttl = i64::try_from(META_TTL.as_millis()).unwrap_or(i64::MAX);
            self.started_ms.max(now_ms.saturating_sub(meta_ttl))
        };
        since.min(now_ms).saturating_add(SKEW_MS)
    }
}

struct ChannelLog {
    /// By score, then by bytes (a sorted set's order); each payload once.
    entries: Vec<(i64, Bytes)>,
    from: i64,
    last: i64,
    /// Wall-clock ms at which the entries expire (a PEXPIRE of the window at each write).
    entries_expire: i64,
    /// Monotonic deadline of the meta (a PEXPIRE of [`META_TTL`] at each write).
    meta_expires: Instant,
}

impl ChannelLog {
    /// The meta, or `None` once it expired.
    fn live(&self, now: Instant) -> bool {
        self.meta_expires > now
    }

    /// `from`, raised to `last + 1` when the entries expired.
    fn complete_from(&self, now_ms: i64) -> i64 {
        if now_ms >= self.entries_expire {
            self.from.max(self.last.saturating_add(1))
        } else {
            self.from
        }
    }
}

impl Logs {
    /// Appends `payload` (event time `at_ms`) to the topic's log at `now_ms` and trims it.
    pub(crate) fn write(
        &mut self,
        topic: Topic,
        payload: &Bytes,
        at_ms: i64,
        now_ms: i64,
        config: RecentLogConfig,
    ) {
        let now = Instant::now();
        let window = config.window_ms();
        let log = self.live_meta(topic, now, now_ms);
        if now_ms >= log.entries_expire {
            log.from = log.complete_from(now_ms);
            log.entries.clear();
        }
        log.entries.retain(|(_, bytes)| bytes != payload);
        let at = log
            .entries
            .partition_point(|(score, bytes)| (*score, bytes) < (at_ms, payload));
        log.entries.insert(at, (at_ms, payload.clone()));
        let cutoff = now_ms.saturating_sub(window);
        let old = log.entries.partition_point(|(score, _)| *score < cutoff);
        if old > 0 {
            log.entries.drain(..old);
            log.from = log.from.max(cutoff);
        }
        let excess = log.entries.len().saturating_sub(config.max_len as usize);
        if excess > 0 {
            let highest = log.entries[excess - 1].0;
            log.entries.drain(..excess);
            log.from = log.from.max(highest.saturating_add(1));
        }
        log.last = log.last.max(at_ms).max(now_ms);
        log.entries_expire = now_ms.saturating_add(window);
        log.meta_expires = now + META_TTL;
        self.sweep(now);
    }

    /// Raises the topic's `from` to `floor_ms`, writing a meta if there is none (a channel with
    /// no meta counts as complete from the store's start).
    pub(crate) fn invalidate(&mut self, topic: Topic, floor_ms: i64, now_ms: i64) {
        let now = Instant::now();
        let log = self.live_meta(topic, now, now_ms);
        log.from = log.from.max(floor_ms);
        log.meta_expires = now + META_TTL;
    }

    /// The topic's log, a new one (complete from `unwritten_from`) if it had none or its meta
    /// expired: what a script's first `HGET` of the meta decides.
    fn live_meta(&mut self, topic: Topic, now: Instant, now_ms: i64) -> &mut ChannelLog {
        let fresh_from = self.unwritten_from(now_ms);
        self.logs
            .entry(topic)
            .and_modify(|log| {
                if !log.live(now) {
                    *log = ChannelLog::new(fresh_from);
                }
            })
            .or_insert_with(|| ChannelLog::new(fresh_from))
    }

    /// The topic's entries scored `from_ms` or later, or `None` if the log does not cover all
    /// of them.
    pub(crate) fn read(&self, topic: Topic, from_ms: i64, now_ms: i64) -> Option<Vec<Bytes>> {
        let Some(log) = self.logs.get(&topic).filter(|log| log.live(Instant::now())) else {
            return (from_ms >= self.unwritten_from(now_ms)).then(Vec::new);
        };
        if from_ms < log.complete_from(now_ms) {
            return None;
        }
        if now_ms >= log.entries_expire {
            return Some(Vec::new());
        }
        let start = log.entries.partition_point(|(score, _)| *score < from_ms);
        Some(
            log.entries[start..]
                .iter()
                .map(|(_, b)| b.clone())
                .collect(),
        )
    }

    /// Drops expired logs whenever the map has doubled since the last sweep.
    fn sweep(&mut self, now: Instant) {
        if self.logs.len() > self.sweep_above.max(1024) {
            self.logs.retain(|_, log| log.live(now));
            self.sweep_above = self.logs.len() * 2;
        }
    }
}

impl ChannelLog {
    /// A new meta, complete from `from` (`Logs::unwritten_from`).
    fn new(from: i64) -> Self {
        Self {
            entries: Vec::new(),
            from,
            last: 0,
            entries_expire: i64::MAX,
            meta_expires: Instant::now() + META_TTL,
        }
    }
}

mod replay;
pub use replay::replay;

#[cfg(test)]
mod tests;
