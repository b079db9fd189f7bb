//! A resume served from the bus's recent-event log instead of chat-api's `/v1/sync` (four join
//! queries on the database per resume; thousands at once when a gateway dies and its clients
//! come back here).
//!
//! The log holds, per channel, the envelopes of the events a sync returns, and answers only
//! when it holds every one of them since the cursor (`chat_bus`'s `recent` module). A user's
//! events are on the user's channel (private chats) and on the channels of the user's groups,
//! which this node learned when the user's first socket opened here (`groups`). What the log
//! gives is filtered as live routing would filter it (an event whose `skip` is the user is not
//! theirs; a group the user is no longer in is not replayed) and put in a sync's order.
//!
//! This node trusts the log only for cursors from its last resubscription on: the loss of its
//! subscription may be a Redis restart or failover that lost recent writes, logs included.
//! Anything else (no log, trimmed, a Redis error) makes the caller fall back to chat-api.

use std::sync::atomic::Ordering;

use chat_proto::ServerEvent;

use crate::Gateway;

/// The events of `user`'s chats from `from_ms` on, in sync order, if the log covers them all.
pub(super) async fn events_since(
    gateway: &Gateway,
    user: u64,
    from_ms: i64,
) -> Option<Vec<ServerEvent>> {
    let trusted = || from_ms >= gateway.log_trusted_from_ms.load(Ordering::Acquire);
    if !trusted() {
        return None;
    }
    let chats = gateway.groups.chats_of(user)?;
    let events = gateway
        .bus
        .replay_recent_events(user, &chats, from_ms, |chat| {
            gateway.groups.routes(chat, user)
        })
        .await?;
    // The subscription may have been lost while the log was read.
    trusted().then_some(events)
}
