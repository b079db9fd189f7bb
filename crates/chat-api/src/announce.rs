//! Announcing stored messages to their chat's members in seq order, exactly once, whichever api
//! replica stored them and whether or not it lived to publish them.
//!
//! A send publishes its message under the chat's send lock (a MySQL named lock, which every
//! replica takes and which the server frees when a dead replica's session ends). Three things make
//! a message that was committed and never published reach the live stream anyway:
//!
//! - **The announce watermark** (`chat_bus::Bus::announced`): per chat, the highest seq
//!   published. Each publish advances it, in the same round trip as the publish. Before publishing
//!   seq `s`, a publisher that did not itself publish `s - 1` (it keeps its own last seq per chat)
//!   reads the watermark and publishes what lies between from the database first. So the chat's
//!   next send, on any replica, closes the gap in order; on one replica, a chat's consecutive
//!   sends read nothing.
//! - **Pending marks** (`Bus::mark_pending`): a send counts itself pending in its replica's hash
//!   before it reaches the database (in the same round trip as the rate-limit check) and clears
//!   that after its publish.
//! - **The sweeper** (every replica): heartbeats this replica and, for each replica whose heartbeat
//!   lapsed, takes each chat it had pending under the chat's lock and closes that chat's gap; then
//!   forgets the dead replica. A crash is announced within about `HEARTBEAT_TTL` plus a sweep.
//!
//! Edits and deletions are announced by `changes`, with a resolver of their own for a write that
//! got no answer.
//!
//! A send whose COMMIT got no answer is the same case in a live process: it leaves its mark and a
//! resolver task closes the chat's gap once the database answers (or the chat's next send, or the
//! sender's retry, does it first). A retry that finds its message stored closes the gap too.
//!
//! **Late publishes.** `GET /v1/sync` may be answered from the recent-event log, which holds only
//! what was published, and its answer moves the client's cursor to a cursor's overlap before now.
//! An event published later than that after its time would be behind the client's next cursor.
//! So every write whose publish is overdue ([`OVERDUE_AFTER`] after it started: a slow commit) or
//! unknown (the resolver) is registered on the bus (`Bus::mark_late`) until it is published, and
//! the sweeper's view of those and of dead replicas ([`Announcer::log_sync_safe`]) keeps syncs on
//! the database meanwhile. A dead replica's sends are published within `HEARTBEAT_TTL` plus a
//! sweep, under the overlap; while its takeover runs, the dead replica is listed and syncs stay on
//! the database too.
//!
//! Why not a transactional outbox: it writes a row per message in the send's transaction and
//! deletes it after the publish, two more row writes per message on the database, the part of the
//! system that saturates first (docs/performance.md). Here the database does no more work on the
//! normal path; Redis does one more command per send in each of two round trips it already makes.
//!
//! Exactly once: a message is published by whoever holds the chat's lock and finds it above the
//! watermark. A new chat's watermark starts at 0. A replica killed after its PUBLISH left and before its watermark advance landed
//! would be published again; the two go out together, so that window is the time one pipeline
//! takes to be written. When the watermark is missing (a chat never announced, or silent for a
//! week), nothing is known to be missing: only the send itself (its retry, its resolver) is
//! published.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use chat_ops::Backoff;
use chat_proto::{Cursor, Message, ServerEvent};
use chat_store::SendOutcome;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

pub(crate) mod changes;

/// How the resolver tries: soon after the error, then at least once a second (a recipient that
/// disconnects before the announcement and resumes from a later cursor would miss it, so the
/// wait after the database is back should be short), for five minutes at most.
const RESOLVE_WAIT: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(1));
const RESOLVE_FOR: Duration = Duration::from_secs(300);
/// How often the sweeper heartbeats and looks for dead replicas.
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// How long a replica is alive after its last heartbeat: a few sweeps, so one slow Redis reply
/// does not make a live replica look dead (which would only cost a needless sweep).
const HEARTBEAT_TTL: Duration = Duration::from_secs(2);
/// Messages read from the database per page when closing a gap.
const GAP_PAGE: u32 = 200;
/// How long a write may run before its publish counts as late: with the sweeper's interval and
/// a round trip, well inside a cursor's overlap (5 s).
const OVERDUE_AFTER: Duration = Duration::from_secs(1);
/// How long a late publish's entry lives at most (a resolver gives up after `RESOLVE_FOR`).
const LATE_TTL: Duration = Duration::from_secs(RESOLVE_FOR.as_secs() + 60);
/// The per-chat memory of this process's last publish is dropped past this many chats (it is a
/// shortcut: a chat not in it costs one watermark read).
const REMEMBERED_CHATS: usize = 100_000;

