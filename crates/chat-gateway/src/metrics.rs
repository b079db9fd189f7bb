//! Metric handles registered once at start, so hot paths don't look names up per event.

use metrics::{Counter, Gauge, Histogram};

#[derive(Clone)]
pub struct GatewayMetrics {
    pub connections: Gauge,
    pub connections_opened: Counter,
    pub users: Gauge,
    /// Group chat channels subscribed (chats with a member connected here).
    pub chats: Gauge,
    pub events_delivered: Counter,
    /// Messages read from the bus on users' channels and on group chats' channels: what crosses
    /// from Redis into this node (the capacity model's Redis deliveries).
    pub bus_user_messages: Counter,
    pub bus_chat_messages: Counter,
    pub outbound_overflow: Counter,
    pub auth_failures: Counter,
    pub delivery_seconds: Histogram,
    pub bus_up: Gauge,
    pub draining: Gauge,
    pub api_request_seconds: Histogram,
}

impl GatewayMetrics {
    pub fn register() -> Self {
        Self {
            connections: metrics::gauge!("chat_gateway_connections"),
            connections_opened: metrics::counter!("chat_gateway_connections_opened_total"),
            users: metrics::gauge!("chat_gateway_users"),
            chats: metrics::gauge!("chat_gateway_group_chats"),
            events_delivered: metrics::counter!("chat_gateway_events_delivered_total"),
            bus_user_messages: metrics::counter!("chat_gateway_bus_messages_total", "channel" => "user"),
            bus_chat_messages: metrics::counter!("chat_gateway_bus_messages_total", "channel" => "chat"),
            outbound_overflow: metrics::counter!("chat_gateway_outbound_overflow_total"),
            auth_failures: metrics::counter!("chat_gateway_auth_failures_total"),
            delivery_seconds: metrics::histogram!("chat_delivery_seconds"),
            bus_up: metrics::gauge!("chat_gateway_bus_up"),
            draining: metrics::gauge!("chat_gateway_draining"),
            api_request_seconds: metrics::histogram!("chat_gateway_api_request_seconds"),
        }
    }

    /// Counts a received client frame by type (not hot enough to cache per label).
    pub fn frame_received(&self, kind: &'static str) {
        metrics::counter!("chat_gateway_frames_received_total", "type" => kind).increment(1);
    }
}
