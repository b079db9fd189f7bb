//! Reads what the subscription connection receives and hands it to the hub: events to the
//! user's sockets (encoded once per wire format), logout notices to the sockets of that session,
//! and a group chat's events to the chat's local members (`groups`), decoded and encoded once
//! however many of them are here. Membership notices keep `groups` current: one read from the
//! chat's channel applies at once, in the chat's order; one read from a user's channel goes to
//! the registry, which subscribes a new group's channel and then asks here for the member's
//! catch-up (`catch_up`).
//!
//! It also watches the subscription's health: a disconnect asks the registry to subscribe every
//! local user again, and when the registry reports the subscriptions live, every local socket
//! gets a `resync` event, because whatever was published in between never reached this node, and
//! the sessions held here are checked against the revocation list for logouts it missed.
//!
//! It takes every bus message waiting (up to [`BATCH`]) per wake-up, queues all their events,
//! and only then wakes the writers of the sockets that got any, once each (`hub::Wakes`): a
//! socket with several of the batch's events is written to once, and no writer runs on the
//! other worker thread while the batch is still being routed to it. Each socket's events stay in
//! the order of the bus, so per-chat order holds.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use chat_bus::BusMessage;
use chat_proto::{BusBody, BusEnvelope, Cursor, ServerEvent};
use tokio::sync::mpsc;

use crate::Gateway;
use crate::hub::{ConnHandle, EncodedEvent, Hub, Wakes, close_code};
use crate::metrics::GatewayMetrics;
use crate::registry::RegistryNews;
use crate::socket::writer::{Control, OutEvent, data_opcode};

/// Bus messages taken per wake-up: enough for a whole read of the subscription connection (a
/// send batch of chat-api's publishes), few enough that the first sockets' writers are not held
/// back long.
const BATCH: usize = 256;

/// What routing a batch of bus messages owes once it is done.
#[derive(Default)]
struct Batch {
    /// Writers of the sockets that got events.
    wakes: Wakes,
    /// Events queued, for the delivered counter (each socket's writer times its own write).
    sent: usize,
}

impl Batch {
    fn delivered(&mut self, sockets: usize) {
        self.sent += sockets;
    }

    fn finish(&mut self, hub: &Hub) {
        self.wakes.wake_all();
        hub.count_delivered(std::mem::take(&mut self.sent));
    }
}

pub async fn run(
    mut messages: mpsc::UnboundedReceiver<BusMessage>,
    mut news: mpsc::UnboundedReceiver<RegistryNews>,
    gateway: Arc<Gateway>,
) {
    let (hub, metrics) = (&gateway.hub, &gateway.metrics);
    let mut last = None;
    let mut taken = Vec::with_capacity(BATCH);
    let mut batch = Batch::default();
    loop {
        tokio::select! {
            count = messages.recv_many(&mut taken, BATCH) => {
                if count == 0 {
                    return;
                }
                let (mut from_users, mut from_chats) = (0u64, 0u64);
                for message in taken.drain(..) {
                    match message {
                        BusMessage::Payload { user, payload } => {
                            from_users += 1;
                            dispatch(&gateway, &mut last, user, payload, &mut batch)
                        }
                        BusMessage::ChatPayload { chat, payload } => {
                            from_chats += 1;
                            dispatch_chat(&gateway, chat, &payload, &mut batch)
                        }
                        BusMessage::Disconnected => {
                            gateway.subscriptions_up.store(false, Ordering::Release);
                            gateway.log_trusted_from_ms.store(i64::MAX, Ordering::Release);
                            metrics.bus_up.set(0.0);
                            tracing::warn!("redis subscription connection lost; resubscribing");
                            hub.registry().resubscribe();
                        }
                    }
                }
                metrics.bus_user_messages.increment(from_users);
                metrics.bus_chat_messages.increment(from_chats);
                batch.finish(hub);
            },
            Some(news) = news.recv() => match news {
                RegistryNews::Restored => {
                    gateway.subscriptions_up.store(true, Ordering::Release);
                    let now_ms = chrono::Utc::now().timestamp_millis();
                    gateway
                        .log_trusted_from_ms
                        .store(now_ms + chat_bus::RECENT_LOG_SKEW_MS, Ordering::Release);
                    broadcast_resync(hub, metrics);
                    // Logouts published while the subscription was down never reached this node.
                    tokio::spawn(close_revoked_sessions(gateway.clone()));
                }
                RegistryNews::CatchUp { user, chat, after_seq } => {
                    catch_up(&gateway, user, chat, after_seq)
                }
            },
        }
    }
}