/// This replica's name on the bus and its memory of what it published last, per chat.
pub struct Announcer {
    replica: String,
    last_published: Mutex<HashMap<u64, u64>>,
    /// Ids of this replica's late-publish entries.
    late_ids: AtomicU64,
    /// Ids of this replica's pending changes (`changes::ChangeMark`).
    change_ids: AtomicU64,
    /// This replica's late publishes now (the bus's count reaches the sweeper a tick later).
    late_here: AtomicI64,
    /// Wall-clock ms of the last sweep that found no late publish and no dead replica; 0 when
    /// the last sweep found one.
    clear_at_ms: AtomicI64,
}

impl Default for Announcer {
    fn default() -> Self {
        Self::new()
    }
}

impl Announcer {
    pub fn new() -> Self {
        Self {
            replica: format!("{:016x}", rand::random::<u64>()),
            last_published: Mutex::new(HashMap::new()),
            late_ids: AtomicU64::new(0),
            change_ids: AtomicU64::new(0),
            late_here: AtomicI64::new(0),
            clear_at_ms: AtomicI64::new(0),
        }
    }

    /// Whether a sync may be answered from the recent-event log at `now_ms`: no replica has a
    /// late publish and none is dead, as of a sweep at most three intervals old (a sweep that
    /// cannot reach Redis says nothing, and the log is then out of reach anyway).
    pub(crate) fn log_sync_safe(&self, now_ms: i64) -> bool {
        let fresh_ms = 3 * SWEEP_EVERY.as_millis() as i64;
        self.late_here.load(Ordering::Acquire) == 0
            && now_ms - self.clear_at_ms.load(Ordering::Acquire) <= fresh_ms
    }

    fn note_sweep(&self, clear: bool, now_ms: i64) {
        self.clear_at_ms
            .store(if clear { now_ms } else { 0 }, Ordering::Release);
    }

    fn last_published(&self, chat_id: u64) -> Option<u64> {
        let remembered = self.last_published.lock().ok()?;
        remembered.get(&chat_id).copied()
    }

    fn remember(&self, chat_id: u64, seq: u64) {
        if let Ok(mut remembered) = self.last_published.lock() {
            if remembered.len() >= REMEMBERED_CHATS && !remembered.contains_key(&chat_id) {
                remembered.clear();
            }
            remembered.insert(chat_id, seq);
        }
    }
}

/// A send identified by its idempotency key: what is published when the watermark is missing.
#[derive(Debug, Clone)]
pub(crate) struct KnownSend {
    pub sender_id: u64,
    pub client_msg_id: String,
}

/// Sets a new chat's watermark to 0, so that a gap before its first published message is
/// found like any other. A failure only leaves that chat's first gap to the sender's retry or the
/// resolver.
pub(crate) async fn start_watermark(state: &AppState, chat_id: u64) {
    if let Err(e) = state.bus.advance_announced(chat_id, 0).await {
        tracing::warn!(error = %e, chat_id, "starting the chat's announce watermark failed");
    }
}

/// Counts a send as pending before it reaches the database. A failure leaves that send
/// announced only by the chat's next send or its sender's retry, should this replica die.
pub(crate) async fn mark_pending(state: &AppState, chat_id: u64) {
    if let Err(e) = state
        .bus
        .mark_pending(&state.announcer.replica, chat_id)
        .await
    {
        tracing::warn!(error = %e, chat_id, "marking a send pending failed");
    }
}

/// Counts a send as done (published, or never stored), off the caller's path.
pub(crate) fn clear_pending(state: &AppState, chat_id: u64) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = state
            .bus
            .clear_pending(&state.announcer.replica, chat_id)
            .await
        {
            tracing::debug!(error = %e, chat_id, "clearing a pending send failed");
        }
    });
}

/// Runs under the chat's send lock with a send's outcome: first what is stored and unannounced
/// below it, then the message itself if this send stored it.
pub(crate) async fn announce(state: &AppState, outcome: &SendOutcome) {
    let message = &outcome.message;
    let known = KnownSend {
        sender_id: message.sender_id,
        client_msg_id: message.client_msg_id.clone(),
    };
    if !outcome.created {
        // A retry: its message, and anything else, may still be unannounced.
        close_gap(
            state,
            message.chat_id,
            None,
            &outcome.member_ids,
            Some(&known),
        )
        .await;
        return;
    }
    close_gap(
        state,
        message.chat_id,
        Some(message.seq),
        &outcome.member_ids,
        None,
    )
    .await;
    publish_message(state, &outcome.member_ids, message.clone()).await;
}

/// Keeps the send's mark and starts a resolver for its chat.
pub(crate) fn record_unknown_commit(state: &AppState, chat_id: u64, send: KnownSend) {
    metrics::counter!("chat_messages_commit_unknown_total").increment(1);
    let late = LateEntry::register(state);
    let state = state.clone();
    tokio::spawn(async move {
        resolve(state, chat_id, send).await;
        drop(late);
    });
}

