//! The push job stream in memory, with the parts of Redis Streams that chat-worker relies on
//! (`redis/jobs.rs`): entry ids `<ms>-<seq>` that only grow, trimming to a maximum length, one
//! consumer group with a last-delivered id and a pending entries list (owner, delivery time,
//! delivery count), XREADGROUP `>` with a blocking wait, XAUTOCLAIM with a cursor, XCLAIM JUSTID,
//! XACK, the dead-letter stream, and the "done" and "tries" keys with their TTLs.
//!
//! Reading blocks on a [`Notify`] that every enqueue wakes, so an idle worker costs nothing and
//! a new job is handed out at once.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chat_proto::PushJob;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{Expiring, MemoryBus, deadline, now};
use crate::backend::{JobsBackend, PushReader, Reclaimed};
use crate::jobs::encode;
use crate::{BusError, DeadLetter, Delivery, PushStats, Result};

#[derive(Default)]
pub(crate) struct Jobs {
    stream: Mutex<Stream>,
    /// Woken by every enqueue, for readers blocked in [`Jobs::read_new`].
    added: Notify,
    done: Mutex<Expiring<String, ()>>,
    tries: Mutex<Expiring<String, u64>>,
}

/// A stream entry id; ordered like Redis orders them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
struct EntryId {
    ms: u64,
    seq: u64,
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

impl EntryId {
    /// Parses `<ms>-<seq>` or `<ms>` (which Redis reads as `<ms>-0`).
    fn parse(raw: &str) -> Result<Self> {
        let invalid = || {
            BusError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "Invalid stream ID specified as stream command argument",
                raw.to_string(),
            )))
        };
        let (ms, seq) = raw.split_once('-').unwrap_or((raw, "0"));
        Ok(Self {
            ms: ms.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

#[derive(Default)]
struct Stream {
    /// Oldest first; ids strictly increasing.
    entries: VecDeque<(EntryId, Delivery)>,
    last_id: EntryId,
    /// Entries ever added (Redis' `entries-added`), for the lag.
    entries_added: u64,
    group: Option<Group>,
    dead: Vec<DeadLetter>,
}

struct Group {
    last_delivered: EntryId,
    /// Redis' `entries-read`: how many entries of the stream's history the group has read past.
    entries_read: u64,
    pending: BTreeMap<EntryId, Pending>,
}

struct Pending {
    consumer: String,
    delivered: Instant,
}

/// What Redis answers to a group command on a stream without the group; chat-worker recognises
/// "NOGROUP" and creates the group again.
fn no_group() -> BusError {
    BusError::Redis(redis::RedisError::from((
        redis::ErrorKind::Client,
        "NOGROUP",
        "no push consumer group; push_ensure_group creates it".to_string(),
    )))
}

/// The entry with this id, if it was not trimmed away.
fn find(entries: &VecDeque<(EntryId, Delivery)>, id: EntryId) -> Option<&Delivery> {
    let at = entries.binary_search_by_key(&id, |(e, _)| *e).ok()?;
    entries.get(at).map(|(_, delivery)| delivery)
}

/// The next id after `last` at wall-clock `now_ms` (XADD `*`): the time part never goes back.
fn next_id(last: EntryId, now_ms: u64) -> EntryId {
    if now_ms > last.ms {
        EntryId { ms: now_ms, seq: 0 }
    } else {
        EntryId {
            ms: last.ms,
            seq: last.seq.saturating_add(1),
        }
    }
}

impl Stream {
    fn group(&mut self) -> Result<&mut Group> {
        self.group.as_mut().ok_or_else(no_group)
    }

    fn contains(&self, id: EntryId) -> bool {
        find(&self.entries, id).is_some()
    }

    /// Index of the first entry after `id`.
    fn after(&self, id: EntryId) -> usize {
        self.entries.partition_point(|(e, _)| *e <= id)
    }

    /// XREADGROUP … `>`: up to `count` (0: all) entries past the group's last-delivered id,
    /// now pending for `consumer`.
    fn read_new(&mut self, consumer: &str, count: usize, now: Instant) -> Result<Vec<Delivery>> {
        let last = self.group()?.last_delivered;
        let start = self.after(last);
        let end = if count == 0 {
            self.entries.len()
        } else {
            start.saturating_add(count).min(self.entries.len())
        };
        let read: Vec<(EntryId, Delivery)> = self.entries.range(start..end).cloned().collect();
        let unread_after = self.entries.len() - end;
        let entries_added = self.entries_added;
        let group = self.group()?;
        for (id, _) in &read {
            group.last_delivered = *id;
            group.pending.insert(
                *id,
                Pending {
                    consumer: consumer.to_string(),
                    delivered: now,
                },
            );
        }
        if !read.is_empty() {
            group.entries_read = entries_added - unread_after as u64;
        }
        Ok(read.into_iter().map(|(_, delivery)| delivery).collect())
    }
}

impl Jobs {
    /// XADD with `MAXLEN`: appends, then trims the oldest entries beyond `max_len` (exactly;
    /// Redis' `~` may keep a few more). Pending entries that get trimmed stay pending, as in
    /// Redis, until acknowledged or found gone by a reclaim.
    pub(crate) fn enqueue(&self, deliveries: Vec<Delivery>, max_len: u64, now_ms: u64) {
        if deliveries.is_empty() {
            return;
        }
        {
            let mut stream = self.stream.lock();
            for mut delivery in deliveries {
                let id = next_id(stream.last_id, now_ms);
                stream.last_id = id;
                stream.entries_added += 1;
                delivery.entry_id = id.to_string();
                stream.entries.push_back((id, delivery));
                while stream.entries.len() as u64 > max_len {
                    stream.entries.pop_front();
                }
            }
        }
        self.added.notify_waiters();
    }

    /// XGROUP CREATE … 0 MKSTREAM, keeping an existing group.
    pub(crate) fn ensure_group(&self) {
        let mut stream = self.stream.lock();
        if stream.group.is_none() {
            stream.group = Some(Group {
                last_delivered: EntryId::default(),
                entries_read: 0,
                pending: BTreeMap::new(),
            });
        }
    }

    /// XREADGROUP with BLOCK: returns what is there, or waits until an enqueue brings something
    /// or `block` passes (a zero `block` does not wait).
    pub(crate) async fn read_new(
        &self,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Delivery>> {
        let until = deadline(Instant::now(), block);
        loop {
            // Registered before looking, so an enqueue between the look and the wait still
            // wakes this reader.
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let read = self
                .stream
                .lock()
                .read_new(consumer, count, Instant::now())?;
            if !read.is_empty() || block.is_zero() {
                return Ok(read);
            }
            // Another reader may take what woke us: then look again until the deadline.
            if tokio::time::timeout_at(until, added).await.is_err() {
                return Ok(Vec::new());
            }
        }
    }

    /// XAUTOCLAIM from `cursor`: examines up to `count * 10` pending entries in id order, gives
    /// `consumer` those idle for at least `min_idle` (up to `count`, entries found trimmed away
    /// counting too, as in Redis) and returns them with the next cursor (`0-0` at the end) and
    /// how many were trimmed away.
    pub(crate) fn reclaim(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
        cursor: &str,
        now: Instant,
    ) -> Result<(Vec<Delivery>, String, usize)> {
        if count == 0 {
            return Err(BusError::Redis(redis::RedisError::from((
                redis::ErrorKind::Client,
                "COUNT must be > 0",
            ))));
        }
        let start = EntryId::parse(cursor)?;
        let mut stream = self.stream.lock();
        let Stream { entries, group, .. } = &mut *stream;
        let group = group.as_mut().ok_or_else(no_group)?;
        let mut attempts = count.saturating_mul(10);
        // One more than can be examined: the first one left unexamined is the next cursor.
        let candidates: Vec<EntryId> = group
            .pending
            .range(start..)
            .map(|(id, _)| *id)
            .take(attempts.saturating_add(1))
            .collect();
        let mut left = count;
        let mut claimed = Vec::new();
        let mut deleted = 0;
        let mut next = EntryId::default();
        for id in &candidates {
            if attempts == 0 || left == 0 {
                next = *id;
                break;
            }
            attempts -= 1;
            let Some(pending) = group.pending.get_mut(id) else {
                continue;
            };
            if now.saturating_duration_since(pending.delivered) < min_idle {
                continue;
            }
            left -= 1;
            match find(entries, *id) {
                Some(delivery) => {
                    pending.consumer = consumer.to_string();
                    pending.delivered = now;
                    claimed.push(delivery.clone());
                }
                None => {
                    group.pending.remove(id);
                    deleted += 1;
                }
            }
        }
        Ok((claimed, next.to_string(), deleted))
    }

    /// XCLAIM … 0 JUSTID: makes the entry `consumer`'s and resets its idle time; an entry
    /// trimmed away meanwhile leaves the pending list (Redis 7 does the same).
    pub(crate) fn touch(&self, consumer: &str, entry_id: &str, now: Instant) -> Result<()> {
        let id = EntryId::parse(entry_id)?;
        let mut stream = self.stream.lock();
        let exists = stream.contains(id);
        let group = stream.group()?;
        if !exists {
            group.pending.remove(&id);
        } else if let Some(pending) = group.pending.get_mut(&id) {
            pending.consumer = consumer.to_string();
            pending.delivered = now;
        }
        Ok(())
    }

    /// XACK.
    pub(crate) fn ack(&self, entry_id: &str) -> Result<()> {
        let id = EntryId::parse(entry_id)?;
        self.stream.lock().group()?.pending.remove(&id);
        Ok(())
    }

    pub(crate) fn is_done(&self, job_id: &str, now: Instant) -> bool {
        self.done.lock().get(job_id, now).is_some()
    }

    /// SET NX EX: `false` if the marker existed.
    pub(crate) fn mark_done(&self, job_id: &str, ttl: Duration, now: Instant) -> bool {
        let mut done = self.done.lock();
        if done.get(job_id, now).is_some() {
            return false;
        }
        done.insert(
            job_id.to_string(),
            (),
            deadline(now, whole_seconds(ttl)),
            now,
        );
        true
    }

    /// INCR, then EXPIRE (so every attempt extends the counter's life).
    pub(crate) fn attempt(&self, job_id: &str, ttl: Duration, now: Instant) -> u64 {
        let mut tries = self.tries.lock();
        let count = tries
            .get(job_id, now)
            .map_or(0, |(count, _)| *count)
            .saturating_add(1);
        tries.insert(
            job_id.to_string(),
            count,
            deadline(now, whole_seconds(ttl)),
            now,
        );
        count
    }

    /// XADD to the dead-letter stream, then XACK.
    pub(crate) fn dead_letter(&self, dead: DeadLetter) -> Result<()> {
        let entry_id = dead.delivery.entry_id.clone();
        self.stream.lock().dead.push(dead);
        self.ack(&entry_id)
    }

    /// XPENDING for the consumer, then XGROUP DELCONSUMER if it holds nothing. Consumers are
    /// not kept by name here, so "removing" one is only the check.
    pub(crate) fn forget_consumer(&self, consumer: &str) -> Result<bool> {
        let mut stream = self.stream.lock();
        let holds_some = stream
            .group()?
            .pending
            .values()
            .any(|p| p.consumer == consumer);
        Ok(!holds_some)
    }

    /// Length, pending, lag (`entries-added - entries-read`, as XINFO GROUPS computes it while
    /// nothing was deleted from the middle of the stream) and dead letters.
    pub(crate) fn stats(&self) -> PushStats {
        let stream = self.stream.lock();
        let (pending, lag) = match &stream.group {
            Some(group) => (
                group.pending.len() as u64,
                stream.entries_added.saturating_sub(group.entries_read),
            ),
            None => (0, 0),
        };
        PushStats {
            length: stream.entries.len() as u64,
            pending,
            lag,
            dead: stream.dead.len() as u64,
        }
    }

    pub(crate) fn dead_letters(&self) -> Vec<DeadLetter> {
        self.stream.lock().dead.clone()
    }
}

#[async_trait]
impl JobsBackend for MemoryBus {
    async fn enqueue_push(&self, jobs: &[PushJob], max_len: u64) -> Result<()> {
        let deliveries = jobs
            .iter()
            .map(|job| {
                Ok(Delivery {
                    // Given by the stream as the entry is added.
                    entry_id: String::new(),
                    job_id: job.id.clone(),
                    raw: encode(job)?,
                    job: Ok(job.clone()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // Entry ids carry wall-clock milliseconds, as Redis' do.
        let now_ms = chrono::Utc::now().timestamp_millis().max(0) as u64;
        self.jobs.enqueue(deliveries, max_len, now_ms);
        Ok(())
    }

    async fn push_ensure_group(&self) -> Result<()> {
        self.jobs.ensure_group();
        Ok(())
    }

    fn push_reader(&self, consumer: &str) -> Box<dyn PushReader> {
        Box::new(MemoryPushReader {
            jobs: self.jobs.clone(),
            consumer: consumer.to_string(),
            claim_cursor: "0-0".to_string(),
        })
    }

    async fn push_touch(&self, consumer: &str, entry_id: &str) -> Result<()> {
        self.jobs.touch(consumer, entry_id, now())
    }

    async fn push_ack(&self, entry_id: &str) -> Result<()> {
        self.jobs.ack(entry_id)
    }

    async fn push_is_done(&self, job_id: &str) -> Result<bool> {
        Ok(self.jobs.is_done(job_id, now()))
    }

    async fn push_mark_done(&self, job_id: &str, ttl: Duration) -> Result<bool> {
        Ok(self.jobs.mark_done(job_id, ttl, now()))
    }

    async fn push_attempt(&self, job_id: &str, ttl: Duration) -> Result<u64> {
        Ok(self.jobs.attempt(job_id, ttl, now()))
    }

    async fn push_dead_letter(
        &self,
        delivery: &Delivery,
        reason: &str,
        attempts: u64,
    ) -> Result<()> {
        self.jobs.dead_letter(DeadLetter {
            delivery: delivery.clone(),
            reason: reason.to_string(),
            attempts,
        })
    }

    async fn push_forget_consumer(&self, consumer: &str) -> Result<bool> {
        self.jobs.forget_consumer(consumer)
    }

    async fn push_stats(&self) -> Result<PushStats> {
        Ok(self.jobs.stats())
    }

    fn dead_letters(&self) -> Option<Vec<DeadLetter>> {
        Some(self.jobs.dead_letters())
    }
}

/// One consumer's reads of the shared stream, with its XAUTOCLAIM cursor.
struct MemoryPushReader {
    jobs: Arc<Jobs>,
    consumer: String,
    claim_cursor: String,
}

#[async_trait]
impl PushReader for MemoryPushReader {
    async fn read_new(&mut self, count: usize, block: Duration) -> Result<Vec<Delivery>> {
        self.jobs.read_new(&self.consumer, count, block).await
    }

    async fn reclaim(&mut self, min_idle: Duration, count: usize) -> Result<Reclaimed> {
        let (claimed, next, deleted) =
            self.jobs
                .reclaim(&self.consumer, min_idle, count, &self.claim_cursor, now())?;
        self.claim_cursor = next;
        Ok(Reclaimed { claimed, deleted })
    }
}

/// `EX` takes whole seconds, at least one.
fn whole_seconds(ttl: Duration) -> Duration {
    Duration::from_secs(ttl.as_secs().max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_ids_grow_and_parse() {
        let first = next_id(EntryId::default(), 5);
        assert_eq!(first.to_string(), "5-0");
        let same_ms = next_id(first, 5);
        assert_eq!(same_ms.to_string(), "5-1");
        // A clock going back does not make ids go back.
        let clock_back = next_id(same_ms, 3);
        assert!(clock_back > same_ms);
        assert_eq!(EntryId::parse("5-1").ok(), Some(same_ms));
        assert_eq!(EntryId::parse("5").ok(), Some(first));
        assert!(EntryId::parse("x-1").is_err());
        assert!(EntryId::parse("").is_err());
    }
}
