//! This node's standing in Redis: which users it subscribes to and holds presence for.
//!
//! One task owns that state. The hub sends it `join` (a socket of the user opened here) and
//! `leave` (the user's last socket here closed) in the hub's own order; the task drains whatever
//! is queued, works out the net change per user, and applies it in bulk: one SUBSCRIBE and one
//! UNSUBSCRIBE per batch, presence entries, and presence notices to chat-api for users who came
//! online or went offline everywhere. Because it reconciles wanted state against what it has, a
//! fast connect/disconnect/connect can never leave a connected user unsubscribed. The same task
//! sends this node's heartbeat and reaps nodes that died.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chat_bus::{Bus, Subscriber};
use chat_proto::PresenceStatus;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api_client::ApiClient;
use crate::hub::UserId;
use crate::metrics::GatewayMetrics;

/// Commands drained into one batch at most.
const MAX_BATCH: usize = 2048;
/// Presence notices are spread over this many ordered lanes (a user always uses the same lane,
/// so its online/offline notices reach chat-api in order).
const NOTICE_LANES: u64 = 16;

enum Command {
    Join {
        user: UserId,
        done: oneshot::Sender<bool>,
    },
    Leave {
        user: UserId,
    },
    /// The subscription connection dropped: subscribe every present user again.
    Resubscribe,
}

#[derive(Clone)]
pub struct RegistryHandle {
    commands: mpsc::UnboundedSender<Command>,
}

impl RegistryHandle {
    /// The answer is `true` once the user's channel is subscribed (events will reach the socket).
    pub fn join(&self, user: UserId) -> oneshot::Receiver<bool> {
        let (done, answer) = oneshot::channel();
        // If the registry is gone the node is shutting down; the dropped sender answers "no".
        let _ = self.commands.send(Command::Join { user, done });
        answer
    }

    pub fn leave(&self, user: UserId) {
        let _ = self.commands.send(Command::Leave { user });
    }

    pub fn resubscribe(&self) {
        let _ = self.commands.send(Command::Resubscribe);
    }
}

/// Backoff of resubscription attempts after the subscription connection dropped.
const RESUBSCRIBE_FIRST_DELAY: Duration = Duration::from_millis(100);
const RESUBSCRIBE_MAX_DELAY: Duration = Duration::from_secs(2);

pub struct Registry {
    commands: mpsc::UnboundedReceiver<Command>,
    subscriber: Subscriber,
    bus: Bus,
    node: String,
    ttl: Duration,
    present: HashSet<UserId>,
    notices: Vec<mpsc::UnboundedSender<(UserId, PresenceStatus)>>,
    /// The notice lanes' tasks, awaited at shutdown so the last offline notices go out.
    notice_tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: GatewayMetrics,
    /// When to try resubscribing next, while a resubscription is owed.
    resubscribe_at: Option<tokio::time::Instant>,
    resubscribe_delay: Duration,
    /// Told each time the subscriptions are live again after a drop.
    restored: mpsc::UnboundedSender<()>,
}

