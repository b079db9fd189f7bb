//! The hub: which sockets on this node belong to which user. It owns that map (nobody else locks
//! it), hands each event's encoded bytes to every local socket of a user without blocking, and
//! tells the registry when a user's first local socket opens or last one closes.
//!
//! Deliveries queue the event and leave the writer's wake-up to a [`Wakes`] that the caller
//! flushes once it has queued a batch: a socket that gets several events from one read of the
//! bus is woken, and written to, once.

use std::sync::atomic::{AtomicU16, Ordering};

use bytes::Bytes;
use chat_proto::{ErrorCode, Reply, ServerEvent, WireFormat};
use parking_lot::{Mutex, MutexGuard};
use tokio_util::sync::CancellationToken;

use crate::ids::IdMap;
use crate::metrics::GatewayMetrics;
use crate::registry::RegistryHandle;
use crate::socket::encode_reply;
use crate::socket::outbox::{Outbox, Refused};
use crate::socket::writer::{Control, EventKey, OutEvent};

pub type UserId = u64;
pub type ConnId = u64;

/// Close codes the server uses.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const RESTART: u16 = 1012;
    pub const UNAUTHORIZED: u16 = 4001;
    pub const TOO_SLOW: u16 = 4008;
}

/// Asks a connection to close with a code; the first request wins. Both the reader and the
/// writer of the connection wait on it.
#[derive(Default)]
pub struct CloseSignal {
    code: AtomicU16,
    token: CancellationToken,
}

impl CloseSignal {
    pub fn close(&self, code: u16) {
        if self
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.token.cancel();
        }
    }

    pub fn code(&self) -> Option<u16> {
        match self.code.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    pub async fn requested(&self) {
        self.token.cancelled().await;
    }
}

/// What the hub keeps per socket.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: ConnId,
    /// The token id the socket authenticated with (for logout).
    pub jti: std::sync::Arc<str>,
    /// The token itself, for chat-api calls made for the socket (a new group's catch-up).
    pub token: std::sync::Arc<str>,
    pub format: WireFormat,
    /// The socket's outbound queues: live events, and frames that must precede a close (the
    /// logout error).
    pub outbox: std::sync::Arc<Outbox>,
    pub signal: std::sync::Arc<CloseSignal>,
}

/// An event encoded at most once per wire format, shared by every socket that receives it.
pub struct EncodedEvent {
    event: ServerEvent,
    key: EventKey,
    published_at_ms: Option<i64>,
    json: Option<Bytes>,
    msgpack: Option<Bytes>,
}

impl EncodedEvent {
    /// An event of this node's own (`resync`), not timed.
    pub fn new(event: ServerEvent) -> Self {
        Self {
            key: EventKey::of(&event),
            event,
            published_at_ms: None,
            json: None,
            msgpack: None,
        }
    }

    /// An event from the bus, timed from its publish to each socket's write.
    pub fn published(event: ServerEvent, published_at_ms: i64) -> Self {
        Self {
            published_at_ms: Some(published_at_ms),
            ..Self::new(event)
        }
    }

    fn for_format(&mut self, format: WireFormat) -> OutEvent {
        let slot = match format {
            WireFormat::Json => &mut self.json,
            WireFormat::MsgPack => &mut self.msgpack,
        };
        let bytes = slot
            .get_or_insert_with(|| format.encode(&self.event))
            .clone();
        OutEvent {
            bytes,
            key: self.key,
            published_at_ms: self.published_at_ms,
        }
    }
}

/// The writers owed a wake-up for events queued since the last [`Wakes::wake_all`], each
/// listed once (an outbox asks for a wake-up only when its queue was empty).
#[derive(Default)]
pub struct Wakes(Vec<std::sync::Arc<Outbox>>);

impl Wakes {
    pub fn wake_all(&mut self) {
        for outbox in self.0.drain(..) {
            outbox.wake();
        }
    }
}

const SHARDS: usize = 64;

pub struct Hub {
    shards: Vec<Mutex<IdMap<Vec<ConnHandle>>>>,
    registry: RegistryHandle,
    metrics: GatewayMetrics,
}

