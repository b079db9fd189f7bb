//! This node's standing in Redis: which users and group chats it subscribes to and which users it
//! holds presence for.
//!
//! One task owns that state. The hub sends it `join` (a socket of the user opened here) and
//! `leave` (the user's last socket here closed) in the hub's own order; the task drains whatever
//! is queued, works out the net change per user, and applies it in bulk: one SUBSCRIBE for the
//! users' channels, one memberships request to chat-api for the groups of the users who joined
//! (installed in `groups`), one SUBSCRIBE for the group channels that got their first local
//! member and one UNSUBSCRIBE for those that lost their last, presence entries, and presence
//! notices to chat-api for users who came online or went offline everywhere. A socket's join is
//! answered once its user's channel and groups' channels are live. Because it reconciles wanted
//! state against what it has, a fast connect/disconnect/connect can never leave a connected user
//! unsubscribed.
//!
//! The user's channel is subscribed before the groups are asked for, so a membership change after
//! the answer reaches this node as a notice on that channel; the dispatcher hands such notices
//! here, and they are applied in order after the answer. A member added while online gets a
//! pending route and the chat's channel; once that is live the dispatcher is told to catch the
//! member up (see `groups`). The same task sends this node's heartbeat and reaps nodes that died.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chat_bus::{Bus, Subscriber, Topic};
use chat_ops::{Backoff, Delays};
use chat_proto::{MembershipsRequest, PresenceBatch, PresenceChange, PresenceStatus};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::api_client::{ApiClient, NoticeError};
use crate::groups::{ChatId, GroupRoutes};
use crate::hub::UserId;
use crate::metrics::GatewayMetrics;

/// Commands drained into one batch at most.
const MAX_BATCH: usize = 2048;
/// Presence notices are spread over this many ordered lanes (a user always uses the same lane,
/// so its online/offline notices reach chat-api in order). Few, because each lane's request
/// carries whatever queued behind the one before it.
const NOTICE_LANES: u64 = 4;

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
    /// A notice on the user's channel: the user was added to a group.
    Added {
        user: UserId,
        chat: ChatId,
        after_seq: u64,
    },
    /// A notice on the user's channel: the user left a group. Applied in order with `Added`
    /// (an addition still queued must not outlive a later removal).
    Removed {
        user: UserId,
        chat: ChatId,
    },
    /// A route was dropped: the chat's channel may no longer be wanted.
    Reconcile,
}

/// What the registry tells the dispatcher.
pub enum RegistryNews {
    /// The subscriptions are live again after a drop.
    Restored,
    /// The group's channel is live: catch the pending member up and route the chat to them.
    CatchUp {
        user: UserId,
        chat: ChatId,
        after_seq: u64,
    },
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

    pub fn added(&self, user: UserId, chat: ChatId, after_seq: u64) {
        let _ = self.commands.send(Command::Added {
            user,
            chat,
            after_seq,
        });
    }

    pub fn removed(&self, user: UserId, chat: ChatId) {
        let _ = self.commands.send(Command::Removed { user, chat });
    }

    pub fn reconcile(&self) {
        let _ = self.commands.send(Command::Reconcile);
    }
}

/// Backoff of resubscription attempts after the subscription connection dropped.
const RESUBSCRIBE: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
/// Backoff of a presence notice's retries: three, from 100 ms.
const NOTICE_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));

pub struct Registry {
    commands: mpsc::UnboundedReceiver<Command>,
    subscriber: Subscriber,
    bus: Bus,
    node: String,
    ttl: Duration,
    present: HashSet<UserId>,
    /// The group channels subscribed.
    chats: HashSet<ChatId>,
    routes: Arc<GroupRoutes>,
    api: Arc<ApiClient>,
    notices: Vec<mpsc::UnboundedSender<PresenceChange>>,
    /// The notice lanes' tasks, awaited at shutdown so the last offline notices go out.
    notice_tasks: Vec<tokio::task::JoinHandle<()>>,
    metrics: GatewayMetrics,
    /// When to try resubscribing next, while a resubscription is owed.
    resubscribe_at: Option<tokio::time::Instant>,
    /// The waits between resubscription attempts, from the first again after each drop.
    resubscribe_delays: Delays,
    /// Told each time the subscriptions are live again after a drop, and of catch-ups.
    news: mpsc::UnboundedSender<RegistryNews>,
}