impl Registry {
    pub fn new(
        subscriber: Subscriber,
        bus: Bus,
        node: String,
        ttl: Duration,
        api: Arc<ApiClient>,
        metrics: GatewayMetrics,
        restored: mpsc::UnboundedSender<()>,
    ) -> (Self, RegistryHandle) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (notices, notice_tasks) = (0..NOTICE_LANES)
            .map(|_| spawn_notice_lane(api.clone()))
            .unzip();
        let registry = Self {
            commands: rx,
            subscriber,
            bus,
            node,
            ttl,
            present: HashSet::new(),
            notices,
            notice_tasks,
            metrics,
            resubscribe_at: None,
            resubscribe_delay: RESUBSCRIBE_FIRST_DELAY,
            restored,
        };
        (registry, RegistryHandle { commands: tx })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(self.ttl / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let resubscribe_due = async {
                match self.resubscribe_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = resubscribe_due => self.resubscribe().await,
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    let mut batch = vec![command];
                    while batch.len() < MAX_BATCH {
                        match self.commands.try_recv() {
                            Ok(command) => batch.push(command),
                            Err(_) => break,
                        }
                    }
                    self.apply(batch).await;
                }
                _ = heartbeat.tick() => {
                    self.heartbeat().await;
                    self.reap_dead_nodes().await;
                }
                () = shutdown.cancelled() => break,
            }
        }
        self.leave_cluster().await;
        // The process exits after this returns: let the lanes deliver what is queued (the
        // offline notices of the users held here) before it does.
        self.notices.clear();
        for lane in std::mem::take(&mut self.notice_tasks) {
            let _ = lane.await;
        }
    }

    async fn apply(&mut self, batch: Vec<Command>) {
        let mut wanted: HashMap<UserId, bool> = HashMap::new();
        let mut waiters = Vec::new();
        for command in batch {
            match command {
                Command::Join { user, done } => {
                    wanted.insert(user, true);
                    waiters.push((user, done));
                }
                Command::Leave { user } => {
                    wanted.insert(user, false);
                }
                Command::Resubscribe => {
                    if self.resubscribe_at.is_none() {
                        self.resubscribe_delay = RESUBSCRIBE_FIRST_DELAY;
                        self.resubscribe_at = Some(tokio::time::Instant::now());
                    }
                }
            }
        }
        let joins: Vec<UserId> = wanted
            .iter()
            .filter(|&(user, &want)| want && !self.present.contains(user))
            .map(|(&user, _)| user)
            .collect();
        let leaves: Vec<UserId> = wanted
            .iter()
            .filter(|&(user, &want)| !want && self.present.contains(user))
            .map(|(&user, _)| user)
            .collect();
        if !joins.is_empty() {
            self.join_users(&joins).await;
        }
        if !leaves.is_empty() {
            self.leave_users(&leaves).await;
        }
        for (user, done) in waiters {
            let _ = done.send(self.present.contains(&user));
        }
        self.metrics.users.set(self.present.len() as f64);
    }

    async fn join_users(&mut self, users: &[UserId]) {
        if let Err(e) = self.subscriber.subscribe_many(users).await {
            tracing::warn!(error = %e, users = users.len(), "subscribing failed");
            return;
        }
        for &user in users {
            self.present.insert(user);
            match self.bus.presence_connect(user, &self.node, self.ttl).await {
                Ok(true) => self.notify(user, PresenceStatus::Online),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, user, "presence registration failed"),
            }
        }
    }

    async fn leave_users(&mut self, users: &[UserId]) {
        for user in users {
            self.present.remove(user);
        }
        if let Err(e) = self.subscriber.unsubscribe_many(users).await {
            tracing::warn!(error = %e, users = users.len(), "unsubscribing failed");
        }
        for &user in users {
            match self.bus.presence_disconnect(user, &self.node).await {
                Ok(true) => self.notify(user, PresenceStatus::Offline),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, user, "presence removal failed"),
            }
        }
    }

    /// Subscribes every present user again (a no-op for channels still subscribed). On a cluster
    /// a failing attempt also makes the client refresh its slot map, so a later attempt reaches
    /// the promoted replica. Once it succeeds the sockets are told to resync.
    async fn resubscribe(&mut self) {
        let users: Vec<UserId> = self.present.iter().copied().collect();
        match self.subscriber.subscribe_many(&users).await {
            Ok(()) => {
                self.resubscribe_at = None;
                tracing::info!(users = users.len(), "subscriptions restored");
                let _ = self.restored.send(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "resubscribing failed; retrying");
                self.resubscribe_at = Some(tokio::time::Instant::now() + self.resubscribe_delay);
                self.resubscribe_delay = (self.resubscribe_delay * 2).min(RESUBSCRIBE_MAX_DELAY);
            }
        }
    }

    async fn heartbeat(&self) {
        let users: Vec<UserId> = self.present.iter().copied().collect();
        if let Err(e) = self
            .bus
            .presence_heartbeat(&self.node, &users, self.ttl)
            .await
        {
            tracing::warn!(error = %e, "presence heartbeat failed");
        }
    }

    async fn reap_dead_nodes(&self) {
        match self.bus.reap_dead_nodes().await {
            Ok(offline) => {
                for user in offline {
                    self.notify(user, PresenceStatus::Offline);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reaping dead nodes failed"),
        }
    }

    /// On shutdown: report the users still held here as gone and leave the node list.
    async fn leave_cluster(&mut self) {
        let users: Vec<UserId> = self.present.iter().copied().collect();
        if !users.is_empty() {
            self.leave_users(&users).await;
        }
        if let Err(e) = self.bus.presence_leave(&self.node).await {
            tracing::warn!(error = %e, "leaving the presence registry failed");
        }
    }

    fn notify(&self, user: UserId, status: PresenceStatus) {
        let lane = &self.notices[(user % NOTICE_LANES) as usize];
        let _ = lane.send((user, status));
    }
}

/// A task that forwards presence notices to chat-api one at a time, retrying briefly; it ends
/// once its sender is dropped and the queue is empty.
fn spawn_notice_lane(
    api: Arc<ApiClient>,
) -> (
    mpsc::UnboundedSender<(UserId, PresenceStatus)>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(UserId, PresenceStatus)>();
    let task = tokio::spawn(async move {
        while let Some((user, status)) = rx.recv().await {
            let mut delay = Duration::from_millis(100);
            for attempt in 1..=4 {
                match api.presence(user, status).await {
                    Ok(()) => break,
                    Err(e) if attempt == 4 => {
                        tracing::warn!(error = %e, user, ?status, "presence notice dropped");
                    }
                    Err(_) => {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    });
    (tx, task)
}