impl Hub {
    pub fn new(registry: RegistryHandle, metrics: GatewayMetrics) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(IdMap::default())).collect(),
            registry,
            metrics,
        }
    }

    fn shard(&self, user: UserId) -> MutexGuard<'_, IdMap<Vec<ConnHandle>>> {
        self.shards[(user % SHARDS as u64) as usize].lock()
    }

    pub fn registry(&self) -> &RegistryHandle {
        &self.registry
    }

    /// Adds a socket, unless the user already holds `max` here (0: no limit), in which case
    /// the newest is refused (`None`). The registry is told inside the lock, so its view of
    /// first/last sockets follows the hub's order exactly. Resolves once the user's channel
    /// subscription is live.
    pub fn register(
        &self,
        user: UserId,
        handle: ConnHandle,
        max: usize,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let mut shard = self.shard(user);
        // Most users have one socket per node: start with room for exactly one.
        let conns = shard.entry(user).or_insert_with(|| Vec::with_capacity(1));
        if max > 0 && conns.len() >= max {
            return None;
        }
        conns.push(handle);
        Some(self.registry.join(user))
    }

    /// Removes a socket; the registry hears of it when it was the user's last one here.
    pub fn unregister(&self, user: UserId, conn: ConnId) {
        let mut shard = self.shard(user);
        let Some(conns) = shard.get_mut(&user) else {
            return;
        };
        conns.retain(|c| c.id != conn);
        if conns.is_empty() {
            shard.remove(&user);
            self.registry.leave(user);
        }
    }

    /// Queues an event on every local socket of the user, leaving their writers to `wakes`;
    /// returns how many sockets got it. A full queue closes that socket with 4008 rather than
    /// slowing anyone else down.
    pub fn deliver(&self, user: UserId, event: &mut EncodedEvent, wakes: &mut Wakes) -> usize {
        let shard = self.shard(user);
        let Some(conns) = shard.get(&user) else {
            return 0;
        };
        let mut sent = 0;
        for conn in conns {
            sent += usize::from(self.offer(conn, event.for_format(conn.format), wakes));
        }
        sent
    }

    /// Queues an event on every local socket; returns how many sockets got it.
    pub fn broadcast(&self, event: &mut EncodedEvent) -> usize {
        let mut sent = 0;
        let mut wakes = Wakes::default();
        for index in 0..SHARDS {
            let shard = self.shard(index as u64);
            for conn in shard.values().flatten() {
                sent += usize::from(self.offer(conn, event.for_format(conn.format), &mut wakes));
            }
            wakes.wake_all();
        }
        self.metrics.events_delivered.increment(sent as u64);
        sent
    }

    /// Counts deliveries made with [`Hub::deliver`] (once a batch: the counter is shared by
    /// every thread).
    pub fn count_delivered(&self, sent: usize) {
        self.metrics.events_delivered.increment(sent as u64);
    }

    /// Queues bytes on one socket without waiting; a full queue closes it with 4008. The
    /// delivered counter is the caller's.
    fn offer(&self, conn: &ConnHandle, event: OutEvent, wakes: &mut Wakes) -> bool {
        match conn.outbox.offer_event_deferred(event) {
            Ok(wake) => {
                if wake {
                    wakes.0.push(conn.outbox.clone());
                }
                true
            }
            Err(Refused::Full) => {
                self.metrics.outbound_overflow.increment(1);
                conn.signal.close(close_code::TOO_SLOW);
                false
            }
            Err(Refused::Closed) => false,
        }
    }

    /// Holds live events back on every local socket of the user (see `socket::writer`), for a
    /// replay that ends with `Activate`; the sockets paused.
    pub fn pause_user(&self, user: UserId) -> Vec<ConnHandle> {
        let shard = self.shard(user);
        let mut paused = Vec::new();
        for conn in shard.get(&user).into_iter().flatten() {
            if conn.outbox.try_control(Control::Pause).is_ok() {
                paused.push(conn.clone());
            } else {
                conn.signal.close(close_code::TOO_SLOW);
            }
        }
        paused
    }

    /// Closes the user's sockets that authenticated with the given token id.
    pub fn close_session(&self, user: UserId, jti: &str, code: u16) {
        let shard = self.shard(user);
        for conn in shard.get(&user).into_iter().flatten() {
            if &*conn.jti == jti {
                let notice =
                    Reply::error(None, ErrorCode::Unauthorized, "the session was logged out");
                let _ = conn.outbox.try_control(encode_reply(conn.format, &notice));
                conn.signal.close(code);
            }
        }
    }

    /// Every (user, token id) with a socket here, once each.
    pub fn sessions(&self) -> Vec<(UserId, std::sync::Arc<str>)> {
        let mut sessions = Vec::new();
        for index in 0..SHARDS {
            let shard = self.shard(index as u64);
            for (user, conns) in shard.iter() {
                let mut seen: Vec<&std::sync::Arc<str>> = Vec::new();
                for conn in conns {
                    if !seen.contains(&&conn.jti) {
                        seen.push(&conn.jti);
                        sessions.push((*user, conn.jti.clone()));
                    }
                }
            }
        }
        sessions
    }

    /// Every socket's close signal, for draining.
    pub fn all_signals(&self) -> Vec<std::sync::Arc<CloseSignal>> {
        let mut signals = Vec::new();
        for index in 0..SHARDS {
            let shard = self.shard(index as u64);
            signals.extend(shard.values().flatten().map(|c| c.signal.clone()));
        }
        signals
    }

    pub fn connection_count(&self) -> usize {
        (0..SHARDS)
            .map(|index| {
                self.shard(index as u64)
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }
}