/// Closes (4001) the local sockets whose token was revoked, checked in chunks against Redis.
async fn close_revoked_sessions(gateway: Arc<Gateway>) {
    let sessions = gateway.hub.sessions();
    let mut closed = 0usize;
    for chunk in sessions.chunks(1000) {
        let jtis: Vec<String> = chunk.iter().map(|(_, jti)| jti.to_string()).collect();
        match gateway.bus.revoked_among(&jtis).await {
            Ok(revoked) => {
                for ((user, jti), revoked) in chunk.iter().zip(revoked) {
                    if revoked {
                        gateway
                            .hub
                            .close_session(*user, jti, close_code::UNAUTHORIZED);
                        closed += 1;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "revocation sweep after resubscribing failed");
                return;
            }
        }
    }
    tracing::info!(
        sessions = sessions.len(),
        closed,
        "revocation sweep after resubscribing"
    );
}

fn broadcast_resync(hub: &Hub, metrics: &GatewayMetrics) {
    metrics.bus_up.set(1.0);
    let event = ServerEvent::Resync {
        reason: "bus_reconnected".into(),
    };
    let sockets = hub.broadcast(&mut EncodedEvent::new(event));
    tracing::info!(sockets, "told sockets to resync");
}

/// The last event payload and its encodings. A chat's event reaches this node as one identical
/// payload per member, back to back, so a group's message is decoded once and encoded once per
/// wire format however many of its members are connected here.
struct LastEvent {
    payload: Bytes,
    event: EncodedEvent,
}

fn dispatch(
    gateway: &Gateway,
    last: &mut Option<LastEvent>,
    user: u64,
    payload: Bytes,
    batch: &mut Batch,
) {
    let hub = &gateway.hub;
    if let Some(last) = last.as_mut().filter(|last| last.payload == payload) {
        deliver(hub, user, last, batch);
        return;
    }
    match BusEnvelope::decode(&payload) {
        Ok(BusEnvelope {
            published_at_ms,
            body: BusBody::Event(event),
        }) => {
            let event = LastEvent {
                payload,
                event: EncodedEvent::published(event, published_at_ms),
            };
            deliver(hub, user, last.insert(event), batch);
        }
        Ok(BusEnvelope {
            body: BusBody::SessionRevoked { jti },
            ..
        }) => hub.close_session(user, &jti, close_code::UNAUTHORIZED),
        // On a user's channel the notice is about that user.
        Ok(BusEnvelope {
            body: BusBody::MemberAdded {
                chat_id, after_seq, ..
            },
            ..
        }) => hub.registry().added(user, chat_id, after_seq),
        Ok(BusEnvelope {
            body: BusBody::MemberRemoved { chat_id, .. },
            ..
        }) => {
            gateway.groups.remove(chat_id, user);
            hub.registry().removed(user, chat_id);
        }
        Ok(BusEnvelope {
            published_at_ms,
            body: BusBody::ChatEvent { skip, event, .. },
        }) => {
            if skip != Some(user) {
                let mut event = LastEvent {
                    payload,
                    event: EncodedEvent::published(event, published_at_ms),
                };
                deliver(hub, user, &mut event, batch);
            }
        }
        Err(e) => tracing::warn!(error = %e, user, "undecodable bus payload dropped"),
    }
}

/// A payload from a group chat's channel: an event for its local members, or a membership
/// notice applied before the chat's next event.
fn dispatch_chat(gateway: &Gateway, chat: u64, payload: &[u8], batch: &mut Batch) {
    let (hub, groups) = (&gateway.hub, &gateway.groups);
    match BusEnvelope::decode(payload) {
        Ok(BusEnvelope {
            published_at_ms,
            body: BusBody::ChatEvent { skip, event, .. },
        }) => {
            let seq = match &event {
                ServerEvent::NewMessage { message, .. } => Some(message.seq),
                _ => None,
            };
            let mut event = EncodedEvent::published(event, published_at_ms);
            let mut sockets = 0;
            groups.for_each_member(chat, |user, after_seq| {
                if skip == Some(user) || seq.is_some_and(|seq| seq <= after_seq) {
                    return;
                }
                sockets += hub.deliver(user, &mut event, &mut batch.wakes);
            });
            batch.delivered(sockets);
        }
        Ok(BusEnvelope {
            body: BusBody::MemberAdded {
                user_id, after_seq, ..
            },
            ..
        }) => {
            // In the chat's order: the chat's next events are the member's, with no gap.
            if !groups.add(chat, user_id, after_seq) {
                groups.activate(chat, user_id, after_seq);
            }
        }
        Ok(BusEnvelope {
            body: BusBody::MemberRemoved { user_id, .. },
            ..
        }) => {
            groups.remove(chat, user_id);
            hub.registry().reconcile();
        }
        Ok(_) => tracing::warn!(chat, "a user's notice on a chat channel dropped"),
        Err(e) => tracing::warn!(error = %e, chat, "undecodable bus payload dropped"),
    }
}

/// A member added while online, whose new group's channel is now live: holds the member's live
/// events back, routes the chat to them, and replays the chat's messages since the addition
/// through the resume seam (the writer drops held events the replay covered), so the messages
/// published before the channel was live are not missed and none arrives twice.
fn catch_up(gateway: &Arc<Gateway>, user: u64, chat: u64, after_seq: u64) {
    if !gateway.groups.is_pending(chat, user) {
        return;
    }
    let sockets = gateway.hub.pause_user(user);
    gateway.groups.activate(chat, user, after_seq);
    for socket in sockets {
        tokio::spawn(replay_chat(gateway.clone(), socket, chat, after_seq));
    }
}

async fn replay_chat(gateway: Arc<Gateway>, socket: ConnHandle, chat: u64, mut after_seq: u64) {
    loop {
        match gateway
            .api
            .messages_after(&socket.token, chat, after_seq)
            .await
        {
            Ok((messages, more)) => {
                for message in messages {
                    after_seq = after_seq.max(message.seq);
                    let event = ServerEvent::NewMessage {
                        cursor: Cursor::after_event(message.created_at.timestamp_millis())
                            .to_string(),
                        message,
                    };
                    let replayed = Control::Replayed(OutEvent::replayed(socket.format, &event));
                    if socket.outbox.send_control(replayed).await.is_err() {
                        return;
                    }
                }
                if !more {
                    break;
                }
            }
            Err(e) => {
                // The client recovers through sync, as after any gap it is told of.
                tracing::warn!(error = %e, chat, "catching a new member up failed");
                let resync = ServerEvent::Resync {
                    reason: "membership_changed".into(),
                };
                let frame =
                    Control::Frame(data_opcode(socket.format), socket.format.encode(&resync));
                let _ = socket.outbox.send_control(frame).await;
                break;
            }
        }
    }
    let _ = socket.outbox.send_control(Control::Activate).await;
}

fn deliver(hub: &Hub, user: u64, last: &mut LastEvent, batch: &mut Batch) {
    let sockets = hub.deliver(user, &mut last.event, &mut batch.wakes);
    batch.delivered(sockets);
}