impl Registry {
    pub fn new(
        subscriber: Subscriber,
        bus: Bus,
        node: String,
        ttl: Duration,
        (api, routes): (Arc<ApiClient>, Arc<GroupRoutes>),
        metrics: GatewayMetrics,
        news: mpsc::UnboundedSender<RegistryNews>,
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
            chats: HashSet::new(),
            routes,
            api,
            notices,
            notice_tasks,
            metrics,
            resubscribe_at: None,
            resubscribe_delays: RESUBSCRIBE.delays(),
            news,
        };
        (registry, RegistryHandle { commands: tx })
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut heartbeat = tokio::time::interval(self.ttl / 3);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::new();
        loop {
            let resubscribe_due = async {
                match self.resubscribe_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = resubscribe_due => self.resubscribe().await,
                // Whatever is queued, up to MAX_BATCH; none once every handle is gone.
                received = self.commands.recv_many(&mut batch, MAX_BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.apply(std::mem::take(&mut batch)).await;
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
        let mut membership_notices = Vec::new();
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
                        self.resubscribe_delays = RESUBSCRIBE.delays();
                        self.resubscribe_at = Some(tokio::time::Instant::now());
                    }
                }
                Command::Added {
                    user,
                    chat,
                    after_seq,
                } => membership_notices.push((user, chat, Some(after_seq))),
                Command::Removed { user, chat } => membership_notices.push((user, chat, None)),
                Command::Reconcile => {}
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
        let subscribed = !joins.is_empty()
            && self.subscribe_users(&joins).await
            && self.install_groups(&joins).await;
        for &user in &leaves {
            self.routes.remove_user(user);
        }
        // Notices on the users' channels, in the order they came, after the groups were read.
        let mut catch_ups: Vec<(UserId, ChatId, u64)> = Vec::new();
        for (user, chat, change) in membership_notices {
            match change {
                Some(after_seq) => {
                    if self.present.contains(&user) && self.routes.add_pending(chat, user) {
                        catch_ups.push((user, chat, after_seq));
                    }
                }
                // A catch-up already listed finds its route gone and does nothing.
                None => self.routes.remove(chat, user),
            }
        }
        self.reconcile_chats().await;
        // A socket waits for its user's and groups' channels only: the presence round trips
        // below are not on its way to auth_ok.
        for (user, done) in waiters {
            let _ = done.send(wanted.get(&user) == Some(&true) && self.present.contains(&user));
        }
        for (user, chat, after_seq) in catch_ups {
            let _ = self.news.send(RegistryNews::CatchUp {
                user,
                chat,
                after_seq,
            });
        }
        if subscribed {
            self.register_users(&joins).await;
        }
        if !leaves.is_empty() {
            self.leave_users(&leaves).await;
        }
        self.metrics.users.set(self.present.len() as f64);
    }

