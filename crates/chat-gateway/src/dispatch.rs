//! Reads what the subscription connection receives and hands it to the hub: events to the
//! user's sockets (encoded once per wire format), logout notices to the sockets of that session.

use std::sync::Arc;

use chat_bus::BusMessage;
use chat_proto::{BusBody, BusEnvelope};
use tokio::sync::mpsc;

use crate::Gateway;
use crate::hub::{EncodedEvent, Hub, close_code};
use crate::metrics::GatewayMetrics;

pub async fn run(mut messages: mpsc::UnboundedReceiver<BusMessage>, gateway: Arc<Gateway>) {
    let (hub, metrics) = (&gateway.hub, &gateway.metrics);
    while let Some(message) = messages.recv().await {
        match message {
            BusMessage::Payload { user, payload } => match BusEnvelope::decode(&payload) {
                Ok(envelope) => dispatch(hub, metrics, user, envelope),
                Err(e) => tracing::warn!(error = %e, user, "undecodable bus payload dropped"),
            },
            BusMessage::Disconnected => {
                metrics.bus_up.set(0.0);
                tracing::warn!(
                    "redis subscription connection lost; it reconnects and resubscribes"
                );
            }
        }
    }
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
