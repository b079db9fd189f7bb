//! Reads what the subscription connection receives and hands it to the hub: events to the
//! user's sockets (encoded once per wire format), logout notices to the sockets of that session.
//!
//! It also watches the subscription's health: a disconnect asks the registry to subscribe every
//! local user again, and when the registry reports the subscriptions live, every local socket
//! gets a `resync` event, because whatever was published in between never reached this node.

use std::sync::Arc;
use std::sync::atomic::Ordering;

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
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(BusMessage::Payload { user, payload }) => match BusEnvelope::decode(&payload) {
                    Ok(envelope) => dispatch(hub, metrics, user, envelope),
                    Err(e) => tracing::warn!(error = %e, user, "undecodable bus payload dropped"),
                },
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
            }
        }
    }
}

fn broadcast_resync(hub: &Hub, metrics: &GatewayMetrics) {
    metrics.bus_up.set(1.0);
    let event = ServerEvent::Resync {
        reason: "bus_reconnected".into(),
    };
    let sockets = hub.broadcast(&mut EncodedEvent::new(&event));
    tracing::info!(sockets, "told sockets to resync");
}

fn dispatch(hub: &Hub, metrics: &GatewayMetrics, user: u64, envelope: BusEnvelope) {
    match envelope.body {
        BusBody::Event(event) => {
            hub.deliver(user, &mut EncodedEvent::new(&event));
            let waited_ms = chrono::Utc::now().timestamp_millis() - envelope.published_at_ms;
            metrics
                .delivery_seconds
                .record(waited_ms.max(0) as f64 / 1000.0);
        }
        BusBody::SessionRevoked { jti } => hub.close_session(user, &jti, close_code::UNAUTHORIZED),
    }
}