/// Runs a write that publishes after its commit; should it run past [`OVERDUE_AFTER`], its
/// publish is registered as late until it finishes (or is dropped: a handler the client hung
/// up on).
pub(crate) async fn watched<F: Future>(state: AppState, work: F) -> F::Output {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        biased;
        done = &mut work => return done,
        () = tokio::time::sleep(OVERDUE_AFTER) => {}
    }
    metrics::counter!("chat_writes_overdue_total").increment(1);
    let _late = LateEntry::register(&state);
    work.await
}

/// One registered late publish: counted here at once, on the bus off the caller's path;
/// unregistered when dropped.
struct LateEntry {
    state: AppState,
    id: u64,
    registered: Option<tokio::task::JoinHandle<()>>,
}

impl LateEntry {
    fn register(state: &AppState) -> Self {
        let announcer = &state.announcer;
        announcer.late_here.fetch_add(1, Ordering::AcqRel);
        let id = announcer.late_ids.fetch_add(1, Ordering::Relaxed);
        let bus_state = state.clone();
        let registered = tokio::spawn(async move {
            if let Err(e) = bus_state
                .bus
                .mark_late(&bus_state.announcer.replica, id, LATE_TTL)
                .await
            {
                tracing::warn!(error = %e, "registering a late publish failed");
            }
        });
        Self {
            state: state.clone(),
            id,
            registered: Some(registered),
        }
    }
}

impl Drop for LateEntry {
    /// Unregisters it once its registration landed (so the two cannot cross).
    fn drop(&mut self) {
        let (state, id, registered) = (self.state.clone(), self.id, self.registered.take());
        tokio::spawn(async move {
            if let Some(registered) = registered {
                let _ = registered.await;
            }
            if let Err(e) = state.bus.clear_late(&state.announcer.replica, id).await {
                tracing::warn!(error = %e, "unregistering a late publish failed; it expires");
            }
            state.announcer.late_here.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

/// Closes the chat's gap once the database answers, in case no retry and no other send in the
/// chat comes along to do it; then clears the send's mark.
async fn resolve(state: AppState, chat_id: u64, send: KnownSend) {
    let settled = until_settled(|| async {
        let closed = state
            .store
            .in_send_order(chat_id, || {
                close_gap(&state, chat_id, None, &[], Some(&send))
            })
            .await;
        closed.unwrap_or_else(|e| {
            tracing::debug!(error = %e, chat_id, "resolver: the chat's lock is out of reach");
            false
        })
    })
    .await;
    if settled {
        clear_pending(&state, chat_id);
    } else {
        tracing::warn!(
            chat_id,
            "gave up announcing a send with an unknown commit; the next send in the chat will"
        );
    }
}

/// Runs `attempt` after each of `RESOLVE_WAIT`'s delays until it says the write it resolves is
/// settled, for at most `RESOLVE_FOR`; false when it never did.
async fn until_settled<F: Future<Output = bool>>(mut attempt: impl FnMut() -> F) -> bool {
    let give_up = tokio::time::Instant::now() + RESOLVE_FOR;
    let mut waits = RESOLVE_WAIT.delays();
    while tokio::time::Instant::now() < give_up {
        tokio::time::sleep(waits.next_delay()).await;
        if attempt().await {
            return true;
        }
    }
    false
}

/// Heartbeats this replica and closes the gaps that dead replicas left, until `shutdown`.
pub(crate) async fn sweep(state: AppState, shutdown: CancellationToken) {
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = shutdown.cancelled() => return,
        }
        let replica = &state.announcer.replica;
        if let Err(e) = state.bus.replica_heartbeat(replica, HEARTBEAT_TTL).await {
            tracing::debug!(error = %e, "announce heartbeat failed");
            continue;
        }
        let (dead, late) = tokio::join!(state.bus.dead_replicas(), state.bus.late_publishes());
        let dead = match dead {
            Ok(dead) => dead,
            Err(e) => {
                tracing::debug!(error = %e, "listing dead api replicas failed");
                continue;
            }
        };
        let others_dead: Vec<&String> = dead.iter().filter(|dead| *dead != replica).collect();
        match late {
            Ok(late) => state.announcer.note_sweep(
                late == 0 && others_dead.is_empty(),
                chrono::Utc::now().timestamp_millis(),
            ),
            Err(e) => tracing::debug!(error = %e, "counting late publishes failed"),
        }
        for replica in others_dead {
            take_over(&state, replica).await;
        }
    }
}

/// Closes the gap of every chat a dead replica had pending and announces its pending changes,
/// then forgets it (or leaves it for the next sweep if a chat or change could not be settled).
async fn take_over(state: &AppState, replica: &str) {
    let chats = match state.bus.pending_chats(replica).await {
        Ok(chats) => chats,
        Err(e) => {
            tracing::warn!(error = %e, replica, "reading a dead replica's pending sends failed");
            return;
        }
    };
    let mut settled = true;
    for &chat_id in &chats {
        let closed = state
            .store
            .in_send_order(chat_id, || close_gap(state, chat_id, None, &[], None))
            .await;
        settled &= matches!(closed, Ok(true));
    }
    let changes = match state.bus.pending_changes(replica).await {
        Ok(changes) => changes,
        Err(e) => {
            tracing::warn!(error = %e, replica, "reading a dead replica's pending changes failed");
            return;
        }
    };
    for (_, change) in &changes {
        settled &= changes::settle(state, change).await;
    }
    if !settled {
        return;
    }
    match state.bus.forget_replica(replica).await {
        Ok(()) => tracing::info!(
            replica,
            chats = chats.len(),
            changes = changes.len(),
            "took over a dead api replica"
        ),
        Err(e) => tracing::warn!(error = %e, replica, "forgetting a dead replica failed"),
    }
}

/// Publishes, in seq order, the chat's stored messages above its watermark (and below `below`,
/// the seq the caller is about to publish). `members` may be empty (they are then read). With
/// no watermark, only `known` is published, if it is stored. True when nothing is left to look
/// up. Runs under the chat's send lock.
async fn close_gap(
    state: &AppState,
    chat_id: u64,
    below: Option<u64>,
    members: &[u64],
    known: Option<&KnownSend>,
) -> bool {
    if let Some(below) = below
        && state.announcer.last_published(chat_id) == below.checked_sub(1)
    {
        return true;
    }
    let watermark = match state.bus.announced(chat_id).await {
        Ok(watermark) => watermark,
        Err(e) => {
            tracing::warn!(error = %e, chat_id, "reading the chat's announce watermark failed");
            return false;
        }
    };
    let mut members = members.to_vec();
    let Some(mut after) = watermark else {
        if below.is_some() {
            return true;
        }
        let Some(known) = known else { return true };
        return match state
            .store
            .message_by_client_id(chat_id, known.sender_id, &known.client_msg_id)
            .await
        {
            Ok(Some(message)) => publish_late(state, &mut members, vec![message]).await,
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(error = %e, chat_id, "looking up an unannounced send failed");
                false
            }
        };
    };
    loop {
        if below.is_some_and(|below| after + 1 >= below) {
            return true;
        }
        let mut page = match state.store.messages_after(chat_id, after, GAP_PAGE).await {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, chat_id, "reading unannounced messages failed");
                return false;
            }
        };
        let full = page.len() == GAP_PAGE as usize;
        page.retain(|message| below.is_none_or(|below| message.seq < below));
        let Some(last) = page.last().map(|message| message.seq) else {
            return true;
        };
        if !publish_late(state, &mut members, page).await {
            return false;
        }
        if !full {
            return true;
        }
        after = last;
    }
}

