//! Reads what the subscription connection receives and hands it to the hub: events to the
//! user's sockets (encoded once per wire format), logout notices to the sockets of that session.
//!
//! It also watches the subscription's health: a disconnect asks the registry to subscribe every
//! local user again, and when the registry reports the subscriptions live, every local socket
//! gets a `resync` event, because whatever was published in between never reached this node, and
//! the sessions held here are checked against the revocation list for logouts it missed.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use chat_bus::BusMessage;
use chat_proto::{BusBody, BusEnvelope, ServerEvent};
use tokio::sync::mpsc;

use crate::Gateway;
use crate::hub::{EncodedEvent, Hub, close_code};
use crate::metrics::GatewayMetrics;

pub async fn run(
    mut messages: mpsc::UnboundedReceiver<BusMessage>,
    mut restored: mpsc::UnboundedReceiver<()>,
    gateway: Arc<Gateway>,
) {
    let (hub, metrics) = (&gateway.hub, &gateway.metrics);
    let mut last = None;
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(BusMessage::Payload { user, payload }) => {
                    dispatch(hub, metrics, &mut last, user, payload)
                }
                Some(BusMessage::Disconnected) => {
                    gateway.subscriptions_up.store(false, Ordering::Release);
                    metrics.bus_up.set(0.0);
                    tracing::warn!("redis subscription connection lost; resubscribing");
                    hub.registry().resubscribe();
                }
                None => return,
            },
            Some(()) = restored.recv() => {
                gateway.subscriptions_up.store(true, Ordering::Release);
                broadcast_resync(hub, metrics);
                // Logouts published while the subscription was down never reached this node.
                tokio::spawn(close_revoked_sessions(gateway.clone()));
            }
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
    published_at_ms: i64,
    event: EncodedEvent,
}

fn dispatch(
    hub: &Hub,
    metrics: &GatewayMetrics,
    last: &mut Option<LastEvent>,
    user: u64,
    payload: Bytes,
) {
    if let Some(last) = last.as_mut().filter(|last| last.payload == payload) {
        deliver(hub, metrics, user, last);
        return;
    }
    match BusEnvelope::decode(&payload) {
        Ok(BusEnvelope {
            published_at_ms,
            body: BusBody::Event(event),
        }) => {
            let event = LastEvent {
                payload,
                published_at_ms,
                event: EncodedEvent::new(event),
            };
            deliver(hub, metrics, user, last.insert(event));
        }
        Ok(BusEnvelope {
            body: BusBody::SessionRevoked { jti },
            ..
        }) => hub.close_session(user, &jti, close_code::UNAUTHORIZED),
        Err(e) => tracing::warn!(error = %e, user, "undecodable bus payload dropped"),
    }
}

fn deliver(hub: &Hub, metrics: &GatewayMetrics, user: u64, last: &mut LastEvent) {
    hub.deliver(user, &mut last.event);
    let waited_ms = chrono::Utc::now().timestamp_millis() - last.published_at_ms;
    metrics
        .delivery_seconds
        .record(waited_ms.max(0) as f64 / 1000.0);
}