    /// Asks chat-api for the users' groups and routes them; on failure the users' channels are
    /// given up again (their sockets are refused and reconnect), since group events would not
    /// reach them.
    async fn install_groups(&mut self, users: &[UserId]) -> bool {
        match self.fetch_groups(users).await {
            Ok(groups) => {
                for (user, chats) in groups {
                    self.routes.install(user, &chats);
                }
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, users = users.len(), "reading users' groups failed");
                for user in users {
                    self.present.remove(user);
                }
                if let Err(e) = self.subscriber.unsubscribe_many(users).await {
                    tracing::warn!(error = %e, "unsubscribing failed");
                }
                false
            }
        }
    }

    /// Every user's group chats, in requests of at most `MembershipsRequest::MAX_USERS`.
    async fn fetch_groups(
        &self,
        users: &[UserId],
    ) -> Result<Vec<(UserId, Vec<ChatId>)>, NoticeError> {
        let mut groups = Vec::with_capacity(users.len());
        for chunk in users.chunks(MembershipsRequest::MAX_USERS) {
            let answer = self.api.memberships(chunk).await?;
            groups.extend(answer.users.into_iter().map(|u| (u.user_id, u.chat_ids)));
        }
        Ok(groups)
    }

    /// Subscribes the group channels that have a local member and are not subscribed, and
    /// unsubscribes those that have none. A failed subscription is retried with the others
    /// after the next drop or by the next batch.
    async fn reconcile_chats(&mut self) {
        let wanted = self.routes.chats();
        let new: Vec<Topic> = wanted
            .difference(&self.chats)
            .map(|&chat| Topic::Chat(chat))
            .collect();
        let gone: Vec<ChatId> = self.chats.difference(&wanted).copied().collect();
        if !new.is_empty() {
            match self.subscriber.subscribe_topics(&new).await {
                Ok(()) => self
                    .chats
                    .extend(new.iter().filter_map(|topic| match topic {
                        Topic::Chat(chat) => Some(*chat),
                        Topic::User(_) => None,
                    })),
                Err(e) => tracing::warn!(error = %e, chats = new.len(), "subscribing chats failed"),
            }
        }
        if !gone.is_empty() {
            for chat in &gone {
                self.chats.remove(chat);
            }
            let topics: Vec<Topic> = gone.iter().map(|&chat| Topic::Chat(chat)).collect();
            if let Err(e) = self.subscriber.unsubscribe_topics(&topics).await {
                tracing::warn!(error = %e, chats = gone.len(), "unsubscribing chats failed");
            }
        }
        self.metrics.chats.set(self.chats.len() as f64);
    }

    /// Subscribes the users' channels; `false` (and nobody present) when that failed.
    async fn subscribe_users(&mut self, users: &[UserId]) -> bool {
        if let Err(e) = self.subscriber.subscribe_many(users).await {
            tracing::warn!(error = %e, users = users.len(), "subscribing failed");
            return false;
        }
        self.present.extend(users);
        true
    }

    /// Enters this node in the presence registry for each user, and tells chat-api of those who
    /// came online.
    async fn register_users(&mut self, users: &[UserId]) {
        match self
            .bus
            .presence_connect_many(users, &self.node, self.ttl)
            .await
        {
            Ok(came_online) => self.notify_changes(users, &came_online, PresenceStatus::Online),
            Err(e) => {
                tracing::warn!(error = %e, users = users.len(), "presence registration failed");
            }
        }
    }

    async fn leave_users(&mut self, users: &[UserId]) {
        for user in users {
            self.present.remove(user);
            self.routes.remove_user(*user);
        }
        if let Err(e) = self.subscriber.unsubscribe_many(users).await {
            tracing::warn!(error = %e, users = users.len(), "unsubscribing failed");
        }
        match self.bus.presence_disconnect_many(users, &self.node).await {
            Ok(went_offline) => {
                self.notify_changes(users, &went_offline, PresenceStatus::Offline);
            }
            Err(e) => tracing::warn!(error = %e, users = users.len(), "presence removal failed"),
        }
    }

    fn notify_changes(&self, users: &[UserId], changed: &[bool], status: PresenceStatus) {
        for (&user, _) in users.iter().zip(changed).filter(|(_, changed)| **changed) {
            self.notify(user, status);
        }
    }

    /// Subscribes every present user again (a no-op for channels still subscribed). On a cluster
    /// a failing attempt also makes the client refresh its slot map, so a later attempt reaches
    /// the promoted replica. Once it succeeds the sockets are told to resync.
    async fn resubscribe(&mut self) {
        let users: Vec<UserId> = self.present.iter().copied().collect();
        // Membership notices published while the connection was down never came: the groups
        // are read again (and their channels subscribed again) once the users' channels are back.
        let mut restored = self.subscriber.subscribe_many(&users).await;
        if restored.is_ok() {
            match self.fetch_groups(&users).await {
                Ok(groups) => {
                    for (user, chats) in groups {
                        self.routes.install(user, &chats);
                    }
                    let chats: Vec<Topic> =
                        self.routes.chats().into_iter().map(Topic::Chat).collect();
                    self.chats.clear();
                    restored = self.subscriber.subscribe_topics(&chats).await;
                    if restored.is_ok() {
                        self.chats
                            .extend(chats.iter().filter_map(|topic| match topic {
                                Topic::Chat(chat) => Some(*chat),
                                Topic::User(_) => None,
                            }));
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading users' groups failed");
                    restored = Err(chat_bus::BusError::Subscription(
                        "the users' groups could not be read".into(),
                    ));
                }
            }
        }
        match restored {
            Ok(()) => {
                self.resubscribe_at = None;
                tracing::info!(
                    users = users.len(),
                    chats = self.chats.len(),
                    "subscriptions restored"
                );
                let _ = self.news.send(RegistryNews::Restored);
            }
            Err(e) => {
                tracing::warn!(error = %e, "resubscribing failed; retrying");
                let delay = self.resubscribe_delays.next_delay();
                self.resubscribe_at = Some(tokio::time::Instant::now() + delay);
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
        let _ = lane.send(PresenceChange {
            user_id: user,
            status,
        });
    }
}

/// A task that forwards presence notices to chat-api, retrying briefly: whatever queued while
/// its last request was out goes in the next one (chat-api's batch endpoint, or one request per
/// notice if that chat-api is older). It ends once its sender is dropped and the queue is empty.
fn spawn_notice_lane(
    api: Arc<ApiClient>,
) -> (
    mpsc::UnboundedSender<PresenceChange>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<PresenceChange>();
    let task = tokio::spawn(async move {
        let mut batches = true;
        let mut batch = PresenceBatch {
            changes: Vec::with_capacity(PresenceBatch::MAX_CHANGES),
        };
        while rx
            .recv_many(&mut batch.changes, PresenceBatch::MAX_CHANGES)
            .await
            > 0
        {
            if batches {
                match with_retries(|| api.presence_batch(&batch)).await {
                    Ok(()) => {}
                    Err(NoticeError::Unsupported) => {
                        tracing::info!(
                            "chat-api has no presence batch endpoint; sending one by one"
                        );
                        batches = false;
                    }
                    Err(e) => {
                        let notices = batch.changes.len();
                        tracing::warn!(error = %e, notices, "presence notices dropped");
                    }
                }
            }
            if !batches {
                for &change in &batch.changes {
                    if let Err(e) = with_retries(|| api.presence(change)).await {
                        tracing::warn!(error = %e, ?change, "presence notice dropped");
                    }
                }
            }
            batch.changes.clear();
        }
    });
    (tx, task)
}

/// Up to four attempts, about 100 ms apart and doubling (`NOTICE_RETRY`); an endpoint that is
/// not there is not retried.
async fn with_retries<F, Fut>(mut attempt: F) -> Result<(), NoticeError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), NoticeError>>,
{
    let mut delays = NOTICE_RETRY.delays();
    for _ in 1..4 {
        match attempt().await {
            Err(NoticeError::Failed(_)) => tokio::time::sleep(delays.next_delay()).await,
            done => return done,
        }
    }
    attempt().await
}

#[cfg(test)]
mod tests;