/// Publishes messages found unannounced, oldest first, and queues their offline members' push
/// jobs (their own sends queued none). Reads the members if `members` is empty.
async fn publish_late(state: &AppState, members: &mut Vec<u64>, messages: Vec<Message>) -> bool {
    let Some(chat_id) = messages.first().map(|message| message.chat_id) else {
        return true;
    };
    if members.is_empty() {
        match state.store.member_ids(chat_id).await {
            Ok(read) => *members = read,
            Err(e) => {
                tracing::warn!(error = %e, "reading the chat's members failed");
                return false;
            }
        }
    }
    for message in messages {
        metrics::counter!("chat_messages_announced_late_total").increment(1);
        publish_message(state, members, message.clone()).await;
        state.push.enqueue_for_offline(SendOutcome {
            message,
            created: true,
            member_ids: members.clone(),
        });
    }
    true
}

/// One `new_message` event to the chat's members (see `crate::fanout`), with the watermark's
/// advance beside it.
async fn publish_message(state: &AppState, members: &[u64], message: Message) {
    metrics::counter!("chat_messages_published_total").increment(1);
    let (chat_id, seq) = (message.chat_id, message.seq);
    let event = ServerEvent::NewMessage {
        cursor: Cursor::after_event(message.created_at.timestamp_millis()).to_string(),
        message,
    };
    let (_, advanced) = tokio::join!(
        state.publish_chat_event(chat_id, members, event, None),
        state.bus.advance_announced(chat_id, seq)
    );
    if let Err(e) = advanced {
        tracing::warn!(error = %e, chat_id, "advancing the announce watermark failed");
    }
    state.announcer.remember(chat_id, seq);
}

#[cfg(test)]
mod tests;
